# Copyright (c) mmpsearch contributors. All rights reserved.
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss, GIoULoss, L1Loss
from mmdet.models.task_modules.assigners import (BBoxL1Cost, FocalLossCost,
                                                 HungarianAssigner, IoUCost)
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS
from .reid_l2_loss import ReIDL2Loss


@MODELS.register_module()
class DualDenoisingCriterion(BaseModule):
    """Set-prediction loss of PSDiff (eq. 13-14).

    Predictions of the Collaborative Denoising Layer are matched one-to-one
    to the ground truth by the Hungarian algorithm (mmdet's
    ``HungarianAssigner``) on
    ``lambda_cls * focal + lambda_L1 * L1 + lambda_giou * GIoU`` costs; the
    loss is ``lambda_cls * L_focal + lambda_L1 * L_L1 + lambda_giou * L_GIoU
    + lambda_reid * sum ||e_0 - ê_0||_2`` with lambda = 2 / 5 / 2 / 5.
    Unmatched predictions are background for the focal loss only. The L1
    term is on boxes normalised by the image size (x1y1x2y2), the GIoU term
    on pixel boxes, the ReID term against the teacher embeddings of the
    matched ground truth (labeled and unlabeled persons alike).

    Every term is averaged over the number of matched pairs in the batch
    (averaged over processes under DDP); with ``cls_pos_iou_thr`` the class
    term is averaged over its own positives.

    **Mixed precision.** Matching and every term run in fp32, with autocast
    off, whatever the dtype of the predictions (``--amp``): in fp16 mmdet's
    ``FocalLossCost`` is -inf past a logit of 8.3 (the Hungarian solver
    then refuses the matrix, the dynamic-k matcher picks other
    proposals), and mmcv's half ``sigmoid_focal_loss`` kernel returns
    NaN / inf there. mmdet's ``FocalLoss`` gets one-hot targets, which
    select its PyTorch implementation on every device, so no compiled
    mmcv op runs.

    **Classification targets.** The matcher picks one (Hungarian) or a few
    (dynamic-k) of the proposals that cover a person; the others, often
    near-copies of them, are background. A proposal that is positive in a
    fraction q of the cases its features cannot tell apart has the
    focal-loss optimum of about 0.2-0.4 for q = 0.1-0.5, under the 0.5
    score threshold of the person-search protocol (DETR-style detectors
    are scored by COCO AP, which ignores the threshold). Two options give
    the class branch targets it can read from a box's features:

    - ``cls_pos_iou_thr`` (e.g. 0.5): every prediction whose box overlaps
      a ground truth with IoU >= the threshold is a positive of the class
      term too (the rule of Faster R-CNN's RoI head); the matcher still
      alone decides the box and ReID terms. NMS removes the duplicates at
      test time.
    - ``cls_iou_target=True``: the target of a positive is the IoU of its
      (detached) box with its ground truth instead of 1, scored by mmdet's
      ``QualityFocalLoss`` (Li et al., "Generalized Focal Loss", NeurIPS
      2020, eq. 5), whose optimum is the target itself: a score then reads
      as the expected IoU, so 0.5 means what the protocol's threshold
      means.

    Args:
        num_classes (int): Foreground classes (1: person). Defaults to 1.
        assigner (dict): The matcher.
        loss_cls, loss_bbox, loss_giou, loss_reid (dict): The four terms.
            With ``cls_iou_target`` ``loss_cls`` must take an
            ``(labels, scores)`` target (``QualityFocalLoss``).
        cls_pos_iou_thr (float, optional): See above. Defaults to None
            (only the matched predictions are positives: the paper).
        cls_iou_target (bool): See above. Defaults to False (the paper's
            0 / 1 focal-loss targets).
    """

    def __init__(self,
                 num_classes: int = 1,
                 assigner: dict = dict(
                     type=HungarianAssigner,
                     match_costs=[
                         dict(type=FocalLossCost, weight=2.0),
                         dict(type=BBoxL1Cost, weight=5.0, box_format='xyxy'),
                         dict(type=IoUCost, iou_mode='giou', weight=2.0)
                     ]),
                 loss_cls: dict = dict(
                     type=FocalLoss,
                     use_sigmoid=True,
                     gamma=2.0,
                     alpha=0.25,
                     loss_weight=2.0),
                 loss_bbox: dict = dict(type=L1Loss, loss_weight=5.0),
                 loss_giou: dict = dict(type=GIoULoss, loss_weight=2.0),
                 loss_reid: dict = dict(type=ReIDL2Loss, loss_weight=5.0),
                 cls_pos_iou_thr: Optional[float] = None,
                 cls_iou_target: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if cls_pos_iou_thr is not None and not 0 < cls_pos_iou_thr <= 1:
            raise ValueError('DualDenoisingCriterion: cls_pos_iou_thr must '
                             f'be in (0, 1] or None, got {cls_pos_iou_thr}')
        self.num_classes = num_classes
        self.cls_pos_iou_thr = cls_pos_iou_thr
        self.cls_iou_target = bool(cls_iou_target)
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_giou = MODELS.build(loss_giou)
        self.loss_reid = MODELS.build(loss_reid)
        if self.cls_iou_target and type(
                self.loss_cls).__name__ not in ('QualityFocalLoss', ):
            raise ValueError(
                'DualDenoisingCriterion: cls_iou_target=True needs a class '
                'loss with soft (labels, IoU) targets, e.g. mmdet\'s '
                f'QualityFocalLoss; got {type(self.loss_cls).__name__}')

    def match(self, cls_scores: Tensor, bboxes: Tensor,
              gt_instances: InstanceData, img_meta: dict) -> Tensor:
        """Hungarian matching of one image.

        Args:
            cls_scores (Tensor): (N, K) class logits.
            bboxes (Tensor): (N, 4) predicted boxes, x1y1x2y2 pixels.
            gt_instances (InstanceData): ``bboxes`` (n, 4) and ``labels``.
            img_meta (dict): Needs ``img_shape``.

        Returns:
            Tensor: (N,) index of the matched ground truth, -1 if none.
        """
        # fp32 costs: fp16 focal costs are -inf past a logit of 8.3
        pred = InstanceData(
            scores=cls_scores.detach().float(), bboxes=bboxes.detach().float())
        gt = InstanceData(
            bboxes=_box_tensor(gt_instances.bboxes).float(),
            labels=gt_instances.labels)
        result = self.assigner.assign(pred, gt, img_meta=img_meta)
        return result.gt_inds - 1

    def forward(self, cls_scores: Tensor, bboxes: Tensor, embeds: Tensor,
                batch_gt_instances: List[InstanceData],
                batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """
        Args:
            cls_scores (Tensor): (B, N, K) class logits.
            bboxes (Tensor): (B, N, 4) predicted b̂_0, x1y1x2y2 pixels.
            embeds (Tensor): (B, N, D) predicted ê_0.
            batch_gt_instances (list[InstanceData]): ``bboxes``, ``labels``
                and ``teacher_embeds`` (n, D) of every image.
            batch_img_metas (list[dict]): ``img_shape`` of every image.

        Returns:
            dict[str, Tensor]: ``loss_cls``, ``loss_bbox``, ``loss_giou``
            and ``loss_reid``, fp32 whatever the predictions' dtype.
        """
        # Everything in fp32 with autocast off (see the class docstring).
        with torch.autocast(cls_scores.device.type, enabled=False):
            return self._forward(cls_scores.float(), bboxes.float(),
                                 embeds.float(), batch_gt_instances,
                                 batch_img_metas)

    def _forward(self, cls_scores: Tensor, bboxes: Tensor, embeds: Tensor,
                 batch_gt_instances: List[InstanceData],
                 batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """:meth:`forward` on fp32 predictions."""
        num_imgs, num_preds = cls_scores.shape[:2]
        labels_all, pos_pred, pos_gt_boxes, pos_pred_embeds, pos_gt_embeds, \
            factors, cls_labels, cls_quality = [], [], [], [], [], [], [], []
        for i in range(num_imgs):
            gt = batch_gt_instances[i]
            if 'teacher_embeds' not in gt:
                raise KeyError(
                    'gt_instances.teacher_embeds is missing: the training '
                    'pipeline needs DualNoiseGenerator before '
                    'PackPersonSearchInputs')
            gt_boxes = _box_tensor(gt.bboxes).to(bboxes)
            if len(gt.teacher_embeds) != len(gt_boxes):
                raise ValueError(
                    f'image {batch_img_metas[i].get("img_id")}: '
                    f'{len(gt_boxes)} boxes but {len(gt.teacher_embeds)} '
                    'teacher embeddings')
            inds = self.match(cls_scores[i], bboxes[i], gt, batch_img_metas[i])
            pos = inds >= 0
            labels = torch.full((num_preds, ),
                                self.num_classes,
                                dtype=torch.long,
                                device=cls_scores.device)
            labels[pos] = gt.labels[inds[pos]].to(labels.device)
            labels_all.append(labels)
            if self.cls_pos_iou_thr is not None or self.cls_iou_target:
                c_labels, quality = self._cls_targets(bboxes[i].detach(),
                                                      gt_boxes, gt.labels,
                                                      inds, labels)
                cls_labels.append(c_labels)
                cls_quality.append(quality)
            pos_pred.append(bboxes[i][pos])
            pos_gt_boxes.append(gt_boxes[inds[pos]])
            pos_pred_embeds.append(embeds[i][pos])
            pos_gt_embeds.append(gt.teacher_embeds.to(embeds)[inds[pos]])
            img_h, img_w = batch_img_metas[i]['img_shape'][:2]
            factors.append(
                bboxes.new_tensor([img_w, img_h, img_w,
                                   img_h]).expand(int(pos.sum()), 4))

        pos_pred = torch.cat(pos_pred)
        pos_gt_boxes = torch.cat(pos_gt_boxes)
        factors = torch.cat(factors)
        num_pos = reduce_mean(cls_scores.new_tensor(float(
            len(pos_pred)))).clamp(min=1.0).item()

        losses = dict()
        flat_scores = cls_scores.reshape(-1, cls_scores.shape[-1])
        if cls_labels:
            cls_labels = torch.cat(cls_labels)
            num_cls_pos = reduce_mean(
                (cls_labels
                 < self.num_classes).sum().float()).clamp(min=1.0).item()
            target = (cls_labels, torch.cat(cls_quality)) \
                if self.cls_iou_target else self._focal_target(cls_labels)
            losses['loss_cls'] = self.loss_cls(
                flat_scores, target, avg_factor=num_cls_pos)
        else:
            losses['loss_cls'] = self.loss_cls(
                flat_scores,
                self._focal_target(torch.cat(labels_all)),
                avg_factor=num_pos)
        if len(pos_pred) > 0:
            losses['loss_bbox'] = self.loss_bbox(
                pos_pred / factors, pos_gt_boxes / factors, avg_factor=num_pos)
            losses['loss_giou'] = self.loss_giou(
                pos_pred, pos_gt_boxes, avg_factor=num_pos)
        else:
            # No person in the batch: zeros that keep the graph connected.
            losses['loss_bbox'] = bboxes.sum() * 0.0
            losses['loss_giou'] = bboxes.sum() * 0.0
        losses['loss_reid'] = self.loss_reid(
            torch.cat(pos_pred_embeds),
            torch.cat(pos_gt_embeds),
            avg_factor=num_pos)
        return losses

    def _focal_target(self, labels: Tensor) -> Tensor:
        """One-hot targets for mmdet's sigmoid ``FocalLoss``.

        With (N,) labels mmdet runs mmcv's compiled ``sigmoid_focal_loss``
        on CUDA (NaN / inf in half precision, missing from a CPU-only mmcv
        build); with (N, K) one-hot targets it runs its PyTorch
        ``py_sigmoid_focal_loss`` everywhere, as it does on the CPU with
        the same one-hot encoding (background ``num_classes`` -> all 0).
        Other losses get the labels as they are.
        """
        loss = self.loss_cls
        if not (isinstance(loss, FocalLoss) and loss.use_sigmoid
                and not loss.activated):
            return labels
        return F.one_hot(labels, self.num_classes + 1)[:, :self.num_classes]

    def _cls_targets(self, bboxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                     inds: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Class-term labels and IoU targets of one image.

        Args:
            bboxes (Tensor): (N, 4) predicted boxes (detached), pixels.
            gt_boxes (Tensor): (n, 4) ground truth, pixels.
            gt_labels (Tensor): (n,) their labels.
            inds (Tensor): (N,) the matcher's ground truth per prediction,
                -1 for none.
            labels (Tensor): (N,) the matcher's labels (``num_classes``
                for background).

        Returns:
            tuple[Tensor, Tensor]: (N,) labels (``num_classes`` for
            background) and (N,) IoU with the assigned ground truth (0 for
            background).
        """
        labels = labels.clone()
        quality = bboxes.new_zeros(len(bboxes))
        if len(gt_boxes) == 0:
            return labels, quality
        ious = bbox_overlaps(bboxes, gt_boxes)  # (N, n)
        best_iou, best = ious.max(dim=1)
        # A matched prediction keeps its ground truth; the IoU rule adds the
        # unmatched ones that overlap some person enough.
        assigned = torch.where(inds >= 0, inds, best)
        if self.cls_pos_iou_thr is not None:
            extra = (inds < 0) & (best_iou >= self.cls_pos_iou_thr)
            labels[extra] = gt_labels[best[extra]].to(labels)
        pos = labels < self.num_classes
        quality[pos] = ious[pos, assigned[pos]]
        return labels, quality


def _box_tensor(boxes) -> Tensor:
    """mmdet ``HorizontalBoxes`` or a tensor -> (n, 4) tensor."""
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes
