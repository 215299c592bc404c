# Copyright (c) mmpsearch contributors. All rights reserved.
from .reid_dynamic_conv import ReIDDynamicConv
from .roi_query_attention import RoIQueryAttention

__all__ = ['ReIDDynamicConv', 'RoIQueryAttention']
