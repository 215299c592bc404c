# Copyright (c) mmpsearch contributors. All rights reserved.
from .crop_reid_embedder import CropReIDEmbedder
from .pointwise_depthwise import PointwiseDepthwise
from .reid_dynamic_conv import ReIDDynamicConv
from .roi_query_attention import RoIQueryAttention
from .unet_feature_tap import (PersonCrossAttnProcessor, UNetFeatureTap,
                               expand_layer_name)

__all__ = [
    'CropReIDEmbedder', 'PointwiseDepthwise', 'ReIDDynamicConv',
    'RoIQueryAttention', 'PersonCrossAttnProcessor', 'UNetFeatureTap',
    'expand_layer_name'
]
