# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/dist_train.sh with 2 processes on CPU (gloo)."""
import torch

from mmpsearch.utils import safe_torch_load
from .conftest import run_tool


def test_dist_train_two_processes_on_cpu(tmp_path, toy_config):
    work = tmp_path / 'dist'
    proc = run_tool([
        'tools/dist_train.sh', toy_config, '2', '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=4',
        'train_dataloader.batch_size=2'
    ])
    log = proc.stdout + proc.stderr
    assert 'Distributed training is not used' not in log
    # one checkpoint per saving iteration, written once (by rank 0)
    ckpts = sorted(p.name for p in work.glob('*.pth'))
    assert ckpts == ['iter_2.pth', 'iter_4.pth']
    dist_ckpt = safe_torch_load(str(work / 'iter_4.pth'))
    assert dist_ckpt['meta']['iter'] == 4

    # DDP averages the gradients of the two ranks' batches of 2 (samples
    # 0,2 and 1,3), which is the gradient of one batch of 4 on one process:
    # the same weights prove both ranks trained and stayed in sync.
    single = tmp_path / 'single'
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(single), '--cfg-options', 'train_cfg.max_iters=4',
        'train_dataloader.batch_size=4'
    ])
    single_ckpt = safe_torch_load(str(single / 'iter_4.pth'))
    for key, value in single_ckpt['state_dict'].items():
        torch.testing.assert_close(
            dist_ckpt['state_dict'][key], value, rtol=1e-5, atol=1e-6)
