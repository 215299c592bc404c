# Copyright (c) mmpsearch contributors. All rights reserved.
from .dgrpn import DGRPN
from .msfrn import MSFRN
from .sd_feature_pyramid import SDFeaturePyramid

__all__ = ['DGRPN', 'MSFRN', 'SDFeaturePyramid']
