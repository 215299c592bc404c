# Copyright (c) mmpsearch contributors. All rights reserved.
from .dgrpn import DGRPN
from .sd_feature_pyramid import SDFeaturePyramid

__all__ = ['DGRPN', 'SDFeaturePyramid']
