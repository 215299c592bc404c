# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/misc/gpu_check.sh (`make gpu-check`), planned with DRY_RUN=1: each
step's tool and config exists and every --cfg-options key is one of its
config, on CUDA and on the CPU (no --amp there: AmpOptimWrapper needs a
GPU). Its CPU run (`make gpu-check DEVICE=cpu`) takes minutes, too long for
the suite."""
import os
import shlex

import pytest
from mmengine.config import Config

from .conftest import REPO, run_ok

SCRIPT = REPO / 'tools' / 'misc' / 'gpu_check.sh'


def plan(device):
    env = dict(os.environ, DRY_RUN='1', DEVICE=device, WORK='/tmp/planned')
    proc = run_ok(['bash', str(SCRIPT)], env=env)
    steps = {}
    for line in proc.stdout.splitlines():
        assert line.startswith('[gpu-check] '), line
        name, _, cmd = line[len('[gpu-check] '):].partition(': ')
        steps[name] = cmd if cmd.startswith('skipped') or name == 'data' \
            else shlex.split(cmd)
    return steps


def _has_key(cfg, dotted):
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif part in node:
            node = node[part]
        else:
            return False
    return True


@pytest.mark.parametrize('device', ['cuda', 'cpu'])
def test_every_planned_step_names_real_tools_configs_and_keys(device):
    steps = plan(device)
    assert list(steps) == [
        'versions', 'data', 'teacher', 'embeddings', 'psdiff', 'psdiff_amp',
        'tiny_sd', 'diffps', 'gpu_tests', 'benchmark_synthetic',
        'benchmark_r50'
    ]
    cuda_only = ('psdiff_amp', 'gpu_tests', 'benchmark_r50')
    for name, cmd in steps.items():
        if name in cuda_only and device == 'cpu':
            assert cmd.startswith('skipped'), (name, cmd)
            continue
        if isinstance(cmd, str):
            continue
        assert ('--amp'
                in cmd) == (device == 'cuda'
                            and name in ('psdiff_amp', 'diffps')), (name, cmd)
        for arg in cmd[1:]:
            if arg.startswith(('tools/', 'configs/', 'tests/')):
                assert (REPO / arg).exists(), (name, arg)
        if '--cfg-options' in cmd:
            config = next(
                a for a in cmd if a.startswith(('configs/', 'tests/data/')))
            cfg = Config.fromfile(str(REPO / config))
            options = cmd[cmd.index('--cfg-options') + 1:]
            for opt in options:
                key = opt.split('=', 1)[0]
                # new keys, read with a default (by the loop, the metric)
                if key in ('train_cfg.val_begin', 'val_evaluator.score_thr'):
                    continue
                assert _has_key(cfg, key), (name, key)
    bench = steps['benchmark_synthetic']
    assert bench[bench.index('--steps') + 1:bench.index('--steps') +
                 3] == ['1', '8']
    assert '--baseline' in bench
    assert bench[bench.index('--device') + 1] == device
    if device == 'cuda':
        assert ' -m gpu tests/test_gpu ' in ' '.join(steps['gpu_tests'])


def test_make_gpu_check_runs_the_script():
    proc = run_ok(['make', '-n', 'gpu-check', 'DEVICE=cpu'])
    assert 'DEVICE=cpu' in proc.stdout
    assert 'tools/misc/gpu_check.sh' in proc.stdout
