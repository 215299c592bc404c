# Copyright (c) mmpsearch contributors. All rights reserved.
"""DualDenoisingCriterion under ``--amp``: fp16 predictions are matched and
scored in fp32. fp16 tensors and CPU autocast stand in for CUDA autocast."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss, QualityFocalLoss
from mmdet.models.task_modules.assigners import (BBoxL1Cost, FocalLossCost,
                                                 IoUCost)
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

from mmpsearch.models.losses import DualDenoisingCriterion
from mmpsearch.models.task_modules import DiffusionDetDynamicKAssigner

D = 8
COSTS = [
    dict(type=FocalLossCost, weight=2.0),
    dict(type=BBoxL1Cost, weight=5.0, box_format='xyxy'),
    dict(type=IoUCost, iou_mode='giou', weight=2.0)
]
# the paper's (Hungarian, focal loss) and the shipped (dynamic-k, IoU-aware
# QFL targets) recipes
PAPER = dict()
SHIPPED = dict(
    assigner=dict(type=DiffusionDetDynamicKAssigner, match_costs=COSTS),
    loss_cls=dict(
        type=QualityFocalLoss, use_sigmoid=True, beta=2.0, loss_weight=2.0),
    cls_pos_iou_thr=0.5,
    cls_iou_target=True)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _gt(boxes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return InstanceData(
        bboxes=HorizontalBoxes(torch.tensor(boxes)),
        labels=torch.zeros(len(boxes), dtype=torch.long),
        teacher_embeds=F.normalize(
            torch.randn(len(boxes), D, generator=g), dim=-1))


# Two persons; p0 a confident copy of person 2 (logit 9.5: its fp16
# focal cost is -inf, 1 - sigmoid rounds to 0), p1 / p2 copies of person
# 1, p3 a low-scored copy of person 2, p4 background.
GT = [[10., 10, 40, 90], [60, 10, 90, 90]]
PREDS = torch.tensor([[61., 11, 90, 88], [11, 12, 41, 88], [12, 10, 40, 86],
                      [58, 14, 88, 90], [0, 0, 20, 20]])
LOGITS = torch.tensor([[9.5], [2.], [1.], [0.], [-3.]])


@pytest.mark.parametrize(
    'recipe', [PAPER, SHIPPED], ids=['hungarian', 'dynamic_k'])
def test_matching_is_fp32_for_fp16_predictions(recipe):
    crit = DualDenoisingCriterion(**recipe)
    meta = dict(img_shape=(100, 100))
    # 1-based ground truth per prediction; in fp16 the Hungarian solver
    # refused the -inf matrix and dynamic-k gave p0 to person 1 ([1, 0, 0,
    # 2, 0])
    want = [2, 1, 0, 0, 0]
    assert (crit.match(LOGITS, PREDS, _gt(GT), meta) + 1).tolist() == want
    for dtype in (torch.float16, torch.bfloat16):
        got = crit.match(LOGITS.to(dtype), PREDS.to(dtype), _gt(GT), meta)
        assert (got + 1).tolist() == want, dtype


def _batch(dtype):
    """Pixel boxes of a 600x600 image (person areas above fp16's 65504)
    and logits up to +-12, rounded to ``dtype``."""
    g = torch.Generator().manual_seed(1)
    logits = torch.tensor([[12.], [11.], [9.], [-12.], [-10.]])[None]
    boxes = PREDS[None] * 6
    embeds = torch.randn(1, 5, D, generator=g)
    return [t.to(dtype).requires_grad_(True) for t in (logits, boxes, embeds)]


def _run(crit, inputs, autocast_dtype=None):
    gt = [_gt([[b * 6 for b in box] for box in GT])]
    meta = [dict(img_shape=(600, 600))]
    with torch.autocast(
            'cpu',
            dtype=autocast_dtype or torch.bfloat16,
            enabled=autocast_dtype is not None):
        return crit(*inputs, gt, meta)


@pytest.mark.parametrize('recipe', [PAPER, SHIPPED], ids=['paper', 'shipped'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_losses_are_fp32_and_finite_for_fp16_predictions(recipe, dtype):
    crit = DualDenoisingCriterion(**recipe)
    inputs = _batch(dtype)
    # the same (rounded) numbers in fp32
    want = _run(crit, [t.detach().float() for t in inputs])
    assert set(want) == {'loss_cls', 'loss_bbox', 'loss_giou', 'loss_reid'}
    for autocast_dtype in (None, dtype):
        got = _run(crit, inputs, autocast_dtype)
        for name, value in got.items():
            assert value.dtype == torch.float32, (name, autocast_dtype)
            assert torch.isfinite(value), (name, autocast_dtype)
            torch.testing.assert_close(value, want[name], rtol=1e-5, atol=1e-6)
        for t in inputs:
            t.grad = None
        sum(got.values()).backward()
        for t in inputs:
            assert t.grad.dtype == dtype and torch.isfinite(t.grad).all()


@pytest.mark.parametrize('thr', [None, 0.5])
def test_focal_loss_gets_one_hot_targets(thr):
    # mmdet's FocalLoss takes mmcv's compiled sigmoid_focal_loss on CUDA
    # for (N,) labels (NaN / inf in half precision, missing from a
    # CPU-only mmcv) and its PyTorch version on every device for (N, K)
    # one-hot targets: the criterion must give the latter, with the
    # numbers of the CPU path
    crit = DualDenoisingCriterion(cls_pos_iou_thr=thr)
    assert isinstance(crit.loss_cls, FocalLoss)
    seen = []
    forward = crit.loss_cls.forward

    def spy(pred, target, *args, **kwargs):
        seen.append((pred.shape, target.shape))
        return forward(pred, target, *args, **kwargs)

    crit.loss_cls.forward = spy
    losses = crit(LOGITS[None], PREDS[None], torch.zeros(1, 5, D), [_gt(GT)],
                  [dict(img_shape=(100, 100))])
    assert seen == [(torch.Size([5, 1]), torch.Size([5, 1]))]
    # with the IoU rule p2 (IoU 0.89 with person 1) and p3 (0.83 with
    # person 2) are positives too
    labels, num_pos = ([0, 0, 1, 1, 1], 2) if thr is None else \
        ([0, 0, 0, 0, 1], 4)
    want = forward(LOGITS, torch.tensor(labels), avg_factor=num_pos)
    torch.testing.assert_close(losses['loss_cls'], want)
