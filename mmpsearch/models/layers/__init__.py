# Copyright (c) mmpsearch contributors. All rights reserved.
from .crop_reid_embedder import CropReIDEmbedder
from .reid_dynamic_conv import ReIDDynamicConv
from .roi_query_attention import RoIQueryAttention
from .unet_feature_tap import (PersonCrossAttnProcessor, UNetFeatureTap,
                               expand_layer_name)

__all__ = [
    'CropReIDEmbedder', 'ReIDDynamicConv', 'RoIQueryAttention',
    'PersonCrossAttnProcessor', 'UNetFeatureTap', 'expand_layer_name'
]
