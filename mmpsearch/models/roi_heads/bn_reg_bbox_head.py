# Copyright (c) mmpsearch contributors. All rights reserved.
"""The box predictor of DiffPS (Kim et al., ICCV 2025): mmdet's ``BBoxHead``
whose regressor ends in a BatchNorm1d."""
from typing import Tuple

import torch.nn.functional as F
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from torch import Tensor, nn

from mmpsearch.registry import MODELS


@MODELS.register_module()
class BNRegBBoxHead(BBoxHead):
    """``BBoxHead`` with a batch-normalised box regressor: ``Linear(C, 4,
    bias=False)`` then ``BatchNorm1d(4)``, as the box predictor of the
    official DiffPS code (taken from SEAS, Jiang et al. 2023) builds it.

    The BN keeps the regression deltas at unit scale whatever the feature
    scale; the Linear has no bias because the BN's shift replaces it.
    Everything else (classifier, losses, decoding) is mmdet's ``BBoxHead``;
    ``reg_predictor_cfg`` gets ``bias=False`` unless it says otherwise.
    """

    def __init__(self,
                 *args,
                 reg_predictor_cfg: dict = dict(type='Linear'),
                 **kwargs) -> None:
        reg_predictor_cfg = dict(reg_predictor_cfg)
        reg_predictor_cfg.setdefault('bias', False)
        super().__init__(*args, reg_predictor_cfg=reg_predictor_cfg, **kwargs)
        if not self.with_reg:
            raise ValueError('BNRegBBoxHead needs with_reg=True')
        self.reg_norm = nn.BatchNorm1d(self.fc_reg.out_features)

    def forward(self, x: Tuple[Tensor]) -> tuple:
        cls_score, bbox_pred = super().forward(x)
        bn = self.reg_norm
        if bn.training and bbox_pred.shape[0] < 2:
            # one RoI has no batch statistics: use the running ones
            bbox_pred = F.batch_norm(bbox_pred, bn.running_mean,
                                     bn.running_var, bn.weight, bn.bias, False,
                                     0.0, bn.eps)
        else:
            bbox_pred = bn(bbox_pred)
        return cls_score, bbox_pred
