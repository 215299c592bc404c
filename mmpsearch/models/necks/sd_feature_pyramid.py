# Copyright (c) mmpsearch contributors. All rights reserved.
"""An FPN-like pyramid of Stable Diffusion features for PSDiff's CDL head:
the combination of DiffPS features with the PSDiff denoiser that neither
paper has."""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from .dgrpn import DGRPN

#: Keys of the :class:`StableDiffusionBackbone` output this neck reads.
REQUIRED_KEYS = ('det_feat', 'attn_map', 'reid_feats')
EXTRA_LEVEL_MODES = ('maxpool', 'conv')
#: SD 2.1's ReID maps at 1/32 (T[1][2].attn1.to_q) and 1/16
#: (T[2][1].attn1.to_v, T[2][2].attn1.to_q).
SD21_REID_IN_CHANNELS = ((1280, ), (640, 640))
SDFeatures = Dict[str, Union[Tensor, list]]


@MODELS.register_module()
class SDFeaturePyramid(BaseModule):
    """Stable Diffusion features as the multi-level image condition c of
    PSDiff's Collaborative Denoising Layer.

    Why it exists: PSDiff (Jia et al., "PSDiff: Diffusion Model for Person
    Search with Iterative and Collaborative Refinement", eq. 12) RoI-aligns
    the N noisy boxes on an FPN, one pyramid of one backbone. The frozen
    Stable Diffusion UNet of DiffPS (Kim et al., "Leveraging Prior Knowledge
    of Diffusion Model for Person Search", ICCV 2025, Sec. 3.2-3.5) gives no
    such pyramid but a dict of unrelated maps: the detection key feature K
    and the "person" cross-attention map M at 1/8, and self-attention
    projections of different widths at 1/32, 1/16 and 1/8. This adapter turns
    that dict into the tuple the CDL head's RoI extractor reads:

    - stride 8: ``F_det = F + gamma * (G * F)`` of DiffPS eq. 4, computed by
      a :class:`DGRPN` module (eq. 1-4: aggregation of K, peaks of M,
      Gaussians G) - the guidance without DGRPN's RPN, which PSDiff replaces
      by its noisy boxes;
    - strides 16 and 32: the DiffPS ReID maps of those levels
      (``reid_feats``), the maps of a level concatenated;
    - every level through a 1x1 conv to ``out_channels`` (FPN's lateral
      convs; for a level of several maps this one conv is also the fusion,
      since a fusion conv followed by a projection conv, both linear, would
      be one linear map);
    - optionally one more level at twice the coarsest stride, by max-pool
      (mmdet FPN's ``add_extra_convs=False``) or a 3x3 stride-2 conv (FPN's
      ``'on_output'``).

    There is no top-down path: the maps come from the UNet's up (decoder)
    blocks, which already merge coarse context into the fine levels.

    The output is ordered from the finest stride to the coarsest, as
    :attr:`featmap_strides` lists them; the head's ``roi_extractor.
    featmap_strides`` must be these (or their first levels).

    Args:
        dgrpn (dict): Config of the :class:`DGRPN` that enhances K;
            ``type`` defaults to DGRPN. Its ``in_channels`` must be K's width
            (SD 2.1 ``T[3][0].attn1.to_k``: 320).
        reid_in_channels (Sequence[Sequence[int]]): Widths of the maps of
            each ``reid_feats`` level, in the backbone's order (coarse to
            fine), e.g. ``((1280, ), (640, 640))`` for SD 2.1's
            ``T[1][2].attn1.to_q`` and ``T[2][1].attn1.to_v``,
            ``T[2][2].attn1.to_q``.
        reid_strides (Sequence[int]): Stride of each of those levels, e.g.
            ``(32, 16)``. Each must be a distinct power-of-two multiple of
            ``det_stride``, larger than it (the stride-8 level is F_det).
        out_channels (int): Channels of every output level (C = 256).
        det_stride (int): Stride of K and M. Defaults to 8.
        extra_level (str, optional): ``'maxpool'``, ``'conv'`` or None (no
            extra level). Defaults to None.
        norm_cfg (dict, optional): Norm of the 1x1 and extra convs (FPN has
            none). Defaults to None.
        init_cfg (dict, optional): Initialisation. Defaults to None: the
            convs keep mmcv ``ConvModule``'s Kaiming init and the DGRPN its
            own, as in DiffPS (an ``init_cfg`` here would re-initialise the
            DGRPN's convs too).
    """

    def __init__(self,
                 dgrpn: dict,
                 reid_in_channels: Sequence[Sequence[int]] = (
                     SD21_REID_IN_CHANNELS),
                 reid_strides: Sequence[int] = (32, 16),
                 out_channels: int = 256,
                 det_stride: int = 8,
                 extra_level: Optional[str] = None,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.reid_in_channels = [[int(c) for c in level]
                                 for level in reid_in_channels]
        self.reid_strides = [int(s) for s in reid_strides]
        if len(self.reid_in_channels) != len(self.reid_strides):
            raise ValueError(
                f'SDFeaturePyramid: reid_in_channels lists '
                f'{len(self.reid_in_channels)} levels but reid_strides '
                f'{len(self.reid_strides)} ({self.reid_strides})')
        if any(len(level) == 0 for level in self.reid_in_channels):
            raise ValueError('SDFeaturePyramid: every reid_in_channels level '
                             f'needs a map, got {self.reid_in_channels}')
        for s in self.reid_strides:
            ratio = s // det_stride
            if s % det_stride or ratio < 2 or ratio & (ratio - 1):
                raise ValueError(
                    f'SDFeaturePyramid: reid stride {s} is not a power-of-two '
                    f'multiple (>= 2) of det_stride {det_stride}')
        if len(set(self.reid_strides)) != len(self.reid_strides):
            raise ValueError('SDFeaturePyramid: reid_strides '
                             f'{self.reid_strides} repeat a stride')
        if extra_level not in (None, ) + EXTRA_LEVEL_MODES:
            raise ValueError(f'SDFeaturePyramid: extra_level must be None or '
                             f'one of {EXTRA_LEVEL_MODES}, got '
                             f'{extra_level!r}')
        self.out_channels = int(out_channels)
        self.det_stride = int(det_stride)
        self.extra_level = extra_level

        cfg = dict(type=DGRPN)
        cfg.update(dgrpn)
        # DiffPS's enhancement itself, reused: its forward gives (F_det, ).
        self.dgrpn = MODELS.build(cfg)
        det_in, det_out = self._dgrpn_channels(self.dgrpn)
        self.det_in_channels = det_in

        def lateral(in_channels: int) -> ConvModule:
            return ConvModule(
                in_channels,
                self.out_channels,
                1,
                norm_cfg=norm_cfg,
                act_cfg=None)

        # FPN's naming: [F_det, then the reid levels in the backbone's order]
        self.lateral_convs = nn.ModuleList(
            [lateral(det_out)] +
            [lateral(sum(level)) for level in self.reid_in_channels])
        if extra_level == 'conv':
            self.extra_conv = ConvModule(
                self.out_channels,
                self.out_channels,
                3,
                stride=2,
                padding=1,
                norm_cfg=norm_cfg,
                act_cfg=None)
        # output order: finest first
        strides = [self.det_stride] + self.reid_strides
        self._order = sorted(range(len(strides)), key=strides.__getitem__)
        self.featmap_strides: Tuple[int, ...] = tuple(strides[i]
                                                      for i in self._order)
        if extra_level is not None:
            self.featmap_strides += (2 * self.featmap_strides[-1], )

    @staticmethod
    def _dgrpn_channels(module: nn.Module) -> Tuple[int, int]:
        """Input and output widths of DGRPN's aggregation (1x1 conv, then a
        depthwise 3x3 conv)."""
        agg = getattr(module, 'aggregate', None)
        if not isinstance(agg, nn.Sequential) or len(agg) == 0:
            raise TypeError(
                'SDFeaturePyramid: dgrpn must build a DGRPN (a module with '
                f'an "aggregate" Sequential), got {type(module).__name__}')
        return int(agg[0].in_channels), int(agg[-1].out_channels)

    # ------------------------------------------------------------ checks
    def _check(self, feats: Mapping) -> None:
        if not isinstance(feats, Mapping):
            raise TypeError(
                'SDFeaturePyramid expects the dict of StableDiffusionBackbone '
                f'(keys {list(REQUIRED_KEYS)}), got {type(feats).__name__}')
        for key in REQUIRED_KEYS:
            if key not in feats:
                raise KeyError(
                    f'SDFeaturePyramid: the backbone output has no "{key}" '
                    f'(got keys {sorted(feats)}); it expects the dict of '
                    'StableDiffusionBackbone')
        det = feats['det_feat']
        if det.dim() != 4 or det.shape[1] != self.det_in_channels:
            raise ValueError(
                f'SDFeaturePyramid: det_feat has shape {tuple(det.shape)}, '
                f'expected {self.det_in_channels} channels '
                '(dgrpn.in_channels) in (B, C, H, W)')
        h, w = det.shape[-2:]
        levels = feats['reid_feats']
        if len(levels) != len(self.reid_in_channels):
            raise ValueError(
                f'SDFeaturePyramid: reid_feats has {len(levels)} levels, '
                f'expected {len(self.reid_in_channels)} (reid_in_channels '
                f'{self.reid_in_channels}); make backbone.reid_layers and '
                'neck.reid_in_channels list the same levels')
        for i, (maps, widths, stride) in enumerate(
                zip(levels, self.reid_in_channels, self.reid_strides)):
            if len(maps) != len(widths):
                raise ValueError(
                    f'SDFeaturePyramid: reid_feats[{i}] has {len(maps)} '
                    f'maps, expected {len(widths)} (reid_in_channels[{i}] = '
                    f'{widths})')
            size = (h * self.det_stride // stride,
                    w * self.det_stride // stride)
            for j, (m, c) in enumerate(zip(maps, widths)):
                if m.shape[1] != c:
                    raise ValueError(
                        f'SDFeaturePyramid: reid_feats[{i}][{j}] has '
                        f'{m.shape[1]} channels, expected {c} '
                        f'(reid_in_channels[{i}][{j}])')
                if tuple(m.shape[-2:]) != size:
                    raise ValueError(
                        f'SDFeaturePyramid: reid_feats[{i}][{j}] is '
                        f'{tuple(m.shape[-2:])}, expected {size} for stride '
                        f'{stride} (reid_strides[{i}]) next to the '
                        f'{h}x{w} det_feat at stride {self.det_stride}')

    # ----------------------------------------------------------- forward
    def forward(self, feats: SDFeatures) -> Tuple[Tensor, ...]:
        """Args: ``feats``, the dict of :class:`StableDiffusionBackbone`
        (``det_feat``, ``attn_map``, ``reid_feats``; other keys are
        ignored). Returns one contiguous (B, out_channels, H / s, W / s) map
        per stride of :attr:`featmap_strides`, finest first."""
        self._check(feats)
        f_det = self.dgrpn(feats['det_feat'], feats['attn_map'])[0]
        inputs = [f_det] + [
            torch.cat(list(maps), dim=1) for maps in feats['reid_feats']
        ]
        outs = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        outs = [outs[i] for i in self._order]
        if self.extra_level == 'maxpool':
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.extra_level == 'conv':
            outs.append(self.extra_conv(outs[-1]))
        # contiguous NCHW whatever the inputs' layout, for mmcv's RoIAlign
        return tuple(out.contiguous() for out in outs)
