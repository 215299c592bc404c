# Copyright (c) mmpsearch contributors. All rights reserved.
"""mmdet's ``SingleRoIExtractor`` with fp32 RoIs under AMP."""
from typing import Optional, Sequence

import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from torch import Tensor

from mmpsearch.registry import MODELS


@MODELS.register_module()
class FP32SingleRoIExtractor(SingleRoIExtractor):
    """mmdet's ``SingleRoIExtractor`` with the RoIs, ``map_roi_levels`` and
    RoIAlign in fp32 when the features are fp16 / bf16 (``--amp``).

    Why: mmdet casts the RoIs to the features' dtype
    (``rois.type_as(feats[0])``) before ``map_roi_levels``, and an fp16 box
    area overflows from scale 256 px on (P5 instead of P4 under AMP).
    mmcv's RoIAlign needs RoIs and features of one dtype, so the levels are
    pooled in fp32, as torchvision's ``roi_align`` does under autocast; the
    output has the features' dtype. With fp32 features it is mmdet's.

    Args: As mmdet's ``SingleRoIExtractor``.
    """

    def forward(self,
                feats: Sequence[Tensor],
                rois: Tensor,
                roi_scale_factor: Optional[float] = None) -> Tensor:
        """Same interface and output (n, C, S_h, S_w) as mmdet's."""
        dtype = feats[0].dtype
        if dtype in (torch.float16, torch.bfloat16):
            feats = tuple(f.float() for f in feats)
        out = super().forward(feats, rois.to(feats[0].dtype), roi_scale_factor)
        return out.to(dtype)
