# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff parts: schedule, samplers, matcher and losses, RoI extraction,
attention, dynamic convolution and the CDL head with its switches."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

from mmpsearch.diffusion import (DDIMSampler, DPMSolverPPSampler,
                                 DPMSolverSampler, NoiseSchedule)
from mmpsearch.models.heads import CDLHead
from mmpsearch.models.layers import ReIDDynamicConv, RoIQueryAttention
from mmpsearch.models.losses import DualDenoisingCriterion, ReIDL2Loss
from mmpsearch.models.roi_extractors import GatherRoIExtractor
from mmpsearch.registry import TASK_UTILS
from ..conftest import roi_align_extractor

C, D = 32, 16
STRIDES = [4, 8, 16, 32]

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def test_cosine_schedule():
    sched = NoiseSchedule(1000, 'cosine')
    abar = sched.alphas_cumprod
    assert abar[0] > 0.9999 and abar[-1] < 1e-6
    assert np.all(np.diff(abar) < 0)
    # the same abar_t as diffusers' squaredcos_cap_v2 (Nichol & Dhariwal)
    ref = DDIMScheduler(beta_schedule='squaredcos_cap_v2').alphas_cumprod
    np.testing.assert_allclose(abar, ref.numpy(), rtol=1e-4, atol=1e-7)
    x0 = torch.ones(4)
    assert torch.allclose(
        sched.q_sample(x0, 0, torch.zeros(4)), x0 * math.sqrt(abar[0]))
    with pytest.raises(ValueError, match='beta_schedule'):
        NoiseSchedule(1000, 'quadratic')


@pytest.mark.parametrize('name,cls',
                         [('ddim', DDIMSampler), ('DDIMSampler', DDIMSampler),
                          ('dpm-solver', DPMSolverSampler),
                          ('dpm-solver++', DPMSolverPPSampler),
                          ('DPMSolverPPSampler', DPMSolverPPSampler)])
def test_samplers_by_name_reach_x0(name, cls):
    sampler = TASK_UTILS.build(dict(type=name))
    assert type(sampler) is cls
    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, 8, generator=g)
    for k in (1, 2, 3, 4, 5, 8, 10):
        run = sampler.start(k)
        ts = run.timesteps
        assert len(ts) == k and ts[0] >= 990 and ts == sorted(ts)[::-1]
        x = torch.randn(5, 8, generator=g)
        for t in ts:
            noise = torch.randn(5, 8, generator=g) if run.stochastic \
                else None
            # an oracle x_0 predictor: every sampler must land on x_0
            x = run.step(target, t, x, noise)
        tol = 0.05 if cls is DPMSolverSampler else 1e-4
        assert torch.isfinite(x).all()
        assert torch.allclose(x, target, atol=tol), (name, k)


def test_ddim_eta_and_noise_contract():
    run = DDIMSampler(eta=1.0).start(2)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match='noise'):
        run.step(x, run.timesteps[0], x)
    det = DDIMSampler(eta=0.0)
    assert not det.stochastic
    with pytest.raises(ValueError, match='sampling_steps'):
        det.start(0)


def _gt(boxes, d=D):
    return InstanceData(
        bboxes=HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32)),
        labels=torch.zeros(len(boxes), dtype=torch.long),
        teacher_embeds=F.normalize(torch.randn(len(boxes), d), dim=-1))


def test_matcher_hand_case_is_globally_optimal():
    crit = DualDenoisingCriterion()
    meta = dict(img_shape=(100, 100))
    # Greedy matching would give p0 -> A (its nearest) and leave B to p1;
    # the optimum is p1 -> A, p0 -> B; p2 is far from both.
    gt = _gt([[0, 0, 10, 10], [10, 0, 20, 10]])
    preds = torch.tensor([[4., 0, 14, 10], [1, 0, 11, 10], [80, 80, 90, 90]])
    logits = torch.zeros(3, 1)
    inds = crit.match(logits, preds, gt, meta)
    assert inds.tolist() == [1, 0, -1]
    # and it is the minimum over all assignments of the configured cost
    pred_inst = InstanceData(scores=logits, bboxes=preds)
    gt_inst = InstanceData(bboxes=gt.bboxes.tensor, labels=gt.labels)
    cost = sum(
        c(pred_inst, gt_inst, img_meta=meta)
        for c in crit.assigner.match_costs)
    best = min(cost[list(p), [0, 1]].sum()
               for p in itertools.permutations(range(3), 2))
    assert torch.isclose(cost[[1, 0], [0, 1]].sum(), best)


def test_criterion_values_and_empty_image():
    crit = DualDenoisingCriterion()
    metas = [dict(img_shape=(100, 100)), dict(img_shape=(100, 100))]
    gts = [_gt([[10, 10, 40, 90]]), _gt([])]
    boxes = torch.tensor([[[10., 10, 40, 90], [50, 50, 60, 60]],
                          [[10., 10, 40, 90], [50, 50, 60, 60]]],
                         requires_grad=True)
    e = gts[0].teacher_embeds[0]
    v = torch.randn(D)
    v = 3 * F.normalize(v - (v @ e) * e, dim=0)  # orthogonal to e
    embeds = torch.zeros(2, 2, D)
    embeds[0, 0] = v  # unit-normalised distance to e: sqrt(2)
    embeds.requires_grad_(True)
    logits = torch.zeros(2, 2, 1, requires_grad=True)
    losses = crit(logits, boxes, embeds, gts, metas)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_giou', 'loss_reid'}
    # one match, exact box: L1 and GIoU vanish; ReID = 5 * sqrt(2)
    assert losses['loss_bbox'].item() == pytest.approx(0, abs=1e-6)
    assert losses['loss_giou'].item() == pytest.approx(0, abs=1e-5)
    assert losses['loss_reid'].item() == pytest.approx(
        5 * math.sqrt(2), rel=1e-4)
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and embeds.grad.abs().sum() > 0
    # a batch without any person still gives finite, connected losses
    empty = crit(logits, boxes, embeds, [_gt([]), _gt([])], metas)
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty['loss_reid'].item() == 0 and empty['loss_cls'].item() > 0


def test_reid_l2_loss():
    loss = ReIDL2Loss(loss_weight=1.0)
    e = F.normalize(torch.randn(4, D), dim=-1)
    assert loss(e * 3, e).item() == pytest.approx(0, abs=1e-5)
    assert loss(-e, e).item() == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match='shape'):
        loss(e, e[:2])


def _rois(n, w=96, h=64, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.3 - 8
    wh = torch.rand(n, 2, generator=g) * 90
    b = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([b, xy, xy + wh], 1)


@pytest.mark.parametrize('aligned', [True, False])
def test_gather_roi_extractor_equals_mmcv_roialign(aligned):
    cfg = dict(
        roi_layer=dict(
            type='RoIAlign', output_size=7, sampling_ratio=2, aligned=aligned),
        out_channels=8,
        featmap_strides=STRIDES)
    ref, ours = SingleRoIExtractor(**cfg), GatherRoIExtractor(**cfg)
    feats = [torch.randn(2, 8, 64 // s, 96 // s) for s in STRIDES]
    rois = _rois(150)
    assert torch.allclose(ours(feats, rois), ref(feats, rois), atol=1e-4)
    # tokens layout and differentiability with respect to the features
    feats = [f.requires_grad_(True) for f in feats]
    tokens = ours.forward_tokens(ours.prepare(feats), rois)
    assert tokens.shape == (150, 49, 8)
    tokens.sum().backward()
    assert all(f.grad is not None for f in feats)
    with pytest.raises(ValueError, match='sampling_ratio'):
        GatherRoIExtractor(
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8,
            featmap_strides=STRIDES)


def test_roi_query_attention_equals_multihead_attention():
    torch.manual_seed(0)
    attn = RoIQueryAttention(C, 8, batch_first=True)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    q, tokens, pos = torch.randn(20, C), torch.randn(20, 49, C), \
        torch.randn(49, C)
    ref = attn(q[:, None], tokens + pos, tokens, need_weights=False)[0]
    assert torch.allclose(
        attn.forward_single(q, tokens, pos), ref[:, 0], atol=1e-5)


def test_dynamic_conv_chunks_and_rank():
    torch.manual_seed(0)
    full = ReIDDynamicConv(
        in_channels=C,
        feat_channels=8,
        param_rank=None,
        input_feat_shape=7,
        chunk_size=1000)
    low = ReIDDynamicConv(
        in_channels=C,
        feat_channels=8,
        param_rank=4,
        input_feat_shape=7,
        chunk_size=7)
    n_gen = 2 * C * 8
    assert sum(p.numel() for p in full.dynamic_layer.parameters()) == \
        C * n_gen + n_gen
    assert sum(p.numel() for p in low.dynamic_layer.parameters()) == \
        C * 4 + 4 * n_gen + n_gen
    low.eval()
    fr, roi = torch.randn(30, C), torch.randn(30, C, 7, 7)
    chunked = low(fr, roi)
    low.chunk_size = 1000
    assert torch.allclose(chunked, low(fr, roi), atol=1e-5)


def _head(**kwargs):
    cfg = dict(
        in_channels=C,
        embed_dims=D,
        roi_extractor=roi_align_extractor(GatherRoIExtractor, C, STRIDES),
        num_heads=8,
        feedforward_channels=64,
        dynamic_conv=dict(feat_channels=8, param_rank=8, with_proj=True))
    cfg.update(kwargs)
    head = CDLHead(**cfg)
    head.init_weights()
    return head


SWITCHES = [
    dict(),
    dict(with_sa=False),
    dict(with_dc=False),
    dict(with_ca=False),
    dict(with_sa=False, with_dc=False, with_ca=False),
    dict(cascaded=False),
    dict(roi_extractor=roi_align_extractor(SingleRoIExtractor, C, STRIDES)),
]


@pytest.mark.parametrize('switch', SWITCHES)
def test_head_switches_forward_and_loss(switch):
    torch.manual_seed(0)
    head = _head(**switch)
    for name, attr in (('with_sa', 'self_attn'), ('with_dc', 'dynamic_conv'),
                       ('with_ca', 'cross_attn')):
        assert hasattr(head, attr) == switch.get(name, True)
    assert hasattr(head, 'det_branch') == (not switch.get('cascaded', True))
    B, N = 2, 6
    feats = [
        torch.randn(B, C, 64 // s, 96 // s, requires_grad=True)
        for s in STRIDES
    ]
    xy = torch.rand(B, N, 2) * 60
    boxes = torch.cat([xy, xy + 4 + torch.rand(B, N, 2) * 30], -1)
    outs = head(feats, boxes, torch.randn(B, N, D), torch.tensor([3, 900]))
    assert outs['cls_scores'].shape == (B, N, 1)
    assert outs['bboxes'].shape == (B, N, 4)
    assert outs['embeds'].shape == (B, N, D)
    gts = [_gt([[5, 5, 30, 50], [40, 10, 70, 60]]), _gt([[0, 0, 20, 20]])]
    metas = [dict(img_shape=(64, 96))] * B
    losses = DualDenoisingCriterion()(outs['cls_scores'], outs['bboxes'],
                                      outs['embeds'], gts, metas)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # every level stays in the graph (DDP), the used ones get gradient
    assert all(f.grad is not None for f in feats)
    assert sum(f.grad.abs().sum() for f in feats) > 0
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_head_init_and_bad_embeddings():
    head = _head()
    assert torch.allclose(head.cls_out.bias, torch.tensor([-math.log(99.0)]))
    feats = [torch.randn(1, C, 64 // s, 96 // s) for s in STRIDES]
    boxes = torch.tensor([[[0., 0, 10, 10]]])
    with pytest.raises(ValueError, match='embed_dims'):
        head(feats, boxes, torch.randn(1, 1, D + 1), torch.tensor([0]))
