# Copyright (c) mmpsearch contributors. All rights reserved.
from typing import Dict, List

import torch
from mmdet.models.losses import FocalLoss, GIoULoss, L1Loss
from mmdet.models.task_modules.assigners import (BBoxL1Cost, FocalLossCost,
                                                 HungarianAssigner, IoUCost)
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
    (averaged over processes under DDP).

    Args:
        num_classes (int): Foreground classes (1: person). Defaults to 1.
        assigner (dict): The matcher.
        loss_cls, loss_bbox, loss_giou, loss_reid (dict): The four terms.
    """

    def __init__(
        self,
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
        init_cfg=None
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_giou = MODELS.build(loss_giou)
        self.loss_reid = MODELS.build(loss_reid)

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
        pred = InstanceData(
            scores=cls_scores.detach(), bboxes=bboxes.detach())
        gt = InstanceData(
            bboxes=_box_tensor(gt_instances.bboxes),
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
        """
        num_imgs, num_preds = cls_scores.shape[:2]
        labels_all, pos_pred, pos_gt_boxes, pos_pred_embeds, pos_gt_embeds, \
            factors = [], [], [], [], [], []
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
            labels = torch.full((num_preds, ), self.num_classes,
                                dtype=torch.long, device=cls_scores.device)
            labels[pos] = gt.labels[inds[pos]].to(labels.device)
            labels_all.append(labels)
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
        num_pos = reduce_mean(
            cls_scores.new_tensor(float(len(pos_pred)))).clamp(min=1.0).item()

        losses = dict()
        losses['loss_cls'] = self.loss_cls(
            cls_scores.reshape(-1, cls_scores.shape[-1]),
            torch.cat(labels_all),
            avg_factor=num_pos)
        if len(pos_pred) > 0:
            losses['loss_bbox'] = self.loss_bbox(
                pos_pred / factors, pos_gt_boxes / factors,
                avg_factor=num_pos)
            losses['loss_giou'] = self.loss_giou(
                pos_pred, pos_gt_boxes, avg_factor=num_pos)
        else:
            # No person in the batch: zeros that keep the graph connected.
            losses['loss_bbox'] = bboxes.sum() * 0.0
            losses['loss_giou'] = bboxes.sum() * 0.0
        losses['loss_reid'] = self.loss_reid(
            torch.cat(pos_pred_embeds), torch.cat(pos_gt_embeds),
            avg_factor=num_pos)
        return losses


def _box_tensor(boxes) -> Tensor:
    """mmdet ``HorizontalBoxes`` or a tensor -> (n, 4) tensor."""
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes
