# Copyright (c) mmpsearch contributors. All rights reserved.
import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from mmpsearch.utils import cli_args

REPO = Path(__file__).resolve().parents[2]
TOY_CONFIG = str(REPO / 'tests' / 'data' / 'configs' / 'toy_train.py')
#: the searcher of mmpsearch/testing/oracle_searcher.py: its boxes are a
#: file's, no weights to train
ORACLE = str(REPO / 'tests' / 'data' / 'configs' / 'oracle_searcher.py')


def _cli_args_actions(call: ast.Call) -> List[argparse.Action]:
    """The options that ``call`` adds, when it calls a helper of
    :mod:`mmpsearch.utils.cli_args` (``add_force_arg(parser, ...)``): the
    helper run on a fresh parser with the call's (literal) arguments;
    ``[]`` for any other call."""
    name = getattr(call.func, 'id', '')
    if not (name.startswith('add_') and hasattr(cli_args, name)):
        return []
    parser = argparse.ArgumentParser(add_help=False)
    getattr(cli_args, name)(parser,
                            *[ast.literal_eval(a) for a in call.args[1:]], **{
                                k.arg: ast.literal_eval(k.value)
                                for k in call.keywords
                            })
    return parser._actions


def declared_options(tree: ast.AST) -> List[Tuple[List[str], str]]:
    """``(names, dest)`` of every option a tool's source declares: its
    ``add_argument`` calls with literal names (``dest`` from ``dest=`` or the
    first long flag) and the options its :mod:`mmpsearch.utils.cli_args`
    helpers add (a positional's names: ``[dest]``). For the scans of the
    tools' sources."""
    options = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for action in _cli_args_actions(node):  # add_json_args(parser) ...
            options.append((action.option_strings
                            or [action.dest], action.dest))
        func = node.func
        if getattr(func, 'attr', getattr(func, 'id', '')) != 'add_argument':
            continue
        names = [
            a.value for a in node.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        if not names:
            continue
        dest = ([n for n in names if n.startswith('--')] or names)[0]
        dest = dest.lstrip('-').replace('-', '_')
        for kw in node.keywords:
            if kw.arg == 'dest' and isinstance(kw.value, ast.Constant):
                dest = kw.value.value
        options.append((names, dest))
    return options


def tool_env(cuda: bool = False) -> dict:
    """Environment for running the tools as a user would, from the repo;
    on the CPU (no visible GPU) unless ``cuda``."""
    env = dict(os.environ)
    if not cuda:
        env['CUDA_VISIBLE_DEVICES'] = ''
    env['PYTHONPATH'] = os.pathsep.join([str(REPO),
                                         env.get('PYTHONPATH',
                                                 '')]).rstrip(os.pathsep)
    env['PATH'] = os.pathsep.join(
        [str(Path(sys.executable).parent),
         env.get('PATH', '')])
    env['OMP_NUM_THREADS'] = '1'
    return env


def oracle_cfg(tmp: Path):
    """The :data:`ORACLE` config with an empty boxes file under ``tmp``."""
    from mmengine.config import Config
    boxes_file = tmp / 'boxes.json'
    boxes_file.write_text('{}')
    cfg = Config.fromfile(ORACLE)
    cfg.model.boxes_file = str(boxes_file)
    return cfg


def make_oracle_scenes(tmp: Path):
    """A synthetic CUHK-SYSU tree under ``tmp`` and the boxes file of the
    oracle searcher (mmpsearch/testing/oracle_searcher.py)."""
    from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
    root = tmp / 'synthetic_cuhk'
    make_synthetic('cuhk', str(root), num_images=202, num_ids=10, seed=5)
    protocol = load_cuhk_protocol(str(root), 50)
    boxes_file = tmp / 'boxes.json'
    boxes_file.write_text(
        json.dumps({
            n: g.boxes.tolist()
            for n, g in protocol.gallery.items()
        }))
    return root, boxes_file


def oracle_test_args(root, boxes_file, work_dir) -> list:
    """``tools/test.py`` options testing the oracle searcher on the tree of
    :func:`make_oracle_scenes` (TestG50)."""
    return [
        '--work-dir',
        str(work_dir), '--cfg-options', f'model.boxes_file={boxes_file}',
        f'test_dataloader.dataset.datasets.0.data_root={root}',
        f'test_dataloader.dataset.datasets.1.data_root={root}',
        f'test_evaluator.data_root={root}', 'test_evaluator.gallery_size=50'
    ]


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


def run_ok(cmd: list,
           cwd=REPO,
           env: Optional[dict] = None,
           timeout: int = 60) -> subprocess.CompletedProcess:
    """Run ``cmd`` (text output captured) and check that it exits 0,
    showing its stderr where it does not."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def toy_config():
    return TOY_CONFIG
