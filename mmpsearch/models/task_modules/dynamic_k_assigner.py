# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffusionDet's dynamic-k (SimOTA-like) matcher as an mmdet assigner."""
from typing import List, Optional, Union

import torch
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
        penalty = cost.new_full((num_preds, num_gts),
                                self.in_box_center_penalty)
        penalty[in_any] = self.in_box_center_penalty * (~in_both).float()
        penalty[~in_any] += self.outside_penalty
        cost = cost + penalty

        ious = bbox_overlaps(pred_boxes, gt_boxes)  # (n, g)
        topk = min(self.candidate_topk, num_preds)
        ks = ious.topk(topk, dim=0).values.sum(0).int().clamp(min=1)
        match = torch.zeros_like(cost, dtype=torch.bool)
        for g in range(num_gts):
            match[cost[:, g].topk(int(ks[g]), largest=False).indices, g] = True
        multi = match.sum(1) > 1
        if multi.any():
            best = cost[multi].argmin(1)
            match[multi] = False
            match[multi.nonzero()[:, 0], best] = True
        # A ground truth that lost every prediction takes its cheapest
        # still-unassigned one.
        for g in (~match.any(0)).nonzero()[:, 0].tolist():
            free = ~match.any(1)
            if not free.any():
                break
            c = cost[:, g].masked_fill(~free, float('inf'))
            match[c.argmin(), g] = True

        pos = match.any(1)
        gt_inds[pos] = match[pos].float().argmax(1) + 1
        labels[pos] = gt_labels[gt_inds[pos] - 1]
        return AssignResult(num_gts, gt_inds, None, labels=labels)
