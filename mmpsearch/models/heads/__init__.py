# Copyright (c) mmpsearch contributors. All rights reserved.
from .cdl_head import (CDLHead, GatherRoIExtractor, ReIDDynamicConv,
                       RoIQueryAttention)
from .msfrn import MSFRN
from .sfan import SFAN

__all__ = [
    'CDLHead', 'GatherRoIExtractor', 'ReIDDynamicConv', 'RoIQueryAttention',
    'MSFRN', 'SFAN'
]
