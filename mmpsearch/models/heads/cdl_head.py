# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's Collaborative Denoising Layer (eq. 12, Fig. 3)."""
import math
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.structures.bbox import bbox2roi
from mmengine.model import BaseModule
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS
from ..layers import ReIDDynamicConv, RoIQueryAttention
from ..roi_extractors import GatherRoIExtractor, RoIFeatureTable


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

    The layer is the denoiser only (one pass, :meth:`forward`): the
    criterion, the sampler and the schedule belong to :class:`PSDiffHead`,
    which applies it.
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
            raise ValueError(f'CDLHead: roi_extractor.out_channels '
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
                in_channels=C, input_feat_shape=self.roi_size, **dynamic_conv)
            self.dc_norm = nn.LayerNorm(C)
        self.det_ffn, self.det_ffn_norm = self._ffn(C, feedforward_channels,
                                                    dropout)

        # ReID path: CA -> FFN.
        if with_ca:
            self.cross_attn = RoIQueryAttention(
                C, num_heads, dropout=dropout, batch_first=True)
            self.roi_pos_embed = nn.Parameter(torch.zeros(self.roi_size**2, C))
            self.ca_norm = nn.LayerNorm(C)
        self.reid_ffn, self.reid_ffn_norm = self._ffn(C, feedforward_channels,
                                                      dropout)
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

    @staticmethod
    def _ffn(channels: int, feedforward_channels: int,
             dropout: float) -> Tuple[FFN, nn.LayerNorm]:
        """The FFN that ends each path, and the norm after it."""
        return FFN(
            embed_dims=channels,
            feedforward_channels=feedforward_channels,
            ffn_drop=dropout), nn.LayerNorm(channels)

    @staticmethod
    def _mlp(in_channels: int, channels: int, num_layers: int) -> nn.Module:
        layers: List[nn.Module] = []
        for i in range(num_layers):
            layers += [
                nn.Linear(
                    in_channels if i == 0 else channels, channels, bias=False),
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
        # mmcv 2.1's RoIAlign reads its input as contiguous NCHW without
        # checking: a channels-last level would give unrelated numbers
        return tuple(f.contiguous() for f in feats)

    def forward(self, feats: Union[Sequence[Tensor],
                                   RoIFeatureTable], bboxes: Tensor,
                embeds: Tensor, timesteps: Tensor) -> Dict[str, Tensor]:
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
            det = self.sa_norm(
                q +
                self.dropout(self.self_attn(q, q, q, need_weights=False)[0]))
            det = det.reshape(B * N, C)
        if self.with_dc:
            det = self.dc_norm(det +
                               self.dropout(self.dynamic_conv(f_r, roi_feats)))
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
            N, dim=0).chunk(
                2, dim=-1)
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
