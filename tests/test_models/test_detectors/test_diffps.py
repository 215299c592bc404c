# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffPS end to end: the synthetic config trained for a few iterations with
mmengine's Runner on a tiny random SD and synthetic scenes, then run in test
mode on a gallery and a query image."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmpsearch.utils.setup_env import register_all_modules
from ..conftest import (assert_gallery_results_format,
                        assert_stable_diffusion_frozen,
                        gallery_and_query_outputs, loss_history, train_runner)

CONFIG = osp.join(
    osp.dirname(__file__), '..', '..', 'data', 'configs',
    'diffps_sd21_synthetic.py')
NUM_ITERS = 12


def _fixed_batch_cfg(tiny_sd_dir: str, synthetic_root: str, max_iters: int,
                     work_dir: str) -> Config:
    """The synthetic config on the tiny SD, trained ``max_iters``
    iterations on one fixed batch (the first two images, not shuffled:
    a falling loss is not sampling noise) at a constant lr of 1e-3 (the
    config's), logged every iteration, with no validation and no
    checkpoints."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.sd_path = tiny_sd_dir
    cfg.train_dataloader.dataset.data_root = synthetic_root
    cfg.train_dataloader.dataset.indices = 2
    cfg.train_dataloader.sampler.shuffle = False
    cfg.val_dataloader = None
    cfg.val_cfg = None
    cfg.val_evaluator = None
    cfg.train_cfg.update(max_iters=max_iters, val_interval=10 * max_iters)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = None
    cfg.randomness = dict(seed=0)
    cfg.work_dir = work_dir
    return cfg


@pytest.fixture(scope='module')
def runner(tiny_sd_dir, synthetic_root, tmp_path_factory):
    cfg = _fixed_batch_cfg(tiny_sd_dir, synthetic_root, NUM_ITERS,
                           str(tmp_path_factory.mktemp('work_dir')))
    for ds in cfg.test_dataloader.dataset.datasets:
        ds.data_root = synthetic_root
    return train_runner(cfg)


@pytest.mark.parametrize('key,ratio', [('loss_rpn_cls', 0.995),
                                       ('loss_reid', 0.85)])
def test_training_losses_fall(runner, key, ratio):
    """The RPN and the ReID head learn on the fixed batch. The box
    classifier is checked by :func:`test_heads_fit_a_fixed_batch` (from its
    random start near 1.3, settling at chance would pass a 10 % drop). The
    box regression loss is left out: it is normalised by the sampled RoIs
    (128 at 50 %, the official sampler), and while the RPN learns more of
    them are proposals with real offsets instead of the appended ground
    truth, so it rises at first by construction."""
    hist = loss_history(runner, key)
    assert len(hist) == NUM_ITERS
    assert all(np.isfinite(hist))
    assert all(np.isfinite(loss_history(runner)))
    first, last = np.mean(hist[:3]), np.mean(hist[-3:])
    assert last < ratio * first, hist


FIXED_ITERS = 30


@pytest.fixture(scope='module')
def fixed_feature_runner(tiny_sd_dir, synthetic_root, tmp_path_factory):
    """The synthetic config trained on one fixed batch (no flip) with the
    Stable Diffusion backbone's output computed once and then held fixed:
    everything after the backbone (DGRPN's neck, RPN, RoI head, MSFRN,
    SFAN, OIM) trains as usual. The tiny random SD's own output changes
    from pass to pass (a posterior sample and fresh noise on a random VAE),
    which is why the heads cannot fit even one batch on it."""
    cfg = _fixed_batch_cfg(
        tiny_sd_dir, synthetic_root, FIXED_ITERS,
        str(tmp_path_factory.mktemp('fixed_feature_work_dir')))
    cfg.train_dataloader.dataset.pipeline = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if 'Flip' not in str(t['type'])
    ]
    cfg.test_dataloader = None
    cfg.test_cfg = None
    cfg.test_evaluator = None
    runner = Runner.from_cfg(cfg)
    backbone = runner.model.backbone
    sd_forward = backbone.forward
    cache = {}

    def fixed_forward(img):
        if not cache:
            cache['img'] = img.clone()
            cache['out'] = sd_forward(img)
        # the batch really is fixed, so the held output is this image's
        assert torch.equal(img, cache['img'])
        return cache['out']

    backbone.forward = fixed_forward
    try:
        runner.train()
    finally:
        del backbone.forward
    assert len(cache) == 2
    return runner


def test_heads_fit_a_fixed_batch(fixed_feature_runner):
    """On fixed features of one fixed batch the box classifier gets well
    below chance (ln 2 = 0.69 for the balanced positives / negatives of the
    sampler) and the ReID loss to about 0 within 30 iterations, so a broken
    classifier, RoI feature or OIM fails here; the same run on the tiny
    random SD's fresh features per pass stays near 0.6 and 2-4."""
    cls = loss_history(fixed_feature_runner, 'loss_cls')
    reid = loss_history(fixed_feature_runner, 'loss_reid')
    assert len(cls) == len(reid) == FIXED_ITERS
    assert cls[0] > 0.6  # a random start
    assert np.mean(cls[-5:]) < 0.5 * np.log(2), cls
    assert np.mean(reid[-5:]) < 0.05, reid


def test_stable_diffusion_gets_no_gradient_and_no_optimizer_state(runner):
    assert_stable_diffusion_frozen(runner)
    model = runner.model
    # the trainable parts did train
    assert float(model.neck.gamma.detach().abs()) > 0
    # checkpoints hold no Stable Diffusion weights, but the OIM tables
    keys = model.state_dict().keys()
    assert not any(k.startswith('backbone.') for k in keys)
    assert {'reid_roi_head.loss_reid.lut',
            'reid_roi_head.loss_reid.cq'} <= set(keys)
    assert float(model.reid_roi_head.loss_reid.lut.abs().sum()) > 0


def test_test_mode_outputs_the_results_format(runner, synthetic_root):
    model = runner.model
    model.eval()
    model.roi_head.test_cfg.score_thr = 0.0  # untrained: keep detections
    g_out, q_out, query_box = gallery_and_query_outputs(runner)
    dim = model.reid_roi_head.embed_dim

    pred = g_out.pred_instances
    assert_gallery_results_format(pred, g_out.metainfo['ori_shape'], dim, 1)

    pred = q_out.pred_instances
    assert len(pred) == 1
    torch.testing.assert_close(pred.bboxes[0], query_box)
    assert float(pred.scores[0]) == 1.0
    assert pred.embeddings.shape == (1, dim)

    # and the metric takes them as they are
    from mmpsearch.evaluation import PersonSearchMetric
    metric = PersonSearchMetric(
        dataset_type='cuhk', data_root=synthetic_root, gallery_size=100)
    metric.process({}, [g_out.to_dict(), q_out.to_dict()])
    assert [r['split'] for r in metric.results] == ['gallery', 'query']
