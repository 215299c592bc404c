# Copyright (c) mmpsearch contributors. All rights reserved.
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_CONFIG = str(REPO / 'tests' / 'data' / 'configs' / 'toy_train.py')


def tool_env(cuda: bool = False) -> dict:
    """Environment for running the tools as a user would, from the repo;
    on the CPU (no visible GPU) unless ``cuda``."""
    env = dict(os.environ)
    if not cuda:
        env['CUDA_VISIBLE_DEVICES'] = ''
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env['PATH'] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get('PATH', '')])
    env['OMP_NUM_THREADS'] = '1'
    return env


def run_tool(args, cwd=None, check=True, timeout=300, cuda=False):
    """Run ``args`` (a tools/ script and its arguments) in a subprocess, on
    the CPU unless ``cuda``."""
    if args[0].endswith('.py'):
        cmd = [sys.executable, str(REPO / args[0])] + list(args[1:])
    else:
        cmd = ['bash', str(REPO / args[0])] + list(args[1:])
    proc = subprocess.run(
        cmd,
        cwd=cwd or REPO,
        env=tool_env(cuda),
        capture_output=True,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


@pytest.fixture
def toy_config():
    return TOY_CONFIG
