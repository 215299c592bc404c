# Copyright (c) mmpsearch contributors. All rights reserved.
from .cdl_head import CDLHead
from .psdiff_head import PSDiffHead
from .sfan import SFAN

__all__ = ['CDLHead', 'PSDiffHead', 'SFAN']
