# Copyright (c) mmpsearch contributors. All rights reserved.
"""Sparse R-CNN's dynamic convolution with a rank-limited kernel map."""
from typing import Optional, Union

import torch
import torch.nn as nn
from mmdet.models.layers import DynamicConv
from torch import Tensor


def proposal_chunk_size(device: Union[str, torch.device], num_proposals: int,
                        cpu_chunk_size: int) -> int:
    """Proposals per chunk of :class:`ReIDDynamicConv` on ``device``.

    Chunking keeps each chunk's generated kernels (2 C d floats per
    proposal, 128 KiB for C = 256, d = 64) in a CPU core's cache; on an
    accelerator (CUDA or any other non-CPU device) the kernels live in
    device memory anyway and every chunk is a further round of small kernel
    launches, so all proposals go in one chunk there.

    Args:
        device (str | torch.device): Where the features are.
        num_proposals (int): Proposals in the batch.
        cpu_chunk_size (int): Proposals per chunk on the CPU.

    Returns:
        int: ``cpu_chunk_size`` on the CPU, else ``num_proposals`` (at
        least 1).
    """
    if torch.device(device).type == 'cpu':
        return cpu_chunk_size
    return max(int(num_proposals), 1)


class ReIDDynamicConv(DynamicConv):
    """mmdet's Sparse R-CNN ``DynamicConv`` whose kernels may come from a
    rank-limited linear map, run in chunks of proposals.

    The two 1x1 dynamic kernels (C x d and d x C, d = ``feat_channels``)
    are generated per proposal from a parameter feature (here the ReID
    feature F_r). mmdet generates them with one ``Linear(C, 2 C d)``
    (8.4 M weights for C = 256, d = 64); with ``param_rank`` r the map is
    ``Linear(C, r)`` then ``Linear(r, 2 C d)`` (still one linear map of F_r,
    of rank <= r), which keeps PSDiff's single reused layer light
    (2.1 M weights for r = 64). The computation is mmdet's forward, applied
    on the CPU to ``chunk_size`` proposals at a time so that the generated
    kernels (2 C d floats per proposal) are consumed while still in cache;
    every proposal is independent, so the result is the same. On other
    devices (CUDA) all proposals go in one chunk
    (:func:`proposal_chunk_size`).

    Args:
        param_rank (int, optional): r; None for mmdet's full-rank map.
        chunk_size (int): Proposals per chunk on the CPU. Defaults to 64.
        **kwargs: ``DynamicConv``'s arguments.
    """

    def __init__(self,
                 param_rank: Optional[int] = None,
                 chunk_size: int = 64,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.chunk_size = int(chunk_size)
        if param_rank is not None:
            self.dynamic_layer = nn.Sequential(
                nn.Linear(self.in_channels, param_rank, bias=False),
                nn.Linear(param_rank,
                          self.num_params_in + self.num_params_out))

    def forward(self, param_feature: Tensor, input_feature: Tensor) -> Tensor:
        n = len(param_feature)
        k = proposal_chunk_size(param_feature.device, n, self.chunk_size)
        if n <= k:
            return super().forward(param_feature, input_feature)
        return torch.cat([
            super(ReIDDynamicConv, self).forward(param_feature[i:i + k],
                                                 input_feature[i:i + k])
            for i in range(0, n, k)
        ])
