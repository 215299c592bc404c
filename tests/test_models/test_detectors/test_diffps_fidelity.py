# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffPS as the official code (github PerceptualAI-Lab/DiffPS) builds it
where ReID accuracy is decided: the embedding head, the RoIs the ReID branch
trains on, the samplers, the box regressor and the training schedule. Each
test pins one choice, so a regression to the earlier behaviour fails."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmdet.models.task_modules.assigners import AssignResult
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmpsearch.models.heads.sfan import CBAM, SFAN, num_split
from mmpsearch.models.roi_heads import BNRegBBoxHead
from mmpsearch.registry import MODELS, TASK_UTILS

CONFIGS = osp.join(
    osp.dirname(__file__), '..', '..', '..', 'configs', 'diffps')
# the random-SD plumbing config lives with the test data
TEST_CONFIGS = osp.join(osp.dirname(__file__), '..', '..', 'data', 'configs')


def _cfg(name: str) -> Config:
    root = TEST_CONFIGS if name == 'synthetic' else CONFIGS
    return Config.fromfile(osp.join(root, f'diffps_sd21_{name}.py'))


# ------------------------------------------------------- embedding head
def test_embedding_head_is_two_concatenated_strip_embeddings():
    """SFAN output (1024 ch) and stage-4 output (2048 ch) -> 512-d each ->
    1024-d; 1 + 2 + 3 strips each with CBAM, max pool, Linear without bias,
    BN1d, DropPath 0.1 (SD 2.1 widths, random weights)."""
    torch.manual_seed(0)
    cfg = _cfg('cuhk').model.reid_roi_head.embed_head
    cfg.res_layer.pop('init_cfg')  # no ImageNet download in tests
    head = MODELS.build(cfg)
    assert head.embed_dim == 1024
    assert list(head.embeddings) == ['sfan', 'stage4']
    for name, channels in (('sfan', 1024), ('stage4', 2048)):
        branches = head.embeddings[name].branches
        assert [len(b) for b in branches] == [1, 2, 3]
        widths = [[p.linear.out_features for p in b] for b in branches]
        assert widths == [[171], [86, 85], [57, 57, 56]]
        for proj in (p for b in branches for p in b):
            assert isinstance(proj.attention, CBAM)
            assert proj.linear.in_features == channels
            assert proj.linear.bias is None
            assert isinstance(proj.norm, torch.nn.BatchNorm1d)
            assert proj.drop_path.drop_prob == pytest.approx(0.1)
    feats, parts = torch.randn(3, 1024, 24, 12), torch.randn(4, 1024)
    head.eval()
    with torch.no_grad():
        emb = head(feats, parts)
        x = head.aggregate(feats, parts)
        expected = F.normalize(
            torch.cat([
                head.embeddings['sfan'](x), head.embeddings['stage4'](
                    head.res_layer(x))
            ], 1),
            dim=1)
    assert emb.shape == (3, 1024)
    torch.testing.assert_close(emb, expected)


def _small_sfan_embedding(**kwargs) -> torch.nn.Module:
    """The 24-d strip embedding of the SFAN map of a 64-channel SFAN."""
    head = SFAN(
        in_channels=64,
        text_channels=64,
        res_layer=dict(type=ResLayer, depth=18, stage=1, stride=2),
        embed_dim=24,
        embed_from=('sfan', ),
        **kwargs)
    return head.embeddings['sfan']


def test_strips_are_horizontal_and_max_pooled():
    """A strip's vector depends only on its rows of the map (max pooled):
    changing the bottom third changes the 3-strip embedding's last strip
    and the 1-strip one, never the first two strips of granularity 3."""
    torch.manual_seed(0)
    emb = _small_sfan_embedding(strip_attention=False, drop_path=0.0).eval()
    x = torch.randn(2, 64, 12, 6)
    y = x.clone()
    y[:, :, 8:] += 5.0
    with torch.no_grad():
        a, b = emb(x), emb(y)
    # widths: granularity 1 -> 8, 2 -> 4 + 4, 3 -> 3 + 3 + 2
    assert num_split(24, 3) == [8, 8, 8] and num_split(8, 3) == [3, 3, 2]
    first_two_of_g3 = slice(16, 22)
    torch.testing.assert_close(a[:, first_two_of_g3], b[:, first_two_of_g3])
    assert not torch.allclose(a[:, 22:], b[:, 22:])
    assert not torch.allclose(a[:, :8], b[:, :8])


def test_drop_path_drops_whole_strip_vectors_in_training_only():
    torch.manual_seed(0)
    emb = _small_sfan_embedding(drop_path=0.5)
    x = torch.randn(64, 64, 12, 6)
    out = emb.train()(x)
    strips = out.split([8, 4, 4, 3, 3, 2], dim=1)
    zero = torch.stack([(s == 0).all(dim=1) for s in strips])  # (6, 64)
    assert 0.3 < zero.float().mean() < 0.7
    emb.eval()
    assert not (emb(x) == 0).all(dim=1).any()


# --------------------------------------------------------- box regressor
def test_box_regressor_is_linear_without_bias_then_batchnorm():
    cfg = _cfg('cuhk').model.roi_head.bbox_head
    head = MODELS.build(cfg)
    head.init_weights()
    assert isinstance(head, BNRegBBoxHead)
    assert head.fc_reg.in_features == 2048 and head.fc_reg.out_features == 4
    assert head.fc_reg.bias is None
    assert isinstance(head.reg_norm, torch.nn.BatchNorm1d)
    assert head.reg_norm.num_features == 4
    # official CUHK-SYSU init: Xavier-uniform classifier and regressor
    # (mmdet's default would be N(0, 0.01) / N(0, 0.001))
    bound = math.sqrt(6.0 / (2048 + 4))
    w = head.fc_reg.weight.detach()
    assert w.abs().max() <= bound + 1e-6
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    # the BN makes the deltas unit-scale whatever the features' scale
    x = 100.0 * torch.rand(16, 2048, 7, 7)
    _, deltas = head.train()(x)
    torch.testing.assert_close(
        deltas.std(dim=0, unbiased=False), torch.ones(4), rtol=1e-2, atol=1e-2)
    _, one = head(x[:1])  # a single RoI in training uses running stats
    assert one.shape == (1, 4)


def test_prw_initialises_box_predictor_and_embedder_from_normal_001():
    cfg = _cfg('prw').model
    box = MODELS.build(cfg.roi_head.bbox_head)
    box.init_weights()
    for m in (box.fc_cls, box.fc_reg, box.reg_norm):
        assert float(m.weight.detach().std()) == pytest.approx(0.01, rel=0.5)
    cfg.reid_roi_head.embed_head.res_layer.pop('init_cfg')
    reid = MODELS.build(cfg.reid_roi_head.embed_head)
    reid.init_weights()
    strip = reid.embeddings['stage4'].branches[2][0]
    assert float(strip.linear.weight.std()) == pytest.approx(0.01, rel=0.1)
    assert float(strip.norm.weight.std()) == pytest.approx(0.01, rel=0.5)
    assert float(strip.norm.weight.abs().max()) < 0.1  # not BN's 1
    # the SFAN part itself is not re-initialised
    assert float(reid.alpha) == 0.0


# --------------------------------------------------------------- sampler
def _assign(num_pos: int, num_neg: int, num_ignored: int = 0):
    labels = [1] * num_pos + [-1] * num_ignored + [0] * num_neg
    gt_inds = torch.tensor([1] * num_pos + [-1] * num_ignored + [0] * num_neg)
    n = len(labels)
    result = AssignResult(1, gt_inds, torch.ones(n),
                          torch.tensor([0 if g > 0 else -1 for g in gt_inds]))
    priors = torch.tensor([[0.0, 0.0, 10.0, 20.0]]).repeat(n, 1)
    gt = InstanceData(
        bboxes=torch.tensor([[0.0, 0.0, 10.0, 20.0]]),
        labels=torch.zeros(1, dtype=torch.long))
    return result, InstanceData(priors=priors), gt


@pytest.mark.parametrize('branch', ['rcnn', 'reid'])
@pytest.mark.parametrize(
    'num_pos,num_neg,expected',
    [
        (9, 1000, (10, 10)),  # 9 + the appended GT; as many negatives
        (200, 1000, (64, 64)),  # enough of both: 128 at 50 %
        (0, 1000, (1, 1)),  # only the GT
    ])
def test_samplers_keep_the_positive_fraction(branch, num_pos, num_neg,
                                             expected):
    """128 RoIs at 50 %, negatives shrinking with the positives (the
    official keep_positive_fraction), GT appended; mmdet's default would
    fill up to 128 with negatives."""
    model = _cfg('cuhk').model
    cfg = (model.train_cfg.rcnn
           if branch == 'rcnn' else model.reid_roi_head.train_cfg).sampler
    sampler = TASK_UTILS.build(cfg)
    torch.manual_seed(0)
    res = sampler.sample(*_assign(num_pos, num_neg, num_ignored=5))
    assert (len(res.pos_inds), len(res.neg_inds)) == expected


def test_reid_assigner_thresholds_are_07_and_03():
    cfg = _cfg('cuhk').model.reid_roi_head.train_cfg.assigner
    assigner = TASK_UTILS.build(cfg)
    gt = InstanceData(
        bboxes=torch.tensor([[0.0, 0.0, 100.0, 100.0]]),
        labels=torch.zeros(1, dtype=torch.long))
    # IoUs 0.75, 0.6, 0.29 with the ground truth
    priors = torch.tensor([[0.0, 0.0, 100.0, 75.0], [0.0, 0.0, 100.0, 60.0],
                           [0.0, 0.0, 100.0, 29.0]])
    res = assigner.assign(InstanceData(priors=priors), gt)
    assert res.gt_inds.tolist() == [1, -1, 0]


# ----------------------------------------------- the ReID training RoIs
def _spy_reid_branch(model, monkeypatch):
    seen = {}
    reid = model.reid_roi_head
    roi_loss_and_predict = model.roi_head.loss_and_predict
    assign = reid.assigner.assign
    reid_forward = reid._reid_forward
    reid_loss = reid.loss_reid.forward

    def spy_roi(*args, **kwargs):
        losses, boxes = roi_loss_and_predict(*args, **kwargs)
        seen['regressed'] = [b.clone() for b in boxes]
        return losses, boxes

    def spy_assign(pred, gt, *args, **kwargs):
        seen.setdefault('candidates', []).append(pred.priors.clone())
        return assign(pred, gt, *args, **kwargs)

    def spy_embed(reid_map, part_embeds, rois):
        seen['embedded'] = rois.clone()
        return reid_forward(reid_map, part_embeds, rois)

    def spy_loss(embeds, ids):
        seen['ids'] = ids.clone()
        return reid_loss(embeds, ids)

    monkeypatch.setattr(model.roi_head, 'loss_and_predict', spy_roi)
    monkeypatch.setattr(reid.assigner, 'assign', spy_assign)
    monkeypatch.setattr(reid, '_reid_forward', spy_embed)
    monkeypatch.setattr(reid.loss_reid, 'forward', spy_loss)
    return seen


def test_reid_trains_on_regressed_boxes_proposals_and_backgrounds(
        tiny_diffps, monkeypatch):
    model, batch = tiny_diffps
    seen = _spy_reid_branch(model, monkeypatch)
    torch.manual_seed(0)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert torch.isfinite(losses['loss_reid'])
    n_det = model.roi_head.train_cfg.sampler.num
    for i, cand in enumerate(seen['candidates']):
        regressed = seen['regressed'][i]
        # the regressed boxes of the detector's sampled RoIs come first
        assert 0 < len(regressed) <= n_det
        torch.testing.assert_close(cand[:len(regressed)], regressed)
        assert len(cand) > len(regressed)  # then the RPN proposals
    ids = seen['ids']
    assert len(ids) == len(seen['embedded'])
    # backgrounds go through the head with id -2 (OIM ignores them)
    n_bg = int((ids == model.reid_roi_head.BACKGROUND_ID).sum())
    assert n_bg > 0
    assert set(ids.unique().tolist()) <= set(range(-2, 25))
    n_persons = int((ids >= -1).sum())
    assert n_bg <= n_persons  # the positive fraction is kept


def test_the_earlier_reid_rois_stay_reachable(tiny_diffps, monkeypatch):
    """proposals=('rpn',), embed_negatives=False: the RPN proposals only,
    and only persons reach the head."""
    model, batch = tiny_diffps
    seen = _spy_reid_branch(model, monkeypatch)
    monkeypatch.setattr(model.reid_roi_head, 'proposals', ('rpn', ))
    monkeypatch.setattr(model.reid_roi_head, 'embed_negatives', False)
    model.loss(batch['inputs'], batch['data_samples'])
    assert 'regressed' not in seen
    assert (seen['ids'] >= -1).all()


def test_bad_reid_proposals_are_refused(tiny_sd_dir):
    cfg = _cfg('synthetic')
    cfg.model.backbone.sd_path = tiny_sd_dir
    cfg.model.reid_roi_head.train_cfg.proposals = ('rpn', 'gt')
    with pytest.raises(ValueError, match=r"proposals must name some of"):
        MODELS.build(cfg.model)
    cfg.model.reid_roi_head.train_cfg.proposals = ('regressed', )
    cfg.model.roi_head.type = 'mmdet.StandardRoIHead'
    with pytest.raises(ValueError, match='DiffPSRoIHead'):
        MODELS.build(cfg.model)


# -------------------------------------------------------------- schedule
@pytest.mark.parametrize('name', ['cuhk', 'prw'])
def test_schedule_batch_and_evaluation_follow_the_official_loop(name):
    cfg = _cfg(name)
    assert cfg.train_dataloader.batch_size == 5
    assert cfg.auto_scale_lr.base_batch_size == 5
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-4)
    assert (cfg.train_cfg.val_begin, cfg.train_cfg.val_interval) == (10, 1)
    assert cfg.default_hooks.checkpoint.save_best == 'search/mAP'
    model = cfg.model
    reid = model.reid_roi_head
    assert reid.loss_reid.num_features == reid.embed_head.embed_dim == 1024
    for extractor in (model.roi_head.bbox_roi_extractor, reid.roi_extractor):
        assert extractor.roi_layer.aligned is False  # torchvision's RoIAlign
