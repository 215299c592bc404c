# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's Collaborative Denoising Layer (eq. 12, Fig. 3)."""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers import DynamicConv
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.structures.bbox import bbox2roi
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS
from ..losses import DualDenoisingCriterion


class RoIFeatureTable(NamedTuple):
    """FPN levels laid out channels-last in one table, for
    :class:`GatherRoIExtractor` (built once per image batch)."""
    table: Tensor  # (sum_l B * H_l * W_l, C)
    offsets: Tensor  # (L,) first row of each level
    heights: Tensor  # (L,)
    widths: Tensor  # (L,)


@MODELS.register_module()
class GatherRoIExtractor(SingleRoIExtractor):
    """mmdet's ``SingleRoIExtractor`` (same level mapping, same RoIAlign
    arithmetic as mmcv's ``RoIAlign`` in 'avg' mode with a fixed
    ``sampling_ratio``) computed as one weighted gather.

    Written by hand because mmcv's CPU RoIAlign reads the NCHW features one
    channel plane at a time (scattered reads, ~0.2 s for 300 RoIs of a
    1333x800 image on one core), which would make every sampling step cost
    as much as a large part of the backbone. Here the levels are copied
    once into a channels-last table (:meth:`prepare`, reused by every
    sampling step) and each bin is the ``embedding_bag`` sum of its
    ``sampling_ratio**2 * 4`` bilinear taps: contiguous C-wide rows, ~40x
    faster, differentiable with respect to the features. The output equals
    mmcv's to float rounding (tested).

    Args:
        roi_layer (dict): As for ``SingleRoIExtractor``; ``RoIAlign`` with
            ``sampling_ratio > 0`` and ``pool_mode='avg'``.
        out_channels, featmap_strides, finest_scale: As mmdet's.
    """

    def __init__(self,
                 roi_layer: dict,
                 out_channels: int,
                 featmap_strides: List[int],
                 finest_scale: int = 56,
                 init_cfg=None) -> None:
        super().__init__(
            roi_layer=roi_layer,
            out_channels=out_channels,
            featmap_strides=featmap_strides,
            finest_scale=finest_scale,
            init_cfg=init_cfg)
        layer = self.roi_layers[0]
        for attr in ('output_size', 'sampling_ratio', 'aligned',
                     'pool_mode'):
            if not hasattr(layer, attr):
                raise TypeError(
                    f'GatherRoIExtractor reproduces mmcv RoIAlign; '
                    f'{type(layer).__name__} has no {attr!r}')
        if layer.pool_mode != 'avg' or int(layer.sampling_ratio) <= 0:
            raise ValueError(
                'GatherRoIExtractor needs RoIAlign with pool_mode="avg" and '
                f'sampling_ratio > 0, got pool_mode={layer.pool_mode!r}, '
                f'sampling_ratio={layer.sampling_ratio}')
        size = layer.output_size
        self.out_size = (size, size) if isinstance(size, int) else \
            tuple(int(v) for v in size)
        self.sampling_ratio = int(layer.sampling_ratio)
        self.aligned = bool(layer.aligned)

    def prepare(self, feats: Sequence[Tensor]) -> RoIFeatureTable:
        """Channels-last table of the first ``num_inputs`` levels."""
        feats = feats[:self.num_inputs]
        rows = [f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in feats]
        sizes = [len(r) for r in rows]
        device = feats[0].device
        offsets = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)
        return RoIFeatureTable(
            torch.cat(rows), offsets,
            torch.tensor([f.shape[2] for f in feats], device=device),
            torch.tensor([f.shape[3] for f in feats], device=device))

    def forward_tokens(self, feats, rois: Tensor) -> Tensor:
        """RoI features as tokens (n, S_h * S_w, C)."""
        tab = feats if isinstance(feats, RoIFeatureTable) else \
            self.prepare(feats)
        n = rois.shape[0]
        sh, sw = self.out_size
        sr = self.sampling_ratio
        if n == 0:
            return tab.table.new_zeros(0, sh * sw, tab.table.shape[1])
        rois = rois.to(tab.table.dtype)
        lvl = self.map_roi_levels(rois, len(tab.heights))
        strides = rois.new_tensor(self.featmap_strides)[lvl]
        H, W = tab.heights[lvl], tab.widths[lvl]
        base = tab.offsets[lvl] + rois[:, 0].long() * H * W
        offset = 0.5 if self.aligned else 0.0
        x1 = rois[:, 1] / strides - offset
        y1 = rois[:, 2] / strides - offset
        x2 = rois[:, 3] / strides - offset
        y2 = rois[:, 4] / strides - offset
        rw, rh = x2 - x1, y2 - y1
        if not self.aligned:
            rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)

        def taps(start, length, bins, size):
            # Sample positions of every bin along one axis, in mmcv's order
            # (bin-major), and their two bilinear taps.
            pos = (torch.arange(bins * sr, device=rois.device,
                                dtype=rois.dtype) + 0.5) / sr
            v = start[:, None] + pos[None] * (length / bins)[:, None]
            size = size[:, None]
            valid = (v >= -1.0) & (v <= size.to(v.dtype))
            v = v.clamp(min=0.0)
            lo = torch.minimum(v.floor().long(), size - 1)
            at_end = lo >= size - 1
            v = torch.where(at_end, lo.to(v.dtype), v)
            hi = torch.where(at_end, lo, lo + 1)
            frac = v - lo.to(v.dtype)
            return lo, hi, 1 - frac, frac, valid

        ylo, yhi, wy0, wy1, vy = taps(y1, rh, sh, H)
        xlo, xhi, wx0, wx1, vx = taps(x1, rw, sw, W)
        rowy = [(ylo * W[:, None])[:, :, None], (yhi * W[:, None])[:, :, None]]
        colx = [xlo[:, None, :], xhi[:, None, :]]
        wy = [wy0[:, :, None], wy1[:, :, None]]
        wx = [wx0[:, None, :], wx1[:, None, :]]
        idx = torch.stack([
            base[:, None, None] + rowy[a] + colx[b] for a in (0, 1)
            for b in (0, 1)
        ], dim=-1)  # (n, sh*sr, sw*sr, 4)
        valid = (vy[:, :, None] & vx[:, None, :]).to(rois.dtype)
        wts = torch.stack([wy[a] * wx[b] for a in (0, 1) for b in (0, 1)],
                          dim=-1) * (valid / (sr * sr))[..., None]
        # One bag per output bin: its sr*sr samples x 4 taps.
        idx = idx.view(n, sh, sr, sw, sr, 4).permute(0, 1, 3, 2, 4, 5)
        wts = wts.view(n, sh, sr, sw, sr, 4).permute(0, 1, 3, 2, 4, 5)
        out = F.embedding_bag(
            idx.reshape(n * sh * sw, -1),
            tab.table,
            per_sample_weights=wts.reshape(n * sh * sw, -1),
            mode='sum')
        return out.view(n, sh * sw, -1)

    def forward(self,
                feats,
                rois: Tensor,
                roi_scale_factor: Optional[float] = None) -> Tensor:
        """Same interface and output (n, C, S_h, S_w) as mmdet's."""
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        tokens = self.forward_tokens(feats, rois)
        return tokens.transpose(1, 2).reshape(
            len(tokens), -1, *self.out_size)


class RoIQueryAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` for one query per proposal over its RoI
    tokens, computed with the key and value projections folded into the
    query side.

    Written by hand for speed only: with one query and L = 49 tokens per
    proposal, ``softmax(q W_q (X W_k)^T) X W_v`` is evaluated as
    ``softmax((W_k^T W_q q) . X)`` and ``(attn . X) W_v`` per head, so the
    49 tokens of every proposal are never projected (about 20x fewer
    operations per sampling step). Parameters, initialisation and results
    are those of ``nn.MultiheadAttention(batch_first=True)`` (tested); the
    key bias cancels in the softmax.
    """

    def forward_single(self, query: Tensor, tokens: Tensor,
                       key_pos: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query (Tensor): (M, C), one query per proposal.
            tokens (Tensor): (M, L, C) keys and values.
            key_pos (Tensor, optional): (L, C) added to the keys only.

        Returns:
            Tensor: (M, C).
        """
        M, C = query.shape
        h, d = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, _, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(M, h, d) / math.sqrt(d)
        u = torch.einsum('mhd,hdc->mhc', q, w_k.view(h, d, C))
        logits = torch.bmm(u, tokens.transpose(1, 2))  # (M, h, L)
        if key_pos is not None:
            logits = logits + torch.einsum('mhc,lc->mhl', u, key_pos)
        attn = F.dropout(
            logits.softmax(-1), p=self.dropout, training=self.training)
        z = torch.bmm(attn, tokens)  # (M, h, C)
        v = torch.einsum('mhc,hdc->mhd', z, w_v.view(h, d, C)) + \
            b_v.view(h, d)
        return self.out_proj(v.reshape(M, C))


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
    to ``chunk_size`` proposals at a time so that the generated kernels
    (2 C d floats per proposal) are consumed while still in cache; every
    proposal is independent, so the result is the same.

    Args:
        param_rank (int, optional): r; None for mmdet's full-rank map.
        chunk_size (int): Proposals per chunk. Defaults to 64.
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
                nn.Linear(param_rank, self.num_params_in +
                          self.num_params_out))

    def forward(self, param_feature: Tensor, input_feature: Tensor) -> Tensor:
        n, k = len(param_feature), self.chunk_size
        if n <= k:
            return super().forward(param_feature, input_feature)
        return torch.cat([
            super(ReIDDynamicConv, self).forward(param_feature[i:i + k],
                                                 input_feature[i:i + k])
            for i in range(0, n, k)
        ])


@MODELS.register_module()
class CDLHead(BaseModule):
    """The Collaborative Denoising Layer (CDL) of PSDiff.

    PSDiff (Jia et al., "PSDiff: Diffusion Model for Person Search with
    Iterative and Collaborative Refinement"), eq. 12 and Fig. 3:
    ``(b̂_0, ê_0) = f((b_t, e_t), c, t)``. One layer, reused at every
    sampling step.

    For N boxes per image:

    1. RoIAlign (7x7) of the FPN features c at the boxes gives
       F_d (N, 49, C); a linear layer on the noisy embeddings e_t gives the
       ReID features F_r (N, C).
    2. Detection path: the proposal feature (F_d averaged over the RoI) is
       refined by multi-head self-attention over the N proposals of an image
       (SA), then by a dynamic convolution on F_d whose two 1x1 kernels are
       generated from F_r (DC, Sparse R-CNN style), then an FFN.
    3. ReID path: cross-attention with F_r as queries and the 49 RoI tokens
       of F_d (plus a learned position embedding) as keys and values (CA),
       then an FFN.
    4. F_c = [detection, ReID] (N, 2C), scaled and shifted by an MLP of the
       sinusoidal embedding of t (as DiffusionDet).
    5. Cascaded prediction (Table IV(c)): F_c -> embedding feature F_e ->
       ê_0 = Linear(F_e); the detection head reads F_o = F_e (the feature
       ê_0 is a linear read-out of) and gives the class logits (one cls
       layer) and box deltas (three reg layers) applied to the input boxes.
       With ``cascaded=False`` the detection head reads its own projection
       of F_c instead (the "parallel" variant).

    ``with_sa`` / ``with_dc`` / ``with_ca`` switch the three interactions
    off for the ablation of Table IV(b): without SA the proposal feature is
    the RoI average, without DC it is passed on unchanged, without CA the
    ReID feature is F_r.

    Args:
        num_classes (int): Foreground classes (person). Defaults to 1.
        in_channels (int): C, the FPN width. Defaults to 256.
        embed_dims (int): D, the width of the ReID embeddings (the
            teacher's). Defaults to 2048.
        roi_extractor (dict): RoIAlign (7x7, sampling ratio 2) of the FPN
            levels: :class:`GatherRoIExtractor` (default, fast on CPU) or
            mmdet's ``SingleRoIExtractor`` with mmcv's ``RoIAlign``.
        num_heads (int): Attention heads of SA and CA. Defaults to 8.
        feedforward_channels (int): FFN width. Defaults to 2048.
        dynamic_conv (dict): Arguments of :class:`ReIDDynamicConv`
            (``feat_channels`` 64, ``param_rank``, ``with_proj``).
        num_cls_convs (int): Hidden layers of the class branch. Defaults 1.
        num_reg_convs (int): Hidden layers of the box branch. Defaults 3.
        dropout (float): Dropout after attention / DC. Defaults to 0.
        with_sa, with_dc, with_ca (bool): The three interactions.
        cascaded (bool): Cascaded (True) or parallel (False) prediction.
        bbox_coder (dict): Box deltas; DiffusionDet's weights (2, 2, 1, 1)
            are ``target_stds`` (0.5, 0.5, 1, 1).
        prior_prob (float): Initial foreground probability. Defaults 0.01.
        criterion (dict): The set-prediction loss.
    """

    def __init__(self,
                 num_classes: int = 1,
                 in_channels: int = 256,
                 embed_dims: int = 2048,
                 roi_extractor: dict = dict(
                     type=GatherRoIExtractor,
                     roi_layer=dict(
                         type='RoIAlign',
                         output_size=7,
                         sampling_ratio=2,
                         aligned=True),
                     out_channels=256,
                     featmap_strides=[4, 8, 16, 32]),
                 num_heads: int = 8,
                 feedforward_channels: int = 2048,
                 dynamic_conv: dict = dict(
                     feat_channels=64, param_rank=64, with_proj=True),
                 num_cls_convs: int = 1,
                 num_reg_convs: int = 3,
                 dropout: float = 0.0,
                 with_sa: bool = True,
                 with_dc: bool = True,
                 with_ca: bool = True,
                 cascaded: bool = True,
                 bbox_coder: dict = dict(
                     type=DeltaXYWHBBoxCoder,
                     target_means=(0., 0., 0., 0.),
                     target_stds=(0.5, 0.5, 1., 1.),
                     clip_border=False),
                 prior_prob: float = 0.01,
                 criterion: dict = dict(type=DualDenoisingCriterion),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        C = in_channels
        self.num_classes = num_classes
        self.in_channels = C
        self.embed_dims = embed_dims
        self.with_sa, self.with_dc, self.with_ca = with_sa, with_dc, with_ca
        self.cascaded = cascaded
        self.prior_prob = prior_prob

        self.roi_extractor = MODELS.build(roi_extractor)
        if self.roi_extractor.out_channels != C:
            raise ValueError(
                f'CDLHead: roi_extractor.out_channels '
                f'({self.roi_extractor.out_channels}) must equal '
                f'in_channels ({C})')
        roi_size = self.roi_extractor.roi_layers[0].output_size
        roi_size = roi_size[0] if isinstance(roi_size, tuple) else roi_size
        self.roi_size = int(roi_size)
        self.num_levels = len(self.roi_extractor.featmap_strides)

        # F_r from e_t.
        self.embed_in = nn.Linear(embed_dims, C)
        self.embed_in_norm = nn.LayerNorm(C)

        # Detection path: SA -> DC -> FFN.
        if with_sa:
            self.self_attn = nn.MultiheadAttention(
                C, num_heads, dropout=dropout, batch_first=True)
            self.sa_norm = nn.LayerNorm(C)
        if with_dc:
            self.dynamic_conv = ReIDDynamicConv(
                in_channels=C,
                input_feat_shape=self.roi_size,
                **dynamic_conv)
            self.dc_norm = nn.LayerNorm(C)
        self.det_ffn = FFN(
            embed_dims=C,
            feedforward_channels=feedforward_channels,
            ffn_drop=dropout)
        self.det_ffn_norm = nn.LayerNorm(C)

        # ReID path: CA -> FFN.
        if with_ca:
            self.cross_attn = RoIQueryAttention(
                C, num_heads, dropout=dropout, batch_first=True)
            self.roi_pos_embed = nn.Parameter(
                torch.zeros(self.roi_size**2, C))
            self.ca_norm = nn.LayerNorm(C)
        self.reid_ffn = FFN(
            embed_dims=C,
            feedforward_channels=feedforward_channels,
            ffn_drop=dropout)
        self.reid_ffn_norm = nn.LayerNorm(C)
        self.dropout = nn.Dropout(dropout)

        # Timestep -> scale and shift of F_c (DiffusionDet's time MLP).
        self.time_proj = Timesteps(
            C, flip_sin_to_cos=False, downscale_freq_shift=1)
        self.time_embed = TimestepEmbedding(C, C, act_fn='gelu')
        self.time_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(C, 4 * C))

        # Cascaded prediction.
        self.embed_branch = self._mlp(2 * C, C, 1)
        self.embed_out = nn.Linear(C, embed_dims)
        if not cascaded:
            self.det_branch = self._mlp(2 * C, C, 1)
        self.cls_branch = self._mlp(C, C, num_cls_convs)
        self.cls_out = nn.Linear(C, num_classes)
        self.reg_branch = self._mlp(C, C, num_reg_convs)
        self.reg_out = nn.Linear(C, 4)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)

        self.criterion = MODELS.build(criterion)

    @staticmethod
    def _mlp(in_channels: int, channels: int, num_layers: int) -> nn.Module:
        layers: List[nn.Module] = []
        for i in range(num_layers):
            layers += [
                nn.Linear(in_channels if i == 0 else channels, channels,
                          bias=False),
                nn.LayerNorm(channels),
                nn.ReLU(inplace=True)
            ]
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """Xavier for every weight matrix, prior-probability class bias
        (DiffusionDet / PSDiff)."""
        super().init_weights()
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        nn.init.constant_(self.cls_out.bias, bias)

    def prepare(self, feats: Sequence[Tensor]):
        """What :meth:`forward` reads the RoIs from: for a
        :class:`GatherRoIExtractor` its channels-last table, built once and
        reused by every sampling step; otherwise the FPN levels."""
        feats = tuple(feats[:self.num_levels])
        if hasattr(self.roi_extractor, 'prepare'):
            return self.roi_extractor.prepare(feats)
        return feats

    def forward(self, feats: Union[Sequence[Tensor], RoIFeatureTable],
                bboxes: Tensor, embeds: Tensor,
                timesteps: Tensor) -> Dict[str, Tensor]:
        """One denoising pass.

        Args:
            feats: FPN levels (B, C, H_l, W_l) (the first
                ``len(featmap_strides)`` are used), or :meth:`prepare`'s
                output for them.
            bboxes (Tensor): (B, N, 4) boxes b_t, x1y1x2y2 in pixels of the
                network input.
            embeds (Tensor): (B, N, D) noisy embeddings e_t (divided by the
                SNR scale s2).
            timesteps (Tensor): (B,) timestep indices.

        Returns:
            dict: ``cls_scores`` (B, N, K) logits, ``bboxes`` (B, N, 4)
            b̂_0 in pixels, ``embeds`` (B, N, D) ê_0 (not normalised).
        """
        B, N = bboxes.shape[:2]
        C, D = self.in_channels, self.embed_dims
        if embeds.shape != (B, N, D):
            raise ValueError(
                f'CDLHead: embeds of shape {tuple(embeds.shape)} given, '
                f'expected {(B, N, D)} (embed_dims={D} must be the teacher '
                'embedding width)')
        if not isinstance(feats, RoIFeatureTable):
            feats = self.prepare(feats)
        flat_boxes = bboxes.reshape(B * N, 4)
        rois = bbox2roi(list(bboxes.detach().unbind(0)))
        if hasattr(self.roi_extractor, 'forward_tokens'):
            tokens = self.roi_extractor.forward_tokens(feats, rois)
        else:
            tokens = self.roi_extractor(feats, rois).flatten(2).transpose(
                1, 2).contiguous()
        # (BN, S*S, C); the (BN, C, S, S) view DynamicConv expects is free.
        roi_feats = tokens.transpose(1, 2).view(B * N, C, self.roi_size,
                                                self.roi_size)

        f_r = self.embed_in_norm(self.embed_in(embeds.reshape(B * N, D)))

        # Detection path.
        det = tokens.mean(dim=1)
        if self.with_sa:
            q = det.view(B, N, C)
            det = self.sa_norm(q + self.dropout(
                self.self_attn(q, q, q, need_weights=False)[0]))
            det = det.reshape(B * N, C)
        if self.with_dc:
            det = self.dc_norm(det + self.dropout(
                self.dynamic_conv(f_r, roi_feats)))
        det = self.det_ffn_norm(self.det_ffn(det))

        # ReID path.
        reid = f_r
        if self.with_ca:
            attn = self.cross_attn.forward_single(f_r, tokens,
                                                  self.roi_pos_embed)
            reid = self.ca_norm(f_r + self.dropout(attn))
        reid = self.reid_ffn_norm(self.reid_ffn(reid))

        f_c = torch.cat([det, reid], dim=-1)  # (BN, 2C)
        t_emb = self.time_embed(self.time_proj(timesteps.reshape(B)))
        scale, shift = self.time_scale_shift(t_emb).repeat_interleave(
            N, dim=0).chunk(2, dim=-1)
        f_c = f_c * (scale + 1) + shift

        f_e = self.embed_branch(f_c)
        pred_embeds = self.embed_out(f_e)
        f_o = f_e if self.cascaded else self.det_branch(f_c)
        cls_scores = self.cls_out(self.cls_branch(f_o))
        deltas = self.reg_out(self.reg_branch(f_o))
        pred_boxes = self.bbox_coder.decode(flat_boxes, deltas)
        return dict(
            cls_scores=cls_scores.view(B, N, self.num_classes),
            bboxes=pred_boxes.view(B, N, 4),
            embeds=pred_embeds.view(B, N, D))

    def loss_by_feat(self, outs: Dict[str, Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """The criterion (eq. 13-14) on the outputs of :meth:`forward`."""
        return self.criterion(outs['cls_scores'], outs['bboxes'],
                              outs['embeds'], batch_gt_instances,
                              batch_img_metas)
