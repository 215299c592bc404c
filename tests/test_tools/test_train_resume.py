# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/train.py: training, --resume, load_from and bad input."""

import torch

from mmpsearch.utils import safe_torch_load
from .conftest import run_tool


def _weights(path):
    ckpt = safe_torch_load(str(path), map_location='cpu')
    return ckpt, {k: v.clone() for k, v in ckpt['state_dict'].items()}


def test_train_then_resume_matches_uninterrupted(tmp_path, toy_config):
    straight = tmp_path / 'straight'
    run_tool(['tools/train.py', toy_config, '--work-dir', str(straight)])
    ckpt_straight, w_straight = _weights(straight / 'iter_6.pth')
    assert ckpt_straight['meta']['iter'] == 6

    # Stop after 4 iterations, then resume to 6 from the saved checkpoint.
    interrupted = tmp_path / 'interrupted'
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(interrupted), '--cfg-options', 'train_cfg.max_iters=4'
    ])
    ckpt4, _ = _weights(interrupted / 'iter_4.pth')
    assert ckpt4['meta']['iter'] == 4
    # Adam's moments are in the checkpoint, so resuming must restore them.
    assert ckpt4['optimizer']['state'], 'optimizer state was not saved'
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(interrupted), '--resume',
        str(interrupted / 'iter_4.pth')
    ])
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 4' in log
    # it went on from iteration 5, it did not start again
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [2/6]' not in log
    ckpt_resumed, w_resumed = _weights(interrupted / 'iter_6.pth')
    assert ckpt_resumed['meta']['iter'] == 6
    # The same weights as the uninterrupted run: same data position, same
    # Adam moments, same learning-rate schedule.
    for key in w_straight:
        torch.testing.assert_close(w_resumed[key], w_straight[key])


def test_resume_auto_picks_latest(tmp_path, toy_config):
    work = tmp_path / 'work'
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=2'
    ])
    proc = run_tool(
        ['tools/train.py', toy_config, '--work-dir',
         str(work), '--resume'])
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr
    assert (work / 'iter_6.pth').is_file()
    # the earlier checkpoint is still there, untouched
    assert (work / 'iter_2.pth').is_file()


def test_load_from_loads_weights(tmp_path, toy_config):
    first = tmp_path / 'first'
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(first), '--cfg-options', 'train_cfg.max_iters=2'
    ])
    _, w_first = _weights(first / 'iter_2.pth')
    second = tmp_path / 'second'
    # lr 0: the weights after one step are exactly the loaded ones
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(second), '--cfg-options', f'load_from={first}/iter_2.pth',
        'train_cfg.max_iters=2', 'optim_wrapper.optimizer.lr=0.0'
    ])
    assert 'Load checkpoint from' in proc.stdout + proc.stderr
    ckpt, w_second = _weights(second / 'iter_2.pth')
    for key in w_first:
        torch.testing.assert_close(w_second[key], w_first[key])


def test_wrong_config_key_is_named(tmp_path, toy_config):
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(tmp_path), '--cfg-options', 'trian_cfg.max_iters=2'
    ],
                    check=False)
    assert proc.returncode != 0
    assert "no key 'trian_cfg'" in proc.stderr
    assert "did you mean 'train_cfg'" in proc.stderr


def test_missing_files_are_named(tmp_path, toy_config):
    proc = run_tool(['tools/train.py', str(tmp_path / 'nope.py')], check=False)
    assert proc.returncode != 0
    assert f'config file {tmp_path / "nope.py"} does not exist' in proc.stderr
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(tmp_path), '--resume',
        str(tmp_path / 'missing.pth')
    ],
                    check=False)
    assert proc.returncode != 0
    assert f'--resume {tmp_path / "missing.pth"}: no such checkpoint' in \
        proc.stderr
