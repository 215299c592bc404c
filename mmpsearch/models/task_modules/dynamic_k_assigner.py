# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffusionDet's dynamic-k (SimOTA-like) matcher as an mmdet assigner."""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.models.task_modules.assigners import (AssignResult, BaseAssigner,
                                                 SimOTAAssigner)
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData
from torch import Tensor

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
    prediction's centre is not both inside the box and inside its centre
    region, plus ``outside_penalty`` where it is in neither for any ground
    truth. The centre region (``center_prior``) is, around the box centre,
    ``center_radius`` times the box's own width and height
    (``'gt_size'``: DiffusionDet's public matcher, ``get_in_boxes_info``,
    so it holds the whole box) or ``center_radius * stride`` pixels
    (``'stride'``: SimOTA's prior, reused from mmdet's ``SimOTAAssigner``
    with the predicted box centres as points of stride ``stride``; smaller
    than the box for persons taller than ``2 * center_radius * stride``).
    A prediction chosen by several ground
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
        center_radius (float): The centre region's half-size, in box sizes
            (``'gt_size'``) or strides (``'stride'``). Defaults to 2.5.
        center_prior (str): ``'gt_size'`` (DiffusionDet's) or ``'stride'``.
            Defaults to ``'gt_size'``. On the synthetic scenes (persons at
            most 122 px tall) both assign every training proposal alike.
        stride (float): Stride of the ``'stride'`` centre prior in pixels.
            Defaults to 32.
        candidate_topk (int): IoUs summed for k. Defaults to 5.
        in_box_center_penalty (float): Defaults to 100.
        outside_penalty (float): Defaults to 10000.
    """

    def __init__(self,
                 match_costs: Union[List[dict], dict],
                 center_radius: float = 2.5,
                 center_prior: str = 'gt_size',
                 stride: float = 32.0,
                 candidate_topk: int = 5,
                 in_box_center_penalty: float = 100.0,
                 outside_penalty: float = 10000.0) -> None:
        if isinstance(match_costs, dict):
            match_costs = [match_costs]
        self.match_costs = [TASK_UTILS.build(c) for c in match_costs]
        if center_prior not in ('stride', 'gt_size'):
            raise ValueError(f'{type(self).__name__}: center_prior '
                             f'{center_prior!r}, expected \'stride\' or '
                             '\'gt_size\'')
        self.center_prior = center_prior
        self.center_radius = float(center_radius)
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
        labels = torch.full((num_preds, ), -1, dtype=torch.long, device=device)
        if num_gts == 0 or num_preds == 0:
            return AssignResult(num_gts, gt_inds, None, labels=labels)

        cost = torch.stack([
            c(pred_instances=pred_instances,
              gt_instances=gt_instances,
              img_meta=img_meta) for c in self.match_costs
        ]).sum(0)
        pred_boxes = pred_instances.bboxes
        gt_boxes = gt_instances.bboxes
        in_any, in_both = self._in_box_and_centre(pred_boxes, gt_boxes)
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
        match = torch.zeros_like(
            cost, dtype=torch.bool).scatter_(
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

    def _in_box_and_centre(self, pred_boxes: Tensor,
                           gt_boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """(n,) whether a prediction's centre is in any box or centre
        region, and (n, g) whether it is in both of a ground truth's."""
        centres = (pred_boxes[:, :2] + pred_boxes[:, 2:]) / 2
        if self.center_prior == 'stride':
            priors = torch.cat(
                [centres,
                 centres.new_full((len(centres), 2), self.stride)],
                dim=1)
            in_any, in_both = \
                self._center_prior.get_in_gt_and_in_center_info(
                    priors, gt_boxes)
            # in_both has a row per prediction of in_any only: spread it
            in_both = in_both.new_zeros(
                (len(centres), len(gt_boxes))).masked_scatter_(
                    in_any[:, None].expand(-1, len(gt_boxes)), in_both)
            return in_any, in_both
        # hand-written: mmdet's SimOTA helper has only the stride radius
        c = centres[:, None]  # (n, 1, 2)
        in_box = ((c > gt_boxes[None, :, :2]) &
                  (c < gt_boxes[None, :, 2:])).all(-1)
        gt_c = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        radius = self.center_radius * (gt_boxes[:, 2:] - gt_boxes[:, :2])
        in_centre = ((c - gt_c[None]).abs() < radius[None]).all(-1)
        return (in_box | in_centre).any(1), in_box & in_centre
