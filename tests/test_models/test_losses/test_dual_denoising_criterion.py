# Copyright (c) mmpsearch contributors. All rights reserved.
"""DualDenoisingCriterion's class targets: the IoU positive rule and the
IoU-aware (Quality Focal Loss) targets that calibrate PSDiff's scores to
the protocol's 0.5 threshold."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss, QualityFocalLoss
from mmdet.models.losses.gfocal_loss import quality_focal_loss
from mmdet.structures.bbox import HorizontalBoxes, bbox_overlaps
from mmengine.structures import InstanceData

from mmpsearch.models.losses import DualDenoisingCriterion

D = 8
META = dict(img_shape=(100, 100))
QFL = dict(type=QualityFocalLoss, use_sigmoid=True, beta=2.0, loss_weight=2.0)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _gt(boxes):
    return InstanceData(
        bboxes=HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32)),
        labels=torch.zeros(len(boxes), dtype=torch.long),
        teacher_embeds=F.normalize(torch.randn(len(boxes), D), dim=-1))


# One person; p0 exact, p1 a near-copy (IoU 0.82), p2 a half-overlapping
# box (IoU 0.33), p3 far away.
GT = [[10., 10, 40, 90]]
PREDS = torch.tensor([[10., 10, 40, 90], [12, 12, 42, 88], [25, 10, 55, 90],
                      [60, 10, 90, 90]])


def _loss(crit, logits):
    return crit(logits[None], PREDS[None].clone(), torch.zeros(1, 4, D),
                [_gt(GT)], [META])


def test_iou_positive_rule_labels_near_copies():
    logits = torch.zeros(4, 1)
    paper = DualDenoisingCriterion()
    rule = DualDenoisingCriterion(cls_pos_iou_thr=0.5)
    focal = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0)
    # the paper: Hungarian gives p0 only; the rule adds p1 (IoU 0.82 >=
    # 0.5) but not p2 (0.33); the class term is averaged over its positives
    want_paper = focal(logits, torch.tensor([0, 1, 1, 1]), avg_factor=1)
    want_rule = focal(logits, torch.tensor([0, 0, 1, 1]), avg_factor=2)
    assert _loss(paper, logits)['loss_cls'].item() == pytest.approx(
        want_paper.item(), rel=1e-5)
    assert _loss(rule, logits)['loss_cls'].item() == pytest.approx(
        want_rule.item(), rel=1e-5)
    # the box and ReID terms still see the matcher's single positive
    assert _loss(rule, logits)['loss_reid'].item() == pytest.approx(
        _loss(paper, logits)['loss_reid'].item(), rel=1e-5)


def test_iou_targets_are_quality_focal_loss_on_ious():
    logits = torch.randn(4, 1)
    crit = DualDenoisingCriterion(
        loss_cls=QFL, cls_pos_iou_thr=0.5, cls_iou_target=True)
    ious = bbox_overlaps(PREDS, torch.tensor(GT))[:, 0]
    assert 0.8 < ious[1] < 0.85 and 0.3 < ious[2] < 0.35
    labels = torch.tensor([0, 0, 1, 1])  # 1 = background
    score = torch.where(labels == 0, ious, torch.zeros(4))
    want = 2.0 * quality_focal_loss(
        logits, (labels, score), beta=2.0, reduction='none').sum()
    got = _loss(crit, logits)['loss_cls']
    assert got.item() == pytest.approx(want.item() / 2, rel=1e-5)


def test_iou_targets_without_the_rule_use_the_matched_ious():
    # a matched prediction far from its person gets its (small) IoU, not 1
    crit = DualDenoisingCriterion(loss_cls=QFL, cls_iou_target=True)
    preds = torch.tensor([[[20., 30, 50, 110]]])  # IoU 0.38 with the GT
    labels, quality = crit._cls_targets(preds[0], torch.tensor(GT),
                                        torch.zeros(1, dtype=torch.long),
                                        torch.tensor([0]), torch.tensor([0]))
    assert labels.tolist() == [0]
    assert quality.item() == pytest.approx(
        bbox_overlaps(preds[0], torch.tensor(GT)).item(), rel=1e-5)


def _fit_scores(crit, steps=300):
    """Free logits of 8 near-duplicates of one person and 8 far boxes,
    fitted to the criterion: the scores it drives them to."""
    torch.manual_seed(0)
    gt = [[20., 10, 50, 90]]
    jitter = torch.randn(8, 4) * 1.0
    dup = torch.tensor(gt) + jitter
    far = torch.tensor([[60., 10, 90, 90]]) + torch.randn(8, 4)
    boxes = torch.cat([dup, far])[None]
    logits = torch.zeros(1, 16, 1, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        # the matcher re-picks each step; near-duplicates are tied, so the
        # one it picks depends on the current scores, as in training
        losses = crit(logits, boxes, torch.zeros(1, 16, D), [_gt(gt)], [META])
        opt.zero_grad()
        losses['loss_cls'].backward()
        opt.step()
    return logits.detach().sigmoid()[0, :, 0]


def test_iou_targets_calibrate_duplicates_above_the_threshold():
    paper = _fit_scores(DualDenoisingCriterion())
    calibrated = _fit_scores(
        DualDenoisingCriterion(
            loss_cls=QFL, cls_pos_iou_thr=0.5, cls_iou_target=True))
    # one-to-one matching leaves most near-duplicates of a person under the
    # protocol's 0.5; IoU-aware targets put all of them above it, near
    # their IoU, and the far boxes stay near 0
    assert paper[:8].median() < 0.5
    assert calibrated[:8].min() > 0.5
    assert calibrated[8:].max() < 0.1


def test_bad_class_target_options():
    with pytest.raises(ValueError, match='cls_pos_iou_thr'):
        DualDenoisingCriterion(cls_pos_iou_thr=1.5)
    with pytest.raises(ValueError, match='QualityFocalLoss'):
        DualDenoisingCriterion(cls_iou_target=True)  # FocalLoss: 0/1 only
