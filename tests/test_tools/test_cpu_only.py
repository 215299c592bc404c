# Copyright (c) mmpsearch contributors. All rights reserved.
"""The suite runs on the CPU, also on a machine with a GPU: the process
and every tool it starts see no CUDA device (tests/conftest.py), and the
``gpu`` tests are left out unless ``-m gpu`` selects them."""
import os
import subprocess
import sys

import torch

from ..conftest import gpu_selected
from .conftest import REPO, run_ok, tool_env

PROBE = ('import os, torch; print(repr(os.environ.get("CUDA_VISIBLE_DEVICES"'
         ')), torch.cuda.device_count())')


def test_the_suite_hides_the_gpus():
    assert os.environ.get('CUDA_VISIBLE_DEVICES') == ''
    assert not torch.cuda.is_available()


def test_tool_subprocesses_see_no_cuda_device(monkeypatch):
    env = tool_env()
    assert env['CUDA_VISIBLE_DEVICES'] == ''
    # also when the parent process has a GPU visible
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0')
    assert tool_env()['CUDA_VISIBLE_DEVICES'] == ''
    assert tool_env(cuda=True)['CUDA_VISIBLE_DEVICES'] == '0'
    proc = run_ok([sys.executable, '-c', PROBE], env=env, timeout=120)
    assert proc.stdout.split() == ["''", '0']


def test_gpu_marker_selection():
    assert gpu_selected('gpu') and gpu_selected('gpu or slow')
    assert not gpu_selected('not gpu') and not gpu_selected('')
    assert not gpu_selected('slow')


def test_gpu_tests_are_not_collected_by_default():

    def collect(*args):
        proc = subprocess.run([
            sys.executable, '-m', 'pytest', '--collect-only', '-q',
            'tests/test_gpu', *args
        ],
                              cwd=REPO,
                              env=tool_env(),
                              capture_output=True,
                              text=True,
                              timeout=300)
        return proc.stdout + proc.stderr

    out = collect()
    assert 'deselected' in out and 'test_cuda.py::' not in out, out
    out = collect('-m', 'gpu')
    assert 'test_cuda.py::test_psdiff_predicts_on_cuda_as_on_cpu' in out, out
