# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffusionDet's dynamic-k matcher on hand cases."""
import pytest
import torch
from mmdet.models.task_modules.assigners import (BBoxL1Cost, FocalLossCost,
                                                 IoUCost)
from mmengine.structures import InstanceData

from mmpsearch.models.task_modules import DiffusionDetDynamicKAssigner

pytestmark = pytest.mark.usefixtures('one_torch_thread')
META = dict(img_shape=(240, 320))


def _assigner(**kwargs):
    return DiffusionDetDynamicKAssigner([
        dict(type=FocalLossCost, weight=2.0),
        dict(type=BBoxL1Cost, weight=5.0, box_format='xyxy'),
        dict(type=IoUCost, iou_mode='giou', weight=2.0)
    ], **kwargs)


def _gt(boxes):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes),
                                                         dtype=torch.long))


def _pred(boxes, scores=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    if scores is None:
        scores = torch.zeros(len(boxes), 1)
    return InstanceData(bboxes=boxes, scores=scores)


def test_k_follows_the_summed_ious():
    gt = _gt([[10, 10, 50, 90], [100, 10, 140, 90]])
    pred = _pred([
        [11, 11, 50, 88],  # IoU 0.93 with person 1
        [9, 12, 52, 91],  # 0.88
        [12, 8, 48, 85],  # 0.80
        [101, 12, 139, 90],  # 0.95 with person 2
        [200, 200, 220, 230],  # far from both
        [60, 10, 90, 40],  # between them, overlaps neither
    ])
    res = _assigner().assign(pred, gt, img_meta=META)
    # person 1: top IoUs sum to 2.6 -> k = 2, its two cheapest proposals;
    # person 2: k = 1; the rest background.
    assert res.gt_inds.tolist() == [1, 1, 0, 2, 0, 0]
    assert res.labels.tolist() == [0, 0, -1, 0, -1, -1]


def test_one_to_one_when_ious_are_low():
    gt = _gt([[10, 10, 50, 90]])
    pred = _pred([[30, 30, 70, 110], [0, 0, 20, 20], [200, 100, 240, 180]])
    res = _assigner().assign(pred, gt, img_meta=META)
    assert res.gt_inds.tolist() == [1, 0, 0]


def test_shared_proposal_goes_to_the_cheaper_person_and_nobody_is_left():
    # One proposal between two overlapping people; both pick it (k = 1);
    # it stays with the closer one and the other takes its next cheapest.
    gt = _gt([[10, 10, 50, 90], [14, 10, 54, 90]])
    pred = _pred([[11, 10, 51, 90], [150, 100, 190, 180]])
    res = _assigner().assign(pred, gt, img_meta=META)
    assert res.gt_inds.tolist() == [1, 2]


def test_scores_break_ties():
    gt = _gt([[10, 10, 50, 90]])
    box = [10, 10, 50, 90]
    pred = _pred([box, box], scores=torch.tensor([[-4.0], [4.0]]))
    res = _assigner(candidate_topk=1).assign(pred, gt, img_meta=META)
    # k = 1 (one IoU of 1.0): the confident proposal is the cheaper one
    assert res.gt_inds.tolist() == [0, 1]


def test_no_ground_truth_is_all_background():
    empty = InstanceData(
        bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    res = _assigner().assign(_pred([[0, 0, 10, 10]]), empty, img_meta=META)
    assert res.gt_inds.tolist() == [0]
