# Copyright (c) mmpsearch contributors. All rights reserved.
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmpsearch.registry import MODELS


@MODELS.register_module()
class ReIDL2Loss(nn.Module):
    """Distance between predicted and teacher ReID embeddings.

    The ReID term of PSDiff's loss (eq. 14):
    ``sum_i || e_0^i - ê_0^sigma(i) ||_2`` over the matched pairs, e_0 being
    the teacher's embedding. Both sides are L2-normalised first, because the
    embeddings are compared by cosine similarity at test time and e_0 is
    normalised in the diffusion (eq. 10); the distance is then
    ``sqrt(2 - 2 cos)``, in [0, 2].

    Args:
        normalize (bool): L2-normalise both sides. Defaults to True.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.
        loss_weight (float): lambda_reid. Defaults to 5.0.
    """

    def __init__(self,
                 normalize: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 5.0) -> None:
        super().__init__()
        self.normalize = normalize
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None) -> Tensor:
        """
        Args:
            pred (Tensor): (n, D) predicted embeddings ê_0.
            target (Tensor): (n, D) teacher embeddings e_0.
            weight (Tensor, optional): (n,) per-pair weights.
            avg_factor (float, optional): Divisor of the sum.
        """
        if pred.shape != target.shape:
            raise ValueError(f'ReIDL2Loss: pred {tuple(pred.shape)} and '
                             f'target {tuple(target.shape)} differ in shape')
        if pred.numel() == 0:
            # Keep the graph connected (DDP) with a zero.
            return pred.sum() * 0.0
        if self.normalize:
            pred = F.normalize(pred, dim=-1)
            target = F.normalize(target, dim=-1)
        # sqrt with a floor: the gradient of ||x|| at 0 is undefined.
        dist = ((pred - target).pow(2).sum(-1) + 1e-12).sqrt()
        loss = weight_reduce_loss(dist, weight, self.reduction, avg_factor)
        return self.loss_weight * loss
