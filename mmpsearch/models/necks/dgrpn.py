# Copyright (c) mmpsearch contributors. All rights reserved.
"""DGRPN: Diffusion-Guided Region Proposal Network (the guidance part).

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.4, eq. 1-4.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from ..layers.pointwise_depthwise import PointwiseDepthwise


@MODELS.register_module()
class DGRPN(BaseModule):
    """Diffusion-guided detection feature of DiffPS (Kim et al., ICCV 2025,
    Sec. 3.4, eq. 1-4).

    The Stable Diffusion key feature K is aggregated into F (1x1 conv +
    BN + ReLU, depthwise 3x3 + BN); the cross-attention map M of the word
    "person" guides it:

    - eq. 1: M is min-max normalised and thresholded,
      ``M_tau = M * [M > tau]``;
    - peaks are the 7x7 local maxima of M_tau, at most ``max_peaks`` of them
      by score, and only positive ones (positions whose score is 0 never
      become peaks, unlike the public code when fewer than 50 peaks exist);
    - eq. 2: per peak k the spread in a 9x9 window around it,
      ``s_x^k = max(delta, sqrt(sum (x - c_x^k)^2 M_tau(x, y)))`` and the same
      for y;
    - eq. 3: a Gaussian per peak,
      ``G_k = exp(-(x - c_x)^2 / (beta s_x^2) - (y - c_y)^2 / (beta s_y^2))``
      with a learnable beta (init 1), merged by a pixel-wise max into G;
    - eq. 4: ``F_det = F + gamma * (G * F)``, gamma learnable, init 0 (so
      training starts from the unguided feature).

    The single-level RPN (mmdet ``RPNHead`` with an ``AnchorGenerator`` of
    stride 8, anchors 32-512, ratios 0.5/1/2) and the RoI head (RoIAlign
    14x14, ResNet-50 stage 4 box head) run on ``F_det``; they are configured
    in the detector (``rpn_head`` / ``roi_head``), as in any mmdet
    two-stage detector.

    Args:
        in_channels (int): Channels of K (SD 2.1 ``T[3][0].attn1.to_k``: 320).
        out_channels (int): Channels of F. Defaults to 1024.
        tau (float): Threshold of the normalised map (eq. 1). Default 0.7.
        peak_kernel (int): Local-maximum window. Defaults to 7.
        max_peaks (int): Top-k peaks kept. Defaults to 50.
        spread_kernel (int): Window of the spread (eq. 2). Defaults to 9.
        delta (float): Floor of the spread (eq. 2). Defaults to 5.
        beta_init (float): Initial beta (eq. 3). Defaults to 1.
        gamma_init (float): Initial gamma (eq. 4). Defaults to 0.
        norm_cfg (dict): Normalisation layers. Defaults to BN.
    """

    def __init__(self,
                 in_channels: int = 320,
                 out_channels: int = 1024,
                 tau: float = 0.7,
                 peak_kernel: int = 7,
                 max_peaks: int = 50,
                 spread_kernel: int = 9,
                 delta: float = 5.0,
                 beta_init: float = 1.0,
                 gamma_init: float = 0.0,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if peak_kernel % 2 == 0 or spread_kernel % 2 == 0:
            raise ValueError('DGRPN: peak_kernel and spread_kernel must be '
                             f'odd, got {peak_kernel} and {spread_kernel}')
        self.tau = tau
        self.peak_kernel = peak_kernel
        self.max_peaks = max_peaks
        self.spread_kernel = spread_kernel
        self.delta = delta
        self.aggregate = PointwiseDepthwise(
            in_channels, out_channels, norm_cfg, dw_relu=False)
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    # ---------------------------------------------------------- eq. 1-3
    def threshold(self, attn_map: Tensor) -> Tensor:
        """Eq. 1: per-image min-max normalisation, then ``M * [M > tau]``."""
        lo = attn_map.amin(dim=(2, 3), keepdim=True)
        hi = attn_map.amax(dim=(2, 3), keepdim=True)
        m = (attn_map - lo) / (hi - lo).clamp_min(1e-12)
        return torch.where(m > self.tau, m, torch.zeros_like(m))

    def find_peaks(self,
                   m_th: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Local maxima of ``m_th`` (B, 1, H, W), top ``max_peaks``.

        Returns:
            cx, cy (long, (B, K)), scores (B, K) and valid (bool, (B, K)):
            a slot is valid only for a positive local maximum.
        """
        b, _, h, w = m_th.shape
        k = self.peak_kernel
        pooled = F.max_pool2d(m_th, k, stride=1, padding=k // 2)
        is_peak = (m_th == pooled) & (m_th > 0)
        scores = torch.where(is_peak, m_th, torch.zeros_like(m_th))
        num = min(self.max_peaks, h * w)
        top, idx = scores.flatten(1).topk(num, dim=1)
        valid = top > 0
        return idx % w, idx // w, top, valid

    def peak_spread(self, m_th: Tensor, cx: Tensor,
                    cy: Tensor) -> Tuple[Tensor, Tensor]:
        """Eq. 2: ``max(delta, sqrt(sum (x - c)^2 M_tau))`` in the window."""
        b = m_th.shape[0]
        r = self.spread_kernel // 2
        padded = F.pad(m_th[:, 0], (r, r, r, r))  # zeros outside the map
        off = torch.arange(-r, r + 1, device=m_th.device)
        ys = (cy[..., None, None] + r + off[:, None])  # (B, K, S, 1)
        xs = (cx[..., None, None] + r + off[None, :])  # (B, K, 1, S)
        bi = torch.arange(b, device=m_th.device)[:, None, None, None]
        win = padded[bi, ys, xs]  # (B, K, S, S)
        d2 = off.to(m_th.dtype)**2
        sx = (win * d2[None, None, None, :]).sum(dim=(2, 3)).sqrt()
        sy = (win * d2[None, None, :, None]).sum(dim=(2, 3)).sqrt()
        return sx.clamp_min(self.delta), sy.clamp_min(self.delta)

    def guidance_map(self, attn_map: Tensor) -> Tensor:
        """G of eq. 3, (B, 1, H, W), from the raw attention map."""
        m_th = self.threshold(attn_map.float())
        b, _, h, w = m_th.shape
        cx, cy, _, valid = self.find_peaks(m_th)
        sx, sy = self.peak_spread(m_th, cx, cy)
        # beta scales a variance: keep it positive
        beta = self.beta.clamp_min(1e-3)
        xs = torch.arange(w, device=m_th.device, dtype=m_th.dtype)
        ys = torch.arange(h, device=m_th.device, dtype=m_th.dtype)
        gx = (xs[None, None, :] - cx[..., None].to(m_th.dtype))**2 / (
            beta * sx[..., None]**2)  # (B, K, W)
        gy = (ys[None, None, :] - cy[..., None].to(m_th.dtype))**2 / (
            beta * sy[..., None]**2)  # (B, K, H)
        g = torch.exp(-(gy[..., :, None] + gx[..., None, :]))  # (B,K,H,W)
        g = g * valid[..., None, None].to(g.dtype)
        if g.shape[1] == 0:
            return m_th.new_zeros(b, 1, h, w)
        return g.amax(dim=1, keepdim=True)

    # ------------------------------------------------------------- eq. 4
    def forward(self, det_feat: Tensor, attn_map: Tensor) -> Tuple[Tensor]:
        """Args: det_feat (B, C_in, H, W) the K feature; attn_map
        (B, 1, h, w) the "person" cross-attention map (resized to H x W when
        it differs). Returns ``(F_det, )`` for mmdet's heads, contiguous
        NCHW."""
        feat = self.aggregate(det_feat)
        if attn_map.dim() == 3:
            attn_map = attn_map[:, None]
        if attn_map.shape[-2:] != feat.shape[-2:]:
            attn_map = F.interpolate(
                attn_map.float(),
                size=feat.shape[-2:],
                mode='bilinear',
                align_corners=False)
        g = self.guidance_map(attn_map).to(feat.dtype)
        # contiguous NCHW whatever the input's layout: the RoI head's mmcv
        # RoIAlign reads its input as contiguous NCHW (see
        # DiffPSRoIHead._bbox_forward)
        return ((feat + self.gamma * (g * feat)).contiguous(), )
