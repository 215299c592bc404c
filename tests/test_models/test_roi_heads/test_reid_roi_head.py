# Copyright (c) mmpsearch contributors. All rights reserved.
"""The ReID branch of DiffPS as one RoI head (:class:`ReIDRoIHead`): the
head on its own, and checkpoints of the unreleased former layout (keys
``reid_head.*`` / ``reid_loss.*`` / ``reid_roi_extractor.*``) upgraded by
tools/model_converters/upgrade_checkpoint_0_1_0.py."""
import copy
import os.path as osp
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import RoIAlign
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.runner.checkpoint import load_state_dict
from mmengine.structures import InstanceData

from mmpsearch.models.heads.sfan import SFAN
from mmpsearch.models.losses.oim import OIMLoss
from mmpsearch.models.roi_heads import ReIDRoIHead
from mmpsearch.registry import MODELS
from mmpsearch.utils import safe_torch_load
from mmpsearch.utils.checkpoint import (CheckpointMismatchError,
                                        check_checkpoint_fits)
from mmpsearch.utils.setup_env import register_all_modules
from ...conftest import load_tool

CONFIG = osp.join(
    osp.dirname(__file__), '..', '..', 'data', 'configs',
    'diffps_sd21_synthetic.py')
EMBED_DIM = 24
NUM_PIDS = 5
#: current prefix -> the one checkpoints of the former layout have
FORMER = {
    'reid_roi_head.roi_extractor.': 'reid_roi_extractor.',
    'reid_roi_head.embed_head.': 'reid_head.',
    'reid_roi_head.loss_reid.': 'reid_loss.',
}


# ------------------------------------------------------------ the head
def _head_cfg(train: bool = True) -> dict:
    return dict(
        type=ReIDRoIHead,
        roi_extractor=dict(
            type=SingleRoIExtractor,
            roi_layer=dict(
                type=RoIAlign,
                output_size=(12, 6),
                sampling_ratio=2,
                aligned=False),
            out_channels=64,
            featmap_strides=[8]),
        embed_head=dict(
            type=SFAN,
            in_channels=64,
            text_channels=32,
            res_layer=dict(type=ResLayer, depth=18, stage=1, stride=2),
            embed_dim=EMBED_DIM),
        loss_reid=dict(
            type=OIMLoss,
            num_features=EMBED_DIM,
            num_pids=NUM_PIDS,
            num_cq_size=8,
            loss_weight=2.0),
        train_cfg=_diffps_reid_sampling(num=16) if train else None)


def _diffps_reid_sampling(num: int) -> dict:
    """DiffPS's assigner and sampler of the ReID RoIs (the shipped config's:
    person at IoU >= 0.7, background below 0.3, 50 % persons), ``num`` RoIs
    per image."""
    train_cfg = Config.fromfile(CONFIG).model.reid_roi_head.train_cfg
    return dict(
        assigner=train_cfg.assigner, sampler=dict(train_cfg.sampler, num=num))


def _sample(gt_boxes, person_ids) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), img_id='x'))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.zeros(len(gt_boxes), dtype=torch.long),
        person_ids=torch.tensor(person_ids, dtype=torch.long))
    return sample


@pytest.fixture
def head_inputs():
    torch.manual_seed(0)
    register_all_modules(init_default_scope=False)
    reid_map = torch.randn(2, 64, 16, 16, requires_grad=True)
    part_embeds = torch.randn(4, 32)
    samples = [
        _sample([[10., 10., 50., 90.], [60., 20., 100., 110.]], [1, -1]),
        _sample([[30., 5., 70., 100.]], [3]),
    ]
    proposals = []
    for s in samples:
        gt = s.gt_instances.bboxes
        # jittered copies of the persons (positives) and far boxes
        near = gt.repeat(4, 1) + torch.randn(4 * len(gt), 4)
        far = torch.tensor([[100., 0., 127., 20.], [0., 100., 30., 127.]])
        proposals.append(InstanceData(priors=torch.cat([near, far])))
    return reid_map, part_embeds, proposals, samples


def test_head_loss_is_finite_and_trains_the_embedding_head(head_inputs):
    reid_map, part_embeds, proposals, samples = head_inputs
    head = MODELS.build(_head_cfg()).train()
    assert head.proposals == ReIDRoIHead.PROPOSALS
    assert head.embed_negatives and head.embed_dim == EMBED_DIM
    # filled tables: with OIM's zero init the loss has no gradient yet
    head.loss_reid.lut.copy_(F.normalize(torch.randn(NUM_PIDS, EMBED_DIM)))
    seen = {}
    forward = head.loss_reid.forward

    def spy(embeds, ids):
        seen['ids'] = ids.clone()
        return forward(embeds, ids)

    head.loss_reid.forward = spy
    losses = head.loss(reid_map, part_embeds, proposals, samples)
    assert set(losses) == {'loss_reid'}
    loss = losses['loss_reid']
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert float(loss.detach()) > 0
    # persons keep their ids (-1 unlabelled), backgrounds get -2
    ids = seen['ids']
    assert {1, -1, 3} <= set(ids.tolist())
    assert (ids == -2).any() and ReIDRoIHead.BACKGROUND_ID == -2
    assert set(ids.tolist()) <= {1, -1, 3, -2}
    loss.backward()
    grads = [p.grad for p in head.embed_head.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert float(reid_map.grad.abs().sum()) > 0


def test_head_loss_keeps_the_graph_without_any_roi(head_inputs):
    """No person and no candidate: OIM is still called (a collective under
    DDP) and the loss still backpropagates to the ReID map."""
    reid_map, part_embeds, _, _ = head_inputs
    head = MODELS.build(_head_cfg()).train()
    called = []
    forward = head.loss_reid.forward

    def spy(embeds, ids):
        called.append(len(ids))
        return forward(embeds, ids)

    head.loss_reid.forward = spy
    empty = [_sample([], []) for _ in range(2)]
    proposals = [InstanceData(priors=torch.zeros(0, 4)) for _ in empty]
    loss = head.loss(reid_map, part_embeds, proposals, empty)['loss_reid']
    assert called == [0]
    assert loss.requires_grad and float(loss.detach()) == 0.0
    loss.backward()
    assert reid_map.grad is not None
    assert float(reid_map.grad.abs().sum()) == 0.0


def test_head_parameters_get_gradients_without_any_roi(head_inputs):
    """A rank with no ReID RoI must still give every trainable parameter of
    the ReID branch (SFAN and its embeddings) a gradient, or DDP's gradient
    all-reduce waits for it; the gradients are zero."""
    reid_map, part_embeds, _, _ = head_inputs
    head = MODELS.build(_head_cfg()).train()
    empty = [_sample([], []) for _ in range(2)]
    proposals = [InstanceData(priors=torch.zeros(0, 4)) for _ in empty]
    loss = head.loss(reid_map, part_embeds, proposals, empty)['loss_reid']
    assert float(loss.detach()) == 0.0
    loss.backward()
    params = {n: p for n, p in head.named_parameters() if p.requires_grad}
    assert any(n.startswith('embed_head.') for n in params)
    missing = [n for n, p in params.items() if p.grad is None]
    assert not missing, missing
    assert all(float(p.grad.abs().sum()) == 0.0 for p in params.values())


def test_head_without_negatives_embeds_only_persons(head_inputs):
    reid_map, part_embeds, proposals, samples = head_inputs
    cfg = _head_cfg()
    cfg['train_cfg']['embed_negatives'] = False
    head = MODELS.build(cfg).train()
    boxes, ids = head.sample(proposals, samples)
    assert (ids >= -1).all() and len(ids) == sum(len(b) for b in boxes)


def test_head_predict_gives_unit_embeddings_and_none_for_no_box(head_inputs):
    reid_map, part_embeds, _, _ = head_inputs
    head = MODELS.build(_head_cfg(train=False)).eval()
    boxes = [
        torch.tensor([[0., 0., 40., 80.], [20., 10., 60., 120.]]),
        torch.tensor([[5., 5., 60., 100.]])
    ]
    with torch.no_grad():
        emb = head.predict(reid_map, part_embeds, boxes)
        empty = head.predict(
            reid_map, part_embeds,
            [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert emb.shape == (3, EMBED_DIM)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert not torch.allclose(emb[0], emb[1])
    assert empty.shape == (0, EMBED_DIM)
    # without train_cfg it has no assigner: its loss refuses
    with pytest.raises(RuntimeError, match='train_cfg'):
        head.loss(reid_map, part_embeds, [], [])


def test_head_refuses_unknown_proposals():
    cfg = _head_cfg()
    cfg['train_cfg']['proposals'] = ('rpn', 'gt')
    with pytest.raises(ValueError, match='proposals must name some of'):
        MODELS.build(cfg)


# ----------------------------------------------------- in the detector
def _model_cfg(tiny_sd_dir: str) -> Config:
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.sd_path = tiny_sd_dir
    return cfg


def _former_state_dict(state: dict) -> OrderedDict:
    """``state`` with the keys (and module metadata) of the former layout."""

    def old(key: str) -> str:
        for new, former in FORMER.items():
            if key.startswith(new):
                return former + key[len(new):]
            if key + '.' == new:
                return former[:-1]
        return key

    out = OrderedDict((old(k), v.clone()) for k, v in state.items())
    out._metadata = OrderedDict(
        (old(k), dict(v)) for k, v in state._metadata.items())
    return out


def _build(model_cfg, seed: int):
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def model_cfg(tiny_sd_dir):
    register_all_modules(init_default_scope=False)
    return _model_cfg(tiny_sd_dir).model


@pytest.fixture(scope='module')
def trained_state(model_cfg):
    """The weights of a model with non-trivial OIM tables and BN stats."""
    model = _build(model_cfg, seed=1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and not name.startswith('backbone.'):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return model.state_dict()


def test_converter_upgrades_a_former_checkpoint(model_cfg, trained_state,
                                                tmp_path):
    """tools/model_converters/upgrade_checkpoint_0_1_0.py renames the keys
    of the former layout: the result loads strictly, through the fit check
    and mmengine's loader, into the current model, with the same weights."""
    converter = _converter()
    former = _former_state_dict(trained_state)
    assert any(k.startswith('reid_head.') for k in former)
    assert {'reid_loss.lut', 'reid_loss.cq'} <= set(former)
    assert not any(k.startswith('reid_roi_head.') for k in former)
    src, dst = tmp_path / 'former.pth', tmp_path / 'upgraded.pth'
    torch.save(dict(state_dict=former, meta={}), str(src))
    # the former keys do not fit the model as they are
    model = _build(model_cfg, seed=3)
    with pytest.raises(CheckpointMismatchError, match='reid_head'):
        check_checkpoint_fits(model, dict(state_dict=former), str(src))

    assert converter.main([str(src), str(dst)]) == 0
    upgraded = safe_torch_load(str(dst))
    assert upgraded['meta'] == {}
    assert list(upgraded['state_dict']) == list(trained_state)
    assert set(upgraded['state_dict']._metadata) == set(
        trained_state._metadata)
    fit = check_checkpoint_fits(model, upgraded, str(dst))
    assert fit['loaded'] == fit['total']
    load_state_dict(model, upgraded['state_dict'], strict=True)
    now = model.state_dict()
    for k in trained_state:
        assert torch.equal(now[k], trained_state[k]), k
    # a current checkpoint goes through unchanged
    assert converter.upgrade_state_dict(trained_state).keys() == \
        trained_state.keys()
    # the written file is not replaced without --force
    before = dst.read_bytes()
    with pytest.raises(SystemExit, match='already exists'):
        converter.main([str(src), str(dst)])
    assert dst.read_bytes() == before
    assert converter.main([str(src), str(dst), '--force']) == 0


def _converter():
    """tools/model_converters/upgrade_checkpoint_0_1_0.py as a module."""
    return load_tool('tools/model_converters/upgrade_checkpoint_0_1_0.py')
