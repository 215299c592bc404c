# Copyright (c) mmpsearch contributors. All rights reserved.
"""Online Instance Matching loss (Xiao et al., CVPR 2017), as DiffPS uses it
(Kim et al., ICCV 2025, Sec. 3.7)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size
from mmengine.model import BaseModule
from torch import Tensor

from mmpsearch.registry import MODELS


@MODELS.register_module()
class OIMLoss(BaseModule):
    """Online Instance Matching loss with a lookup table (LUT) of labeled
    identities and a circular queue (CQ) of unlabeled persons (Xiao et al.,
    "Joint Detection and Identification Feature Learning for Person Search",
    CVPR 2017; DiffPS: LUT 5532 / CQ 5000 on CUHK-SYSU, 483 / 500 on PRW,
    momentum 0.5, scale 30).

    For L2-normalised embeddings x, the logits are ``scale * x [LUT; CQ]^T``
    against the tables as they were before this batch; the loss is the
    cross-entropy of the labeled samples against their LUT row (unlabeled
    samples only enter the queue, where they act as negatives). After the
    logits, the tables are updated without gradient: for each labeled
    sample in order ``LUT[y] <- normalize(m LUT[y] + (1 - m) x)``, and the
    unlabeled samples are written into the queue at its head, which moves on
    circularly.

    The tables and the queue head are persistent buffers, so they are saved
    in checkpoints and resumed.

    Under distributed training the update is gathered across ranks (the
    samples of all ranks, in rank order), because the model wrapper does not
    broadcast buffers: rank-local updates would let the tables drift apart
    and the checkpoint keep rank 0's only; so every rank holds the tables one
    process would hold on the concatenated batch, while the loss and its
    gradient stay on the local batch. Neither the OIM authors' code
    (single-GPU Caffe) nor the official DiffPS code does this (DiffPS has it
    commented out; SeqNet's, Li & Miao, AAAI 2021, gathers for the loss too).
    The gather is a collective: every rank must call ``forward`` in training
    equally often, even with no person in its batch.

    Args:
        num_features (int): Embedding size.
        num_pids (int): LUT size = number of training identities.
        num_cq_size (int): CQ size.
        momentum (float): LUT momentum. Defaults to 0.5.
        scale (float): Logit scale. Defaults to 30.
        loss_weight (float): Loss weight. Defaults to 1.

    ``forward(embeddings, person_ids)``: ids >= 0 are labeled identities
    (< ``num_pids``), -1 is an unlabeled person, < -1 (e.g. background) is
    ignored.
    """

    def __init__(self,
                 num_features: int,
                 num_pids: int,
                 num_cq_size: int,
                 momentum: float = 0.5,
                 scale: float = 30.0,
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_pids <= 0 or num_cq_size < 0:
            raise ValueError('OIMLoss: num_pids must be > 0 and num_cq_size '
                             f'>= 0, got {num_pids} and {num_cq_size}')
        self.num_features = num_features
        self.num_pids = num_pids
        self.num_cq_size = num_cq_size
        self.momentum = momentum
        self.scale = scale
        self.loss_weight = loss_weight
        self.register_buffer('lut', torch.zeros(num_pids, num_features))
        self.register_buffer('cq', torch.zeros(num_cq_size, num_features))
        self.register_buffer('cq_head', torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _gather(self, embeddings: Tensor,
                person_ids: Tensor) -> Tuple[Tensor, Tensor]:
        """The samples of all ranks that update the tables, in rank order
        (the local ones when not distributed)."""
        if get_world_size() == 1:
            return embeddings, person_ids
        keep = person_ids >= -1  # ignored samples never touch the tables
        x = embeddings.detach()[keep].to(self.lut.dtype)
        y = person_ids[keep]
        # all_gather needs one shape on every rank: share counts, then pad
        counts = [int(c) for c in all_gather(y.new_tensor([y.numel()]))]
        if max(counts) == 0:  # the same on all ranks, so all skip
            return x, y
        pad = max(counts) - y.numel()
        xs = all_gather(torch.cat([x, x.new_zeros(pad, x.shape[1])]))
        ys = all_gather(torch.cat([y, y.new_full((pad, ), -2)]))
        return (torch.cat([t[:n] for t, n in zip(xs, counts)]),
                torch.cat([t[:n] for t, n in zip(ys, counts)]))

    @torch.no_grad()
    def update(self, embeddings: Tensor, person_ids: Tensor) -> None:
        """Momentum update of the LUT and circular write into the CQ.

        The same tables as the authors' per-sample loop (Xiao et al., CVPR
        2017; SeqNet's and DiffPS's ``OIM.backward``), which applies
        ``LUT[y] <- normalize(m LUT[y] + (1 - m) x)`` sample by sample, in
        batch order, so that the samples of one identity compound, but
        without a host sync per sample: the samples are grouped by
        identity, and round r applies every identity's r-th sample at once
        (each identity's chain keeps its order, and different identities
        do not interact). The number of rounds is the largest number of
        samples of one identity, 1 when the ids are unique; the LUT is
        written once, with ``index_copy_``. The queue is written with one
        ``index_copy_`` at positions computed on the device, so the queue
        head is never read back to the host.
        """
        x = embeddings.detach().to(self.lut.dtype)
        self._update_lut(x[person_ids >= 0], person_ids[person_ids >= 0])
        self._update_cq(x[person_ids == -1])

    @torch.no_grad()
    def _update_lut(self, x: Tensor, y: Tensor) -> None:
        """``LUT[y_i] <- normalize(m LUT[y_i] + (1 - m) x_i)`` for i in
        order, applied in rounds of distinct identities."""
        if y.numel() == 0:
            return
        ids, group, counts = torch.unique(
            y, sorted=True, return_inverse=True, return_counts=True)
        # r = how many earlier samples of the same identity (the rank of
        # each sample within its identity, in batch order)
        order = torch.argsort(y, stable=True)
        starts = counts.cumsum(0) - counts
        rank = torch.empty_like(y)
        rank[order] = torch.arange(y.numel(), device=y.device) - \
            starts[group[order]]
        num_rounds = int(counts.max())
        # (identities, rounds, features): round r of identity g
        xs = x.new_zeros(ids.numel(), num_rounds, x.shape[1])
        xs[group, rank] = x
        m = self.momentum
        rows = self.lut.index_select(0, ids)
        if num_rounds == 1:
            rows = F.normalize(m * rows + (1.0 - m) * xs[:, 0], dim=1)
        else:
            present = torch.zeros(
                ids.numel(), num_rounds, 1, dtype=torch.bool, device=x.device)
            present[group, rank] = True
            for r in range(num_rounds):
                rows = torch.where(
                    present[:, r],
                    F.normalize(m * rows + (1.0 - m) * xs[:, r], dim=1), rows)
        self.lut.index_copy_(0, ids, rows)

    @torch.no_grad()
    def _update_cq(self, unlabeled: Tensor) -> None:
        """Write ``unlabeled`` into the queue from its head on, circularly
        (only the newest ``num_cq_size`` survive a wrap), and move the head
        on by their number."""
        n, size = unlabeled.shape[0], self.num_cq_size
        if n == 0 or size == 0:
            return
        k = min(n, size)
        # slots head + n - k .. head + n - 1 (mod size), on the device
        idx = (self.cq_head +
               (n - k) + torch.arange(k, device=unlabeled.device)) % size
        self.cq.index_copy_(0, idx, unlabeled[n - k:])
        self.cq_head.copy_((self.cq_head + n) % size)

    def forward(self, embeddings: Tensor, person_ids: Tensor) -> Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.num_features:
            raise ValueError(f'OIMLoss expects (N, {self.num_features}) '
                             f'embeddings, got {tuple(embeddings.shape)}')
        person_ids = person_ids.to(embeddings.device).long()
        if person_ids.shape != embeddings.shape[:1]:
            raise ValueError('OIMLoss: one person id per embedding expected, '
                             f'got {tuple(person_ids.shape)} ids for '
                             f'{embeddings.shape[0]} embeddings')
        if (person_ids >= self.num_pids).any():
            raise ValueError(
                f'OIMLoss: person id {int(person_ids.max())} does not fit the '
                f'lookup table of {self.num_pids} identities (num_pids); ids '
                'must be 0..num_pids-1')
        # cat copies the tables, so the in-place update below is safe
        table = torch.cat([self.lut, self.cq]).to(embeddings.dtype)
        logits = self.scale * embeddings @ table.t()
        labeled = person_ids >= 0
        if labeled.any():
            loss = F.cross_entropy(logits[labeled], person_ids[labeled])
        else:
            loss = embeddings.sum() * 0.0
        if self.training:
            self.update(*self._gather(embeddings, person_ids))
        return self.loss_weight * loss
