# Copyright (c) mmpsearch contributors. All rights reserved.
"""Cross-attention of one query per RoI over its RoI tokens."""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


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

    def forward_single(self,
                       query: Tensor,
                       tokens: Tensor,
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
