# Copyright (c) mmpsearch contributors. All rights reserved.
"""The runtime settings every training config inherits from
``configs/_base_/default_runtime.py`` for distributed runs: a per-rank
training seed, and a timeout on the process group that reaches
``init_process_group`` through mmengine's ``init_dist`` and through this
project's CPU (gloo) start."""
import datetime
import inspect
import os.path as osp
from glob import glob

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TRAIN_CONFIGS = sorted(
    p for p in glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p and '/teacher/' not in p) + [
        osp.join(REPO, 'tests', 'data', 'configs', 'diffps_sd21_synthetic.py')
    ]
DIFFPS = [p for p in TRAIN_CONFIGS if osp.basename(p).startswith('diffps')]


def test_the_walk_finds_the_diffps_and_psdiff_configs():
    names = {osp.basename(p) for p in TRAIN_CONFIGS}
    assert {
        'diffps_sd21_cuhk.py', 'diffps_sd21_prw.py',
        'diffps_sd21_synthetic.py', 'psdiff_r50_cuhk.py',
        'psdiff_r18_synthetic.py'
    } <= names
    assert len(DIFFPS) == 3


@pytest.mark.parametrize(
    'path', TRAIN_CONFIGS, ids=[osp.relpath(p, REPO) for p in TRAIN_CONFIGS])
def test_ranks_draw_different_training_noise(path):
    """``diff_rank_seed``: mmengine seeds each rank with seed + rank, so
    DiffPS's training noise (posterior sample, forward noise) and PSDiff's
    noisy boxes are not the same on every rank."""
    cfg = Config.fromfile(path)
    assert cfg.randomness.diff_rank_seed is True
    # what Runner.from_cfg passes on: set_randomness(**randomness)
    inspect.signature(Runner.set_randomness).bind(None, **cfg.randomness)


@pytest.mark.parametrize(
    'path', TRAIN_CONFIGS, ids=[osp.relpath(p, REPO) for p in TRAIN_CONFIGS])
def test_process_group_has_a_timeout(path):
    cfg = Config.fromfile(path)
    timeout = cfg.env_cfg.dist_cfg.timeout
    assert isinstance(timeout, int) and 600 <= timeout <= 3600
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'


def test_timeout_reaches_init_process_group(monkeypatch):
    """Through mmengine's ``init_dist`` (the Runner's GPU start) and
    through ``setup_cpu_distributed`` (tools/train.py without CUDA)."""
    from mmengine.dist import utils as mmengine_dist

    from mmpsearch.utils import dist as cpu_dist
    cfg = Config.fromfile(DIFFPS[0])
    seconds = cfg.env_cfg.dist_cfg.timeout
    got = []

    def fake_init(*args, **kwargs):
        got.append(kwargs)

    monkeypatch.setattr(torch.distributed, 'init_process_group', fake_init)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    # init_dist would otherwise set the start method of this test process
    monkeypatch.setattr(
        mmengine_dist.mp, 'get_start_method', lambda allow_none=False: 'fork')
    for key, value in dict(
            RANK='0',
            LOCAL_RANK='0',
            WORLD_SIZE='1',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT='29500').items():
        monkeypatch.setenv(key, value)

    mmengine_dist.init_dist('pytorch', **cfg.env_cfg.dist_cfg)
    assert got[-1]['timeout'] == datetime.timedelta(seconds=seconds)
    assert got[-1]['backend'] == 'nccl'

    cfg.model_wrapper_cfg = None
    assert cpu_dist.setup_cpu_distributed(cfg, 'pytorch')
    assert got[-1]['timeout'] == datetime.timedelta(seconds=seconds)
    assert got[-1]['backend'] == 'gloo'
