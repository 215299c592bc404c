# Copyright (c) mmpsearch contributors. All rights reserved.
"""Every config in configs/ (and the plumbing configs of tests/data) parses
and builds its model: a renamed class, a moved module or a key a leaf sets
on a base that no longer has it fails here, not in a user's first run."""
import os.path as osp
from glob import glob

import pytest
from mmengine.config import Config

from mmpsearch.registry import MODELS
from mmpsearch.utils.setup_env import register_all_modules

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = sorted(
    p for p in glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p) + sorted(
        glob(osp.join(REPO, 'tests', 'data', 'configs', '*_synthetic.py')))
PRETRAINED = ('Pretrained', 'StrictPretrainedInit')


def _offline(node, sd_path: str) -> None:
    """No weights to download or read: pretrained inits off, the teacher
    checkpoint of the two-step baseline off, Stable Diffusion -> the tiny
    random one of the tests."""
    if hasattr(node, 'items'):
        init = node.get('init_cfg')
        kind = getattr(init, 'get', lambda _: None)('type')
        if kind is not None and getattr(kind, '__name__', kind) in PRETRAINED:
            node['init_cfg'] = None
        if 'sd_path' in node:
            node['sd_path'] = sd_path
        for value in node.values():
            _offline(value, sd_path)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _offline(value, sd_path)


def test_the_walk_finds_every_method():
    names = {osp.basename(p) for p in CONFIGS}
    assert {
        'psdiff_r50_cuhk.py', 'psdiff_r50_prw.py', 'diffps_sd21_cuhk.py',
        'teacher_r50_cuhk.py', 'faster_rcnn_r50_teacher_cuhk.py',
        'diffps_sd21_synthetic.py'
    } <= names
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize('saved', [False, True], ids=['as_written', 'saved'])
@pytest.mark.parametrize(
    'path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path, saved, tiny_sd_dir, one_torch_thread, tmp_path):
    """``saved``: the copy a run writes into its work dir (classes become
    dotted names), which users pass to tools/test.py; mmdet's RoI layer
    lookup refused 'mmcv.ops.RoIAlign' in it."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(path)
    if saved:
        cfg.dump(str(tmp_path / osp.basename(path)))
        cfg = Config.fromfile(str(tmp_path / osp.basename(path)))
    for key in ('model', 'train_dataloader', 'test_dataloader',
                'test_evaluator', 'optim_wrapper'):
        assert key in cfg, f'{path} has no {key}'
    if 'reid' in cfg.model and 'checkpoint' in cfg.model.reid:
        cfg.model.reid.checkpoint = None
    _offline(cfg.model, tiny_sd_dir)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
