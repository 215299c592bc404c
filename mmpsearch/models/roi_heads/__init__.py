# Copyright (c) mmpsearch contributors. All rights reserved.
from .bn_reg_bbox_head import BNRegBBoxHead
from .diffps_roi_head import DiffPSRoIHead
from .reid_roi_head import ReIDRoIHead

__all__ = ['BNRegBBoxHead', 'DiffPSRoIHead', 'ReIDRoIHead']
