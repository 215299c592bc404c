# Copyright (c) mmpsearch contributors. All rights reserved.
"""SFAN: Semantic Feature Aggregation Network (DiffPS ReID branch).

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.6.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS


def num_split(total: int, parts: int) -> List[int]:
    """``total`` cut into ``parts`` near-equal integers, larger ones first
    (the widths of the strip embeddings, as the official DiffPS / SEAS code
    splits them)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def _batch_norm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``bn(x)``, except that a single training sample, which has no batch
    statistics, is normalised with the running ones."""
    if bn.training and x.shape[0] < 2:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                            bn.bias, False, 0.0, bn.eps)
    return bn(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel
    attention (a shared MLP on the average- and max-pooled vectors, summed,
    sigmoid) then spatial attention (a ``kernel_size`` conv on the channel
    mean and max maps, sigmoid). DiffPS puts one on every strip of its
    embedding head. Written here: mmcv, mmdet and mmpretrain have none.
    """

    def __init__(self,
                 channels: int,
                 reduction: int = 16,
                 kernel_size: int = 7,
                 bias: bool = True) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias))
        self.spatial_conv = nn.Conv2d(
            2, 1, kernel_size, padding=kernel_size // 2, bias=bias)
        # the official initialisation (SEAS / DiffPS ``reset_parameters``)
        nn.init.kaiming_uniform_(
            self.channel_mlp[0].weight, mode='fan_out', nonlinearity='relu')
        nn.init.kaiming_uniform_(
            self.channel_mlp[2].weight, mode='fan_in', nonlinearity='relu')
        nn.init.xavier_uniform_(self.spatial_conv.weight)
        for m in (self.channel_mlp[0], self.channel_mlp[2], self.spatial_conv):
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.channel_mlp(x.mean(dim=(2, 3))) + \
            self.channel_mlp(x.amax(dim=(2, 3)))
        x = x * gate.sigmoid()[..., None, None]
        maps = torch.cat(
            [x.mean(dim=1, keepdim=True),
             x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.spatial_conv(maps).sigmoid()


class StripProjector(nn.Module):
    """One strip of the embedding: CBAM (optional), global max pool,
    Linear (no bias), BN1d, DropPath."""

    def __init__(self, in_channels: int, out_dim: int, drop_path: float,
                 attention: bool) -> None:
        super().__init__()
        self.attention = CBAM(in_channels) if attention else nn.Identity()
        self.linear = nn.Linear(in_channels, out_dim, bias=False)
        nn.init.xavier_uniform_(self.linear.weight)
        self.norm = nn.BatchNorm1d(out_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else \
            nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.attention(x).amax(dim=(2, 3))
        return self.drop_path(_batch_norm(self.norm, self.linear(x)))


class MultiGranularityEmbedding(nn.Module):
    """Multi-granularity strip embedding of one feature map, as in the
    official DiffPS code (taken from SEAS): ``embed_dim`` is split over the
    granularities, for granularity g the map is cut into g horizontal strips
    and each strip gets its own :class:`StripProjector` with a share of that
    granularity's width; all strip vectors are concatenated.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dim: int,
                 granularities: Sequence[int] = (1, 2, 3),
                 drop_path: float = 0.1,
                 strip_attention: bool = True) -> None:
        super().__init__()
        self.granularities = tuple(int(g) for g in granularities)
        if not self.granularities or min(self.granularities) < 1:
            raise ValueError('MultiGranularityEmbedding: granularities must '
                             f'be positive strip counts, got {granularities}')
        if embed_dim < sum(self.granularities):
            raise ValueError(
                f'MultiGranularityEmbedding: embed_dim={embed_dim} is smaller'
                f' than the {sum(self.granularities)} strips of granularities'
                f' {self.granularities}')
        self.branches = nn.ModuleList()
        for g, dim in zip(self.granularities,
                          num_split(embed_dim, len(self.granularities))):
            self.branches.append(
                nn.ModuleList(
                    StripProjector(in_channels, d, drop_path, strip_attention)
                    for d in num_split(dim, g)))

    def forward(self, x: Tensor) -> Tensor:
        out = []
        for g, strips in zip(self.granularities, self.branches):
            if x.shape[2] < g:
                raise ValueError(f'MultiGranularityEmbedding: a map of height '
                                 f'{x.shape[2]} cannot be cut into {g} strips')
            # tensor_split gives the first strips the extra rows, as
            # num_split does
            for proj, strip in zip(strips, torch.tensor_split(x, g, dim=2)):
                out.append(proj(strip))
        return torch.cat(out, dim=1)


@MODELS.register_module()
class SFAN(BaseModule):
    """Semantic Feature Aggregation Network of DiffPS (Kim et al., ICCV 2025,
    Sec. 3.6) followed by the ReID embedding head.

    On each RoI feature F (N, C, 24, 12) of the MSFRN output:

    - the token-1 text embeddings of the body-part words ("head", "shirts",
      "pants", "shoes") from SD's text encoder are compared with every pixel
      by cosine similarity; a softmax over the parts gives part maps S_c;
    - ``F_sem_branch = sum_c w_c (S_c * F)`` with part weights
      ``w = softmax(part_logits)`` (learnable, uniform at init);
    - ``F_sem = F + alpha * (F_sem_branch - F)``, alpha learnable, init 0;
    - then a ResNet-50 stage 4 (mmdet ``ResLayer``);
    - the embedding head of the official code (``models/embedder.py``, from
      SEAS): ``F_sem`` (``'sfan'``, 1024 ch, 24x12) and the stage-4 output
      (``'stage4'``, 2048 ch, 12x6) each feed a
      :class:`MultiGranularityEmbedding` (1, 2, 3 strips; per strip CBAM,
      global max pool, Linear, BN1d, DropPath) of ``embed_dim / 2`` each;
      the two are concatenated and L2-normalised (1024-d by default).

    When the visual width C differs from the text width (SD 1.5: 768 vs a
    1024-wide visual map) a learnable linear projection maps the text
    embeddings to C; with equal widths (SD 2.1) there is none.

    Args:
        in_channels (int): C of the RoI features. Defaults to 1024.
        text_channels (int): Width of the text embeddings (SD 2.1: 1024).
        num_parts (int): Number of part words. Defaults to 4.
        res_layer (dict): The stage-4 block (built by MODELS; mmdet's
            ``ResLayer`` when no type is given).
        embed_dim (int): Width of the final embedding, split evenly over
            ``embed_from``. Defaults to 1024 (official).
        granularities (Sequence[int]): Strip counts. Defaults to (1, 2, 3).
        embed_from (Sequence[str]): The maps that feed an embedding, of
            ``'sfan'`` (the SFAN output, the input of stage 4) and
            ``'stage4'`` (its output). Defaults to both (official).
        drop_path (float): DropPath rate of every strip vector (training
            only). Defaults to 0.1 (official); 0 switches it off.
        strip_attention (bool): A CBAM on every strip. Defaults to True
            (official).
    """

    EMBED_SOURCES = ('sfan', 'stage4')

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
                 embed_dim: int = 1024,
                 granularities: Sequence[int] = (1, 2, 3),
                 embed_from: Sequence[str] = ('sfan', 'stage4'),
                 drop_path: float = 0.1,
                 strip_attention: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.text_channels = text_channels
        self.num_parts = num_parts
        self.embed_dim = embed_dim
        self.embed_from = tuple(embed_from)
        bad = [n for n in self.embed_from if n not in self.EMBED_SOURCES]
        if bad or not self.embed_from or \
                len(set(self.embed_from)) != len(self.embed_from):
            raise ValueError(f'SFAN: embed_from must name distinct maps of '
                             f'{self.EMBED_SOURCES}, got {tuple(embed_from)}')
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
        widths = dict(sfan=in_channels, stage4=convs[-1].out_channels)
        self.embeddings = nn.ModuleDict({
            name:
            MultiGranularityEmbedding(widths[name], dim, granularities,
                                      drop_path, strip_attention)
            for name, dim in zip(self.embed_from,
                                 num_split(embed_dim, len(self.embed_from)))
        })

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
        maps = dict(sfan=self.aggregate(feats, part_embeds))
        if 'stage4' in self.embed_from:
            maps['stage4'] = self.res_layer(maps['sfan'])
        emb = torch.cat(
            [self.embeddings[name](maps[name]) for name in self.embed_from],
            dim=1)
        return F.normalize(emb, dim=1)
