# Copyright (c) mmpsearch contributors. All rights reserved.
from .dgrpn import DGRPN

__all__ = ['DGRPN']
