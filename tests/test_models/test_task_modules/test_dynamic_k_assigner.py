# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffusionDet's dynamic-k matcher on hand cases."""
import pytest
import torch
from mmdet.models.task_modules.assigners import (BBoxL1Cost, FocalLossCost,
                                                 IoUCost)
from mmdet.structures.bbox import bbox_overlaps
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
    return InstanceData(
        bboxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long))


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


def _reference_assign(assigner, pred_instances, gt_instances, img_meta):
    """The matcher as written before its host syncs were removed (a topk
    and an ``int`` per ground truth, a loop with a ``bool`` per lost one),
    kept here to pin the results; also says which branches ran."""
    gt_labels = gt_instances.labels
    num_gts, num_preds = len(gt_instances), len(pred_instances)
    gt_inds = torch.zeros(num_preds, dtype=torch.long)
    labels = torch.full((num_preds, ), -1, dtype=torch.long)
    cost = torch.stack([
        c(pred_instances=pred_instances,
          gt_instances=gt_instances,
          img_meta=img_meta) for c in assigner.match_costs
    ]).sum(0)
    pred_boxes, gt_boxes = pred_instances.bboxes, gt_instances.bboxes
    centres = (pred_boxes[:, :2] + pred_boxes[:, 2:]) / 2
    priors = torch.cat(
        [centres, centres.new_full((num_preds, 2), assigner.stride)], dim=1)
    in_any, in_both = assigner._center_prior.get_in_gt_and_in_center_info(
        priors, gt_boxes)
    penalty = cost.new_full((num_preds, num_gts),
                            assigner.in_box_center_penalty)
    penalty[in_any] = assigner.in_box_center_penalty * (~in_both).float()
    penalty[~in_any] += assigner.outside_penalty
    cost = cost + penalty
    ious = bbox_overlaps(pred_boxes, gt_boxes)
    topk = min(assigner.candidate_topk, num_preds)
    ks = ious.topk(topk, dim=0).values.sum(0).int().clamp(min=1)
    match = torch.zeros_like(cost, dtype=torch.bool)
    for g in range(num_gts):
        match[cost[:, g].topk(int(ks[g]), largest=False).indices, g] = True
    multi = match.sum(1) > 1
    branches = dict(shared=bool(multi.any()), second_pass=0, no_free=False)
    if multi.any():
        best = cost[multi].argmin(1)
        match[multi] = False
        match[multi.nonzero()[:, 0], best] = True
    for g in (~match.any(0)).nonzero()[:, 0].tolist():
        free = ~match.any(1)
        if not free.any():
            branches['no_free'] = True
            break
        c = cost[:, g].masked_fill(~free, float('inf'))
        match[c.argmin(), g] = True
        branches['second_pass'] += 1
    pos = match.any(1)
    gt_inds[pos] = match[pos].float().argmax(1) + 1
    labels[pos] = gt_labels[gt_inds[pos] - 1]
    return gt_inds, labels, branches


def _random_case(seed, num_gts, num_preds):
    """People in a 320 x 240 image; proposals around them (some of them
    shared between neighbours) and anywhere."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_gts, 2, generator=g) * torch.tensor([260., 150.])
    wh = 15 + torch.rand(num_gts, 2, generator=g) * torch.tensor([40., 80.])
    gt = torch.cat([xy, xy + wh], 1)
    near = gt[torch.randint(0, num_gts, (num_preds, ), generator=g)]
    near = near + torch.randn(num_preds, 4, generator=g) * 6
    far_xy = torch.rand(num_preds, 2, generator=g) * torch.tensor([300., 220.])
    far = torch.cat(
        [far_xy, far_xy + 5 + torch.rand(num_preds, 2, generator=g) * 40], 1)
    pick = torch.rand(num_preds, 1, generator=g) < 0.6
    boxes = torch.where(pick, near, far)
    boxes = torch.cat(
        [boxes[:, :2],
         torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], 1)
    labels = torch.randint(0, 3, (num_gts, ), generator=g)
    return (InstanceData(
        bboxes=boxes, scores=torch.randn(num_preds, 3, generator=g)),
            InstanceData(bboxes=gt, labels=labels))


# (seed, ground truths, predictions): crowds with more people than
# proposals (people left over), fewer proposals than candidate_topk, one
# person, many proposals
CASES = [
    (s, g, n)
    for s, (g, n) in enumerate([(1, 1), (1, 50), (3, 2), (6, 4), (8, 3), (
        4, 30), (12, 60), (20, 300), (2, 300), (30, 25), (9, 9), (15, 100)] *
                               3)
]


@pytest.mark.parametrize('seed,num_gts,num_preds', CASES)
def test_equals_the_per_ground_truth_loop(seed, num_gts, num_preds):
    # the reference has the stride prior (mmdet's SimOTA helper)
    assigner = _assigner(center_prior='stride')
    pred, gt = _random_case(seed, num_gts, num_preds)
    res = assigner.assign(pred, gt, img_meta=META)
    gt_inds, labels, _ = _reference_assign(assigner, pred, gt, META)
    assert torch.equal(res.gt_inds, gt_inds)
    assert torch.equal(res.labels, labels)
    assert res.num_gts == num_gts
    # a person is left without a proposal only when none is left
    if len(set(res.gt_inds.tolist()) - {0}) < num_gts:
        assert bool((res.gt_inds > 0).all())


def test_the_cases_reach_every_branch():
    """Shared proposals, people taking a free proposal in the second pass
    and people left when none is free all occur in CASES, so the equality
    above covers every branch."""
    seen = dict(shared=0, second_pass=0, no_free=0)
    for seed, num_gts, num_preds in CASES:
        pred, gt = _random_case(seed, num_gts, num_preds)
        *_, branches = _reference_assign(
            _assigner(center_prior='stride'), pred, gt, META)
        for key in seen:
            seen[key] += bool(branches[key])
    assert all(seen.values()), seen


def test_host_reads_do_not_grow_with_the_people(host_reads):
    """No host sync per ground truth: the Python-visible reads of tensor
    values (int(), bool(), item(), tolist()) in ``assign`` are as many for
    20 people as for 2."""
    reads = host_reads

    def count(num_gts):
        pred, gt = _random_case(0, num_gts, 300)
        reads.clear()
        _assigner().assign(pred, gt, img_meta=META)
        return len(reads)

    assert count(2) == count(20)


def test_gt_size_centre_prior_holds_a_tall_person():
    """DiffusionDet's centre region is 2.5 box sizes around the centre; the
    stride prior's is 2.5 x 32 = 80 px, smaller than a 400-px person. A
    proposal centred 120 px below the person's centre, inside the box, is
    "in box and centre" for the first only."""
    person = [[100, 0, 200, 400]]  # centre (150, 200)
    near, low = [120, 150, 180, 250], [120, 270, 180, 370]
    pred = _pred([near, low])
    by_size = _assigner(center_prior='gt_size')
    by_stride = _assigner(center_prior='stride')
    in_any, in_both = by_size._in_box_and_centre(pred.bboxes,
                                                 _gt(person).bboxes)
    assert in_any.tolist() == [True, True]
    assert in_both.tolist() == [[True], [True]]
    in_any, in_both = by_stride._in_box_and_centre(pred.bboxes,
                                                   _gt(person).bboxes)
    assert in_any.tolist() == [True, True]
    assert in_both.tolist() == [[True], [False]]
    # outside the box, within 2.5 widths: in the region, not in both
    side = [[300, 150, 340, 250]]  # centre x 320: 170 px < 2.5 * 100
    in_any, in_both = by_size._in_box_and_centre(
        _pred(side).bboxes,
        _gt(person).bboxes)
    assert in_any.tolist() == [True] and in_both.tolist() == [[False]]


@pytest.mark.parametrize('seed', range(6))
def test_centre_priors_agree_on_small_persons(seed):
    """Persons at most 95 px tall (the random cases) lie inside both centre
    regions, so "in box and centre" is "in box" for both priors; only which
    far proposals count as near anyone differs, and the assignment is the
    same on these cases."""
    pred, gt = _random_case(seed, 4, 60)
    by_size = _assigner(center_prior='gt_size')
    by_stride = _assigner(center_prior='stride')
    _, both_size = by_size._in_box_and_centre(pred.bboxes, gt.bboxes)
    _, both_stride = by_stride._in_box_and_centre(pred.bboxes, gt.bboxes)
    assert torch.equal(both_size, both_stride)
    assert torch.equal(
        by_size.assign(pred, gt, img_meta=META).gt_inds,
        by_stride.assign(pred, gt, img_meta=META).gt_inds)


def test_unknown_centre_prior_is_refused():
    with pytest.raises(ValueError, match="center_prior 'box'"):
        _assigner(center_prior='box')
