# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffusionDet's dynamic-k (SimOTA-like) matcher as an mmdet assigner."""
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from mmdet.models.task_modules.assigners import (AssignResult, BaseAssigner,
                                                 SimOTAAssigner)
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData

from mmpsearch.registry import TASK_UTILS


@TASK_UTILS.register_module()
class DiffusionDetDynamicKAssigner(BaseAssigner):
    """One-to-many matching of DiffusionDet (Chen et al., "DiffusionDet:
    Diffusion Model for Object Detection", ICCV 2023, Sec. 4.3; its public
    matcher), which PSDiff's paper replaces by one-to-one Hungarian matching
    (Sec. III-C).

    For every ground truth ``k = clamp(int(sum of its top-``candidate_topk``
    IoUs with the predictions), min=1)`` predictions of lowest cost are
    positives; the cost is the weighted sum of ``match_costs`` (as for
    mmdet's ``HungarianAssigner``) plus ``in_box_center_penalty`` where the
    prediction's centre is not both inside the box and within
    ``center_radius * stride`` of its centre, plus ``outside_penalty``
    where it is in neither for any ground truth (SimOTA's centre prior,
    reused from mmdet's ``SimOTAAssigner`` with the predicted box centres as
    points of stride ``stride``). A prediction chosen by several ground
    truths keeps the cheapest; a ground truth left without any prediction
    then takes its cheapest unassigned one, so every person trains at least
    one proposal.

    The ground truths are matched together, without a host sync per ground
    truth: one ``topk`` over all of them (k <= ``candidate_topk``, the k
    cheapest being the first k of the ``candidate_topk`` cheapest), and one
    host read per image for the ground truths left without a prediction.
    (Where costs are exactly equal, which of them is taken is
    ``torch.topk``'s choice, as in the public matcher.)

    Written here because mmdet ships DiffusionDet only as a project outside
    the wheel; with several positives per person, a single denoising layer
    learns to score and place boxes much sooner than with one (NMS removes
    the duplicates at test time).

    Args:
        match_costs (dict | list[dict]): As ``HungarianAssigner``'s.
        center_radius (float): SimOTA's radius in strides. Defaults to 2.5.
        stride (float): Stride of the centre prior in pixels. Defaults to
            32 (DiffusionDet).
        candidate_topk (int): IoUs summed for k. Defaults to 5.
        in_box_center_penalty (float): Defaults to 100.
        outside_penalty (float): Defaults to 10000.
    """

    def __init__(self,
                 match_costs: Union[List[dict], dict],
                 center_radius: float = 2.5,
                 stride: float = 32.0,
                 candidate_topk: int = 5,
                 in_box_center_penalty: float = 100.0,
                 outside_penalty: float = 10000.0) -> None:
        if isinstance(match_costs, dict):
            match_costs = [match_costs]
        self.match_costs = [TASK_UTILS.build(c) for c in match_costs]
        self.stride = float(stride)
        self.candidate_topk = int(candidate_topk)
        self.in_box_center_penalty = float(in_box_center_penalty)
        self.outside_penalty = float(outside_penalty)
        # Only its centre-prior helper is used.
        self._center_prior = SimOTAAssigner(center_radius=center_radius)

    def assign(self,
               pred_instances: InstanceData,
               gt_instances: InstanceData,
               img_meta: Optional[dict] = None,
               **kwargs) -> AssignResult:
        """``pred_instances``: ``scores`` (n, K) logits and ``bboxes``
        (n, 4) x1y1x2y2; ``gt_instances``: ``bboxes`` and ``labels``.
        Returns mmdet's ``AssignResult`` (``gt_inds`` 1-based, 0 for
        background)."""
        gt_labels = gt_instances.labels
        num_gts, num_preds = len(gt_instances), len(pred_instances)
        device = gt_labels.device
        gt_inds = torch.zeros(num_preds, dtype=torch.long, device=device)
        labels = torch.full((num_preds, ), -1, dtype=torch.long,
                            device=device)
        if num_gts == 0 or num_preds == 0:
            return AssignResult(num_gts, gt_inds, None, labels=labels)

        cost = torch.stack([
            c(pred_instances=pred_instances,
              gt_instances=gt_instances,
              img_meta=img_meta) for c in self.match_costs
        ]).sum(0)
        pred_boxes = pred_instances.bboxes
        gt_boxes = gt_instances.bboxes
        centres = (pred_boxes[:, :2] + pred_boxes[:, 2:]) / 2
        priors = torch.cat(
            [centres, centres.new_full((num_preds, 2), self.stride)], dim=1)
        in_any, in_both = self._center_prior.get_in_gt_and_in_center_info(
            priors, gt_boxes)
        # in_both has a row per prediction of in_any only: spread it out
        in_both = torch.zeros_like(cost, dtype=torch.bool).masked_scatter_(
            in_any[:, None].expand(num_preds, num_gts), in_both)
        penalty = torch.where(
            in_any[:, None],
            self.in_box_center_penalty * (~in_both).to(cost.dtype),
            self.in_box_center_penalty + self.outside_penalty)
        cost = cost + penalty

        ious = bbox_overlaps(pred_boxes, gt_boxes)  # (n, g)
        topk = min(self.candidate_topk, num_preds)
        # 1 <= k <= topk (a sum of topk IoUs): each ground truth's k
        # cheapest predictions are the first k of its topk cheapest
        ks = ious.topk(topk, dim=0).values.sum(0).int().clamp(1, topk)
        cheapest = cost.topk(topk, dim=0, largest=False).indices  # (topk, g)
        match = torch.zeros_like(cost, dtype=torch.bool).scatter_(
            0, cheapest,
            torch.arange(topk, device=device)[:, None] < ks[None])
        # a prediction chosen by several ground truths keeps the cheapest
        best = F.one_hot(cost.argmin(1), num_gts).bool()
        match = torch.where((match.sum(1) > 1)[:, None], best, match)
        # A ground truth that lost every prediction takes its cheapest
        # still-unassigned one, in order, while there are any: one host
        # sync for the list and the number of free predictions.
        lost = (~match.any(0)).nonzero()[:, 0]
        num_free = num_preds - match.any(1).sum()
        *lost, num_free = torch.cat([lost, num_free[None]]).tolist()
        for g in lost[:num_free]:
            c = cost[:, g].masked_fill(match.any(1), float('inf'))
            match[c.argmin(), g] = True

        pos = match.any(1)
        inds = match.float().argmax(1)  # 0 where not pos
        gt_inds = torch.where(pos, inds + 1, gt_inds)
        labels = torch.where(pos, gt_labels[inds], labels)
        return AssignResult(num_gts, gt_inds, None, labels=labels)
