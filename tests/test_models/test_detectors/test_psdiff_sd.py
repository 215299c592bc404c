# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's CDL denoiser on Stable Diffusion features (the combination of
the two papers): the SDFeaturePyramid neck, and the psdiff_sd21 configs
trained for a few iterations on a tiny random SD and synthetic scenes."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmpsearch.datasets.teacher_cache import save_teacher_embeddings
from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.models.necks import DGRPN, SDFeaturePyramid
from mmpsearch.registry import DATASETS, MODELS
from mmpsearch.utils.setup_env import register_all_modules
from ..conftest import (assert_gallery_results_format,
                        assert_stable_diffusion_frozen,
                        gallery_and_query_outputs, loss_history, train_runner)

CONFIGS = osp.join(
    osp.dirname(__file__), '..', '..', '..', 'configs', 'psdiff')
NUM_ITERS = 12
# widths of the tiny SD's T[3] (det), T[1] and T[2] (ReID) maps
DET_C, REID_C = 32, ((64, ), (48, 48))
H, W = 128, 192  # not square: rows and columns must not be swapped


def _neck(**kwargs) -> SDFeaturePyramid:
    cfg = dict(
        dgrpn=dict(type=DGRPN, in_channels=DET_C, out_channels=24),
        reid_in_channels=REID_C,
        reid_strides=(32, 16),
        out_channels=16)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return SDFeaturePyramid(**cfg).eval()


@pytest.fixture(scope='module')
def sd_feats(tiny_backbone) -> dict:
    """The tiny SD's output for a non-square batch, with the two ReID
    levels the pyramid reads (strides 32 and 16)."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    with torch.no_grad():
        out = tiny_backbone(img)
    assert len(out['reid_feats']) == 3  # 1/32, 1/16, 1/8
    return dict(out, reid_feats=out['reid_feats'][:2])


# ----------------------------------------------------------------- neck
@pytest.mark.parametrize('extra_level', [None, 'maxpool', 'conv'])
def test_pyramid_shapes_and_strides(sd_feats, extra_level):
    neck = _neck(extra_level=extra_level)
    with torch.no_grad():
        outs = neck(sd_feats)
    strides = (8, 16, 32) + ((64, ) if extra_level else ())
    assert neck.featmap_strides == strides
    assert [tuple(o.shape) for o in outs] == [(2, 16, H // s, W // s)
                                              for s in strides]


def test_finest_level_is_the_dgrpn_enhanced_map(sd_feats):
    neck = _neck()
    with torch.no_grad():
        neck.dgrpn.gamma.fill_(1.0)  # eq. 4 with the guidance switched on
        outs = neck(sd_feats)
        f_det = neck.dgrpn(sd_feats['det_feat'], sd_feats['attn_map'])[0]
        torch.testing.assert_close(outs[0], neck.lateral_convs[0](f_det))
        # the "person" map is used: another map, another stride-8 level
        other = dict(sd_feats, attn_map=sd_feats['attn_map'].flip(-1))
        assert not torch.allclose(neck(other)[0], outs[0])
        # and both maps of the stride-16 level are fused
        maps = [m.clone() for m in sd_feats['reid_feats'][1]]
        maps[1] = maps[1] + 1
        bumped = neck(
            dict(sd_feats, reid_feats=[sd_feats['reid_feats'][0], maps]))
    assert not torch.allclose(bumped[1], outs[1])
    torch.testing.assert_close(bumped[0], outs[0])
    torch.testing.assert_close(bumped[2], outs[2])


@pytest.mark.parametrize('key', ['det_feat', 'attn_map', 'reid_feats'])
def test_missing_key_is_named(sd_feats, key):
    feats = {k: v for k, v in sd_feats.items() if k != key}
    with pytest.raises(KeyError, match=f'no "{key}"'):
        _neck()(feats)
    with pytest.raises(TypeError, match='dict of StableDiffusionBackbone'):
        _neck()((sd_feats['det_feat'], ))


@pytest.mark.parametrize('kwargs, feats, match', [
    (dict(dgrpn=dict(in_channels=320)), None,
     r'det_feat has shape \(2, 32, 16, 24\), expected 320 channels'),
    (dict(reid_in_channels=((64, ), (48, 40))), None,
     r'reid_feats\[1\]\[1\] has 48 channels, expected 40'),
    (dict(reid_in_channels=((64, ), (48, ))), None,
     r'reid_feats\[1\] has 2 maps, expected 1'),
    (dict(), 'all_levels', r'reid_feats has 3 levels, expected 2'),
    (dict(reid_strides=(16, 32)), None,
     r'reid_feats\[0\]\[0\] is \(4, 6\), expected \(8, 12\) for stride 16'),
])
def test_mismatched_maps_are_clear_errors(sd_feats, tiny_backbone, kwargs,
                                          feats, match):
    if feats == 'all_levels':
        with torch.no_grad():
            feats = tiny_backbone(torch.zeros(1, 3, H, W))
    with pytest.raises(ValueError, match=match):
        _neck(**kwargs)(feats or sd_feats)


@pytest.mark.parametrize('kwargs, match', [
    (dict(reid_strides=(32, 8)), 'reid stride 8'),
    (dict(reid_strides=(32, 24)), 'reid stride 24'),
    (dict(reid_strides=(16, 16)), 'repeat a stride'),
    (dict(reid_strides=(32, )), 'reid_strides 1'),
    (dict(extra_level='avgpool'), "extra_level must be None or one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _neck(**kwargs)


# ------------------------------------------------- synthetic config, trained
def _write_teacher(cfg: Config, path: str) -> None:
    """Random unit embeddings for every training box, in the .npz format of
    tools/extract_teacher_embeddings.py."""
    dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    rng = np.random.default_rng(0)
    dim = cfg.model.bbox_head.diffusion.embed_dims
    ids, boxes, embeds = [], [], []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        b = np.asarray([inst['bbox'] for inst in info['instances']],
                       np.float32).reshape(-1, 4)
        e = rng.standard_normal((len(b), dim)).astype(np.float32)
        ids.append(info['img_id'])
        boxes.append(b)
        embeds.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    save_teacher_embeddings(path, ids, boxes, embeds)


@pytest.fixture(scope='module')
def runner(tiny_sd_dir, synthetic_root, tmp_path_factory):
    register_all_modules(init_default_scope=False)
    work_dir = str(tmp_path_factory.mktemp('work_dir'))
    cfg = Config.fromfile(
        osp.join(
            osp.dirname(__file__), '..', '..', 'data', 'configs',
            'psdiff_sd21_synthetic.py'))
    cfg.model.backbone.sd_path = tiny_sd_dir
    train = cfg.train_dataloader
    train.dataset.data_root = synthetic_root
    # one fixed batch of two images at one noise level, so that the falling
    # loss is learning and not the draw of images, flips or timesteps
    train.update(batch_size=2)
    train.dataset.indices = 2
    train.sampler.shuffle = False
    teacher = osp.join(work_dir, 'teacher.npz')
    for t in train.dataset.pipeline:
        if t.get('prob') is not None:
            t.prob = 0.0
        if 'teacher_embeds' in t:
            # the teacher file below holds random vectors: no common
            # direction to remove; 32 proposals keep the test quick
            t.update(
                teacher_embeds=teacher,
                timestep_range=(50, 51),
                center_teacher=False)
            t.diffusion.num_proposals = 32
    _write_teacher(cfg, teacher)
    for ds in cfg.test_dataloader.dataset.datasets:
        ds.data_root = synthetic_root
    cfg.val_dataloader = None
    cfg.val_cfg = None
    cfg.val_evaluator = None
    cfg.train_cfg.update(max_iters=NUM_ITERS, val_interval=10 * NUM_ITERS)
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer.lr = 1e-3
    # one CDL pass: the test is about the SD features and the pyramid
    cfg.model.train_cfg.num_passes = 1
    # and 0/1 focal class targets: IoU-aware targets grow as the boxes
    # improve, which hides the fall in 12 iterations (they are tested in
    # tests/test_models/test_criterion_cls_targets.py)
    cfg.model.bbox_head.criterion.loss_cls = dict(
        type='FocalLoss',
        use_sigmoid=True,
        gamma=2.0,
        alpha=0.25,
        loss_weight=2.0)  # a new dict: QualityFocalLoss's beta must go
    cfg.model.bbox_head.criterion.update(
        cls_pos_iou_thr=None, cls_iou_target=False)
    cfg.model.bbox_head.diffusion.num_proposals = 32
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = None
    cfg.randomness = dict(seed=0)
    cfg.work_dir = work_dir
    return train_runner(cfg)


def test_training_loss_falls(runner):
    hist = loss_history(runner)
    assert len(hist) == NUM_ITERS
    assert all(np.isfinite(hist))
    first, last = np.mean(hist[:3]), np.mean(hist[-3:])
    assert last < 0.8 * first, hist


def test_stable_diffusion_gets_no_gradient_and_no_optimizer_state(runner):
    model = runner.model
    assert isinstance(model.backbone, StableDiffusionBackbone)
    assert isinstance(model.neck, SDFeaturePyramid)
    assert_stable_diffusion_frozen(runner)
    optimizer = runner.optim_wrapper.optimizer
    # the neck trained, DGRPN's guidance weight included (the CDL's loss
    # reaches eq. 4 through the RoI features)
    neck_ids = {id(p) for p in model.neck.parameters()}
    assert neck_ids <= {id(p) for p in optimizer.state}
    assert float(model.neck.dgrpn.gamma.detach().abs()) > 0


def test_predict_gives_the_results_format(runner):
    model = runner.model
    model.eval()
    model.test_cfg.score_thr = 0.0  # a 12-iteration model: keep them all
    g_out, q_out, query_box = gallery_and_query_outputs(runner)
    dim = model.bbox_head.embed_dims

    pred = g_out.pred_instances
    n = assert_gallery_results_format(pred, g_out.metainfo['ori_shape'], dim,
                                      1e-3)
    assert n <= model.test_cfg.max_per_img
    assert torch.all(pred.scores[:-1] >= pred.scores[1:])

    pred = q_out.pred_instances
    assert len(pred) == 1
    torch.testing.assert_close(pred.bboxes[0], query_box)
    assert pred.embeddings.shape == (1, dim)


# ---------------------------------------------------------- full config
def test_cuhk_config_builds_with_the_tiny_sd(tiny_sd_dir):
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(CONFIGS, 'psdiff_sd21_cuhk.py'))
    assert 'diffps_model' not in cfg  # the helper import is deleted
    # PSDiff's recipe (psdiff_r50_cuhk.py) on DiffPS's input
    gen = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if 'teacher_embeds' in t
    ][0]
    assert gen.diffusion == cfg.model.bbox_head.diffusion
    assert gen.diffusion.num_proposals == 300
    assert cfg.optim_wrapper.optimizer.lr == 2.5e-5
    assert cfg.train_cfg.max_iters == 90000
    assert cfg.model.data_preprocessor.pad_size_divisor == 64
    assert cfg.model.data_preprocessor.mean == [127.5] * 3

    cfg.model.backbone.sd_path = tiny_sd_dir
    model = MODELS.build(cfg.model)
    strides = cfg.model.bbox_head.denoiser.roi_extractor.featmap_strides
    assert model.neck.featmap_strides == tuple(strides) == (8, 16, 32, 64)
    sd_ids = {id(p) for p in model.backbone.frozen_parameters()}
    assert not sd_ids & {id(p) for p in model.parameters()}
    # the config's widths are SD 2.1's; the tiny SD's maps are narrower,
    # and the neck says so
    with torch.no_grad(), pytest.raises(
            ValueError, match='det_feat .* expected 320 channels'):
        model.extract_feat(torch.zeros(1, 3, 64, 64))
