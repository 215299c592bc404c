# Copyright (c) mmpsearch contributors. All rights reserved.
"""MSFRN: Multi-Scale Frequency Refinement Network (DiffPS ReID branch).

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.5.
"""
from typing import List, Optional, Sequence, Tuple

import pywt
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from ..layers.pointwise_depthwise import PointwiseDepthwise


def _haar_kernels() -> Tensor:
    """The four 2x2 analysis kernels (LL, LH, HL, HH) of the one-level 2-D
    Haar transform, from pywavelets' filter bank.

    ``conv2d`` correlates, so the kernels are the time-reversed decomposition
    filters (for Haar: ``rec_lo`` / ``rec_hi``); they form an orthonormal
    basis of each 2x2 block, hence the transposed convolution with the same
    kernels inverts the transform exactly.
    """
    wavelet = pywt.Wavelet('haar')
    lo = torch.tensor(wavelet.dec_lo[::-1], dtype=torch.float64)
    hi = torch.tensor(wavelet.dec_hi[::-1], dtype=torch.float64)
    # rows filtered by the first factor, columns by the second
    kernels = [
        torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))
    ]
    return torch.stack(kernels).float()  # (4, 2, 2)


class HaarDWT(nn.Module):
    """One-level 2-D Haar DWT as a fixed stride-2 grouped ``conv2d``
    (differentiable, any device). Odd sizes are zero-padded to even.

    Returns ``(LL, LH, HL, HH)``, each (B, C, ceil(H/2), ceil(W/2)); LL,
    (LH, HL, HH) equal pywavelets' ``dwt2(x, 'haar')`` = (cA, (cH, cV, cD)).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            'kernels', _haar_kernels()[:, None], persistent=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        b, c, h, w = x.shape
        x = F.pad(x, (0, w % 2, 0, h % 2))
        weight = self.kernels.to(x.dtype).repeat(c, 1, 1, 1)  # (4C, 1, 2, 2)
        y = F.conv2d(x, weight, stride=2, groups=c)
        y = y.view(b, c, 4, *y.shape[-2:])
        return y[:, :, 0], y[:, :, 1], y[:, :, 2], y[:, :, 3]


class HaarIDWT(nn.Module):
    """Inverse of :class:`HaarDWT` as a fixed stride-2 grouped
    ``conv_transpose2d``; ``size`` crops the zero padding of odd inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            'kernels', _haar_kernels()[:, None], persistent=False)

    def forward(self,
                ll: Tensor,
                lh: Tensor,
                hl: Tensor,
                hh: Tensor,
                size: Optional[Tuple[int, int]] = None) -> Tensor:
        b, c, h, w = ll.shape
        y = torch.stack((ll, lh, hl, hh), dim=2).reshape(b, 4 * c, h, w)
        weight = self.kernels.to(ll.dtype).repeat(c, 1, 1, 1)
        x = F.conv_transpose2d(y, weight, stride=2, groups=c)
        if size is not None:
            x = x[..., :size[0], :size[1]]
        return x


class ChannelGate(nn.Module):
    """Channel-wise attention of the sub-band refinement block (DiffPS
    Sec. 3.5): ``x * sigmoid(f(GAP(x)))``.

    Args:
        channels (int): Input (and output) channels.
        reduction (int, optional): ``None`` (the official SRB
            ``attention``): ``f`` is one 1x1 conv C -> C with bias. An int
            r: squeeze-and-excitation, ``f`` = 1x1 conv C -> max(C // r, 4),
            ReLU, 1x1 conv -> C (both with bias). Defaults to None.
    """

    def __init__(self, channels: int, reduction: Optional[int] = None) -> None:
        super().__init__()
        if reduction is None:
            layers = [nn.Conv2d(channels, channels, 1)]
        else:
            if not isinstance(reduction, int) or reduction < 1:
                raise ValueError('ChannelGate: reduction must be None or a '
                                 f'positive int, got {reduction!r}')
            hidden = max(channels // reduction, 4)
            layers = [
                nn.Conv2d(channels, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, channels, 1)
            ]
        # plain nn.Conv2d, not ConvModule: keeps PyTorch's default init as
        # in the official code (ConvModule re-inits with kaiming)
        self.fc = nn.Sequential(*layers, nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class FrequencyRefinementModule(nn.Module):
    """FRM (DiffPS Sec. 3.5, Eq. 5): one-level Haar DWT; LL passes
    unchanged; each of LH, HL, HH goes through its own sub-band refinement
    block (depthwise 3x3 + pointwise 1x1, BN, ReLU, channel-wise attention)
    times a learnable scalar gamma (init 1); inverse DWT; plus the input.

    Args:
        channels (int): Input (and output) channels.
        norm_cfg (dict): Norm after the pointwise conv. Defaults to BN.
        channel_gate (str): ``'conv'`` (official): the attention is one
            1x1 conv on the pooled vector; ``'se'``: a squeeze-and-excitation
            bottleneck (this repository's earlier variant).
            Defaults to ``'conv'``.
        gate_reduction (int): Reduction of the ``'se'`` gate; unused for
            ``'conv'``. Defaults to 16.
    """

    channel_gates = ('conv', 'se')

    def __init__(self,
                 channels: int,
                 norm_cfg: dict = dict(type='BN'),
                 channel_gate: str = 'conv',
                 gate_reduction: int = 16) -> None:
        super().__init__()
        if channel_gate not in self.channel_gates:
            raise ValueError('FrequencyRefinementModule: channel_gate must be '
                             f'one of {self.channel_gates}, got '
                             f'{channel_gate!r}')
        if channel_gate == 'se' and (not isinstance(gate_reduction, int)
                                     or gate_reduction < 1):
            raise ValueError('FrequencyRefinementModule: gate_reduction must '
                             f'be a positive int, got {gate_reduction!r}')
        reduction = None if channel_gate == 'conv' else gate_reduction
        self.dwt = HaarDWT()
        self.idwt = HaarIDWT()
        self.refine = nn.ModuleList()
        for _ in range(3):
            self.refine.append(
                nn.Sequential(
                    nn.Conv2d(
                        channels,
                        channels,
                        3,
                        padding=1,
                        groups=channels,
                        bias=False),
                    ConvModule(channels, channels, 1, norm_cfg=norm_cfg),
                    ChannelGate(channels, reduction)))
        self.scales = nn.Parameter(torch.ones(3))

    def forward(self, x: Tensor) -> Tensor:
        ll, *highs = self.dwt(x)
        highs = [
            s * block(band)
            for s, block, band in zip(self.scales, self.refine, highs)
        ]
        return self.idwt(ll, *highs, size=x.shape[-2:]) + x


class LightBlock(PointwiseDepthwise):
    """1x1 conv -> C, BN, ReLU, depthwise 3x3, BN, ReLU, 1x1, BN."""

    def __init__(self, in_channels: int, channels: int,
                 norm_cfg: dict) -> None:
        super().__init__(in_channels, channels, norm_cfg)
        self.append(
            ConvModule(channels, channels, 1, norm_cfg=norm_cfg, act_cfg=None))


@MODELS.register_module()
class MSFRN(BaseModule):
    """Multi-Scale Frequency Refinement Network of DiffPS (Kim et al., ICCV
    2025, Sec. 3.5, Fig. 3).

    Per level one light block shared by that level's maps; the maps of a
    level are concatenated and fused by a 1x1 conv (in the official code only
    the levels with several maps have one). From the coarsest level on, the
    running map is upsampled (bilinear) to the next level and added to it;
    after the first merge a LayerNorm over channels, after every merge a
    :class:`FrequencyRefinementModule` (two scales for SD's three levels:
    "hierarchical"), and at the end a 1x1 conv.

    The defaults follow the official implementation (``Frq_AggregationNetwork``
    of github.com/PerceptualAI-Lab/DiffPS); ``channel_gate='se',
    fuse_single_map=True, fuse_bias=True, out_bias=True`` is this
    repository's earlier variant.

    Args:
        in_channels (Sequence[Sequence[int]]): Channels of each map, grouped
            by level from coarse to fine (SD 2.1 default: 1280 | 640, 640 |
            320 x 4). The maps of one level must have the same channels.
        channels (int): Width of the light blocks and FRMs. Default 1024.
        out_channels (int): Output channels. Defaults to 1024.
        norm_cfg (dict): Normalisation layers. Defaults to BN.
        channel_gate (str): Channel-wise attention of the FRMs' sub-band
            refinement blocks, see :class:`FrequencyRefinementModule`.
            Defaults to ``'conv'`` (official).
        fuse_single_map (bool): Whether a level with a single map also gets
            the 1x1 fuse conv (a C -> C conv right after the light block's
            last 1x1 conv + BN). Defaults to False (official).
        fuse_bias (bool): Bias of the 1x1 fuse convs. Defaults to False
            (official).
        out_bias (bool): Bias of the output 1x1 conv. Defaults to False
            (official).
        init_cfg (dict, optional): Initialisation config. Defaults to None.

    ``forward(feats)`` takes a list per level of lists of maps and returns
    one contiguous map (B, out_channels, H_fine, W_fine) at the finest level
    (1/8).
    """

    def __init__(self,
                 in_channels: Sequence[Sequence[int]] = ((1280, ), (640, 640),
                                                         (320, 320, 320, 320)),
                 channels: int = 1024,
                 out_channels: int = 1024,
                 norm_cfg: dict = dict(type='BN'),
                 channel_gate: str = 'conv',
                 fuse_single_map: bool = False,
                 fuse_bias: bool = False,
                 out_bias: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = [list(level) for level in in_channels]
        if len(self.in_channels) < 2:
            raise ValueError('MSFRN needs at least two levels, got '
                             f'in_channels={in_channels}')
        for level in self.in_channels:
            if len(level) == 0 or len(set(level)) != 1:
                raise ValueError(
                    'MSFRN: every level needs at least one map and one '
                    f'channel count (the light block is shared), got {level}')
        self.light = nn.ModuleList(
            LightBlock(level[0], channels, norm_cfg)
            for level in self.in_channels)
        # Identity keeps the list indexed by level; a single map needs no
        # channel reduction after concatenation
        self.fuse = nn.ModuleList(
            nn.Conv2d(len(level) * channels, channels, 1, bias=fuse_bias)
            if len(level) > 1 or fuse_single_map else nn.Identity()
            for level in self.in_channels)
        self.norm = nn.LayerNorm(channels)
        self.frm = nn.ModuleList(
            FrequencyRefinementModule(
                channels, norm_cfg, channel_gate=channel_gate)
            for _ in self.in_channels[1:])
        self.out_conv = nn.Conv2d(channels, out_channels, 1, bias=out_bias)

    def _level(self, i: int, maps: List[Tensor]) -> Tensor:
        expected = self.in_channels[i]
        got = [m.shape[1] for m in maps]
        if got != expected:
            raise ValueError(f'MSFRN level {i}: expected maps with channels '
                             f'{expected}, got {got}')
        return self.fuse[i](torch.cat([self.light[i](m) for m in maps], 1))

    def forward(self, feats: Sequence[Sequence[Tensor]]) -> Tensor:
        if len(feats) != len(self.in_channels):
            raise ValueError(f'MSFRN expects {len(self.in_channels)} levels '
                             f'of maps, got {len(feats)}')
        y = self._level(0, list(feats[0]))
        for i in range(1, len(feats)):
            cur = self._level(i, list(feats[i]))
            y = F.interpolate(
                y, size=cur.shape[-2:], mode='bilinear',
                align_corners=False) + cur
            if i == 1:
                y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            y = self.frm[i - 1](y)
        # contiguous NCHW whatever the inputs' layout (the LayerNorm above
        # runs channels-last): mmcv's RoIAlign reads it as contiguous NCHW
        return self.out_conv(y).contiguous()
