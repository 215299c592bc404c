# Copyright (c) mmpsearch contributors. All rights reserved.
"""`mim train / test / search mmpsearch` in the environment `make install`
builds, run as a user runs them: from another folder and without
``PYTHONPATH``, so mim finds the repository only through the installed
package (``get_installed_path('mmpsearch')/.mim``, links made by setup.py's
``add_mim_extension``).

A PEP 660 editable install (setuptools >= 80 turns ``setup.py develop`` into
one) leaves mim looking in ``site-packages/mmpsearch``, which does not
exist: these tests fail there.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmpsearch.datasets import make_synthetic
from mmpsearch.utils import safe_torch_load
from .conftest import ORACLE, REPO, tool_env


def _mim():
    mim = shutil.which('mim', path=str(Path(sys.executable).parent))
    assert mim, 'openmim is installed by `make install`'
    return mim


def _env():
    """tool_env() without PYTHONPATH: only what is installed is found."""
    env = tool_env()
    env.pop('PYTHONPATH', None)
    return env


def _run(args, cwd, timeout=300):
    return subprocess.run(
        args,
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout)


def test_mim_finds_the_installed_repo(tmp_path):
    proc = _run([
        sys.executable, '-c', 'from mim.utils import get_installed_path; '
        "print(get_installed_path('mmpsearch'))"
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mim_dir = Path(proc.stdout.strip().splitlines()[-1]) / '.mim'
    for name in ('tools/train.py', 'tools/test.py', 'model-index.yml'):
        assert (mim_dir / name).is_file(), (
            f'mim looks for {mim_dir / name}: install mmpsearch with '
            '`make install` (a legacy editable install, setuptools < 80)')
        assert os.path.samefile(mim_dir / name, REPO / name)


def test_mim_search(tmp_path):
    proc = _run([_mim(), 'search', 'mmpsearch', '--field', 'config'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'model-index.yml' not in proc.stderr, proc.stderr[-3000:]
    for name in ('psdiff_r18_synthetic', 'psdiff_r50_cuhk',
                 'diffps_sd21_cuhk'):
        assert name in proc.stdout, proc.stdout[-3000:]


def test_mim_train(tmp_path, toy_config):
    proc = _run([
        _mim(), 'train', 'mmpsearch', toy_config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_iters=2'
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = safe_torch_load(str(tmp_path / 'work' / 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2


@pytest.mark.usefixtures('one_torch_thread')
def test_mim_test(tmp_path):
    """The oracle searcher (mmpsearch/testing/oracle_searcher.py) on a small
    synthetic CUHK-SYSU tree: the search metrics are printed."""
    root = tmp_path / 'synthetic_cuhk'
    make_synthetic('cuhk', str(root), num_images=202, num_ids=10, seed=5)
    boxes_file = tmp_path / 'boxes.json'
    boxes_file.write_text('{}')
    ckpt = tmp_path / 'oracle.pth'
    torch.save({'state_dict': {'dummy': torch.ones(1)}, 'meta': {}}, ckpt)
    proc = _run([
        _mim(), 'test', 'mmpsearch', ORACLE, '--checkpoint',
        str(ckpt), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        f'model.boxes_file={boxes_file}',
        f'test_dataloader.dataset.datasets.0.data_root={root}',
        f'test_dataloader.dataset.datasets.1.data_root={root}',
        f'test_evaluator.data_root={root}', 'test_evaluator.gallery_size=50'
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'search/mAP' in proc.stdout + proc.stderr
