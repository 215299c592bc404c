# Copyright (c) mmpsearch contributors. All rights reserved.
from .cdl_head import CDLHead
from .psdiff_head import PSDiffHead
from .psdiff_settings import PSDiffTestSettings, PSDiffTrainSettings
from .sfan import SFAN

__all__ = [
    'CDLHead', 'PSDiffHead', 'PSDiffTestSettings', 'PSDiffTrainSettings',
    'SFAN'
]
