# Copyright (c) mmpsearch contributors. All rights reserved.
"""SFAN: Semantic Feature Aggregation Network (DiffPS ReID branch).

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.6.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS


class MultiGranularityEmbedding(nn.Module):
    """Strip embedding at several granularities.

    For every granularity g the map is cut into g horizontal strips; each
    strip is max- plus average-pooled, the g strip vectors are concatenated
    and projected to ``embed_dim`` (Linear + BN); the granularities'
    embeddings are summed. (Summing rather than concatenating keeps
    ``embed_dim`` free of the number of granularities.)
    """

    def __init__(self, in_channels: int, embed_dim: int,
                 granularities: Sequence[int]) -> None:
        super().__init__()
        self.granularities = tuple(granularities)
        self.proj = nn.ModuleList(
            nn.Linear(in_channels * g, embed_dim, bias=False)
            for g in self.granularities)
        self.bn = nn.ModuleList(
            nn.BatchNorm1d(embed_dim) for _ in self.granularities)
        for p in self.proj:
            nn.init.normal_(p.weight, std=0.01)

    def _bn(self, bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            # a single RoI has no batch statistics: use the running ones
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                bn.bias, False, 0.0, bn.eps)
        return bn(x)

    def forward(self, x: Tensor) -> Tensor:
        out = 0
        for g, proj, bn in zip(self.granularities, self.proj, self.bn):
            strips = F.adaptive_max_pool2d(x, (g, 1)) + \
                F.adaptive_avg_pool2d(x, (g, 1))
            out = out + self._bn(bn, proj(strips.flatten(1)))
        return out


@MODELS.register_module()
class SFAN(BaseModule):
    """Semantic Feature Aggregation Network of DiffPS (Kim et al., ICCV 2025,
    Sec. 3.6) followed by the ReID head.

    On each RoI feature F (N, C, 24, 12) of the MSFRN output:

    - the token-1 text embeddings of the body-part words ("head", "shirts",
      "pants", "shoes") from SD's text encoder are compared with every pixel
      by cosine similarity; a softmax over the parts gives part maps S_c;
    - ``F_sem_branch = sum_c w_c (S_c * F)`` with part weights
      ``w = softmax(part_logits)`` (learnable, uniform at init);
    - ``F_sem = F + alpha * (F_sem_branch - F)``, alpha learnable, init 0;
    - then a ResNet-50 stage 4 (mmdet ``ResLayer``) and a multi-granularity
      strip embedding, L2-normalised.

    When the visual width C differs from the text width (SD 1.5: 768 vs a
    1024-wide visual map) a learnable linear projection maps the text
    embeddings to C; with equal widths (SD 2.1) there is none.

    Args:
        in_channels (int): C of the RoI features. Defaults to 1024.
        text_channels (int): Width of the text embeddings (SD 2.1: 1024).
        num_parts (int): Number of part words. Defaults to 4.
        res_layer (dict): The stage-4 block (built by MODELS; mmdet's
            ``ResLayer`` when no type is given).
        embed_dim (int): Embedding size. Defaults to 256.
        granularities (Sequence[int]): Strip counts. Defaults to (1, 2, 3).
    """

    def __init__(self,
                 in_channels: int = 1024,
                 text_channels: int = 1024,
                 num_parts: int = 4,
                 res_layer: dict = dict(
                     type=ResLayer,
                     depth=50,
                     stage=3,
                     stride=2,
                     norm_eval=False),
                 embed_dim: int = 256,
                 granularities: Sequence[int] = (1, 2, 3),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.text_channels = text_channels
        self.num_parts = num_parts
        self.embed_dim = embed_dim
        self.text_proj = nn.Linear(text_channels, in_channels) \
            if text_channels != in_channels else nn.Identity()
        self.part_logits = nn.Parameter(torch.zeros(num_parts))
        self.alpha = nn.Parameter(torch.zeros(()))
        res_layer = dict(res_layer)
        res_layer.setdefault('type', ResLayer)
        self.res_layer = MODELS.build(res_layer)
        convs = [
            m for m in self.res_layer.modules() if isinstance(m, nn.Conv2d)
        ]
        if not convs:
            raise ValueError(f'SFAN: res_layer {res_layer} has no conv layer')
        if convs[0].in_channels != in_channels:
            raise ValueError(
                f'SFAN: res_layer {res_layer} takes {convs[0].in_channels} '
                f'channels but in_channels={in_channels}')
        # the last conv of a ResNet stage gives its output width
        self.embedding = MultiGranularityEmbedding(convs[-1].out_channels,
                                                   embed_dim, granularities)

    def aggregate(self, feats: Tensor, part_embeds: Tensor) -> Tensor:
        """F_sem of the semantic aggregation, same shape as ``feats``."""
        if part_embeds.shape != (self.num_parts, self.text_channels):
            raise ValueError(
                f'SFAN expects part embeddings of shape ({self.num_parts}, '
                f'{self.text_channels}), got {tuple(part_embeds.shape)}')
        if feats.shape[1] != self.in_channels:
            raise ValueError(f'SFAN expects {self.in_channels}-channel RoI '
                             f'features, got {feats.shape[1]}')
        text = F.normalize(self.text_proj(part_embeds.to(feats.dtype)), dim=1)
        sim = torch.einsum('nchw,pc->nphw', F.normalize(feats, dim=1), text)
        part_maps = sim.softmax(dim=1)  # (N, P, H, W)
        w = self.part_logits.softmax(dim=0)
        # sum_c w_c (S_c * F) = F * sum_c w_c S_c
        branch = feats * torch.einsum('nphw,p->nhw', part_maps, w)[:, None]
        return feats + self.alpha * (branch - feats)

    def forward(self, feats: Tensor, part_embeds: Tensor) -> Tensor:
        """RoI features (N, C, h, w) -> L2-normalised embeddings (N, D)."""
        x = self.res_layer(self.aggregate(feats, part_embeds))
        return F.normalize(self.embedding(x), dim=1)
