# Copyright (c) mmpsearch contributors. All rights reserved.
import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_tool(rel: str, name: Optional[str] = None) -> ModuleType:
    """The script ``rel`` of the repository (e.g.
    ``'tools/analysis_tools/eval_search.py'``) as a fresh module, so that
    its functions and ``main()`` run in this process: tools/, scripts/ and
    demo/ are not packages. ``name`` defaults to one made from ``rel``."""
    if name is None:
        name = '_tool_' + re.sub(r'\W', '_', rel)
    spec = importlib.util.spec_from_file_location(name, REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(node) -> Iterator:
    """Every leaf of ``node``, nested dicts (their values), lists and
    tuples, depth first."""
    if isinstance(node, dict):
        node = node.values()
    elif not isinstance(node, (list, tuple)):
        yield node
        return
    for value in node:
        yield from leaves(value)


def gpu_selected(markexpr: str) -> bool:
    """Whether ``-m markexpr`` selects a test marked only ``gpu``."""
    if not markexpr:
        return False
    try:
        from _pytest.mark.expression import Expression
        return Expression.compile(markexpr).evaluate(
            lambda name, **kwargs: name == 'gpu')
    except Exception:  # another pytest's private API
        return 'gpu' in markexpr and 'not gpu' not in markexpr


def pytest_configure(config):
    """The suite runs on the CPU, also on a machine with a GPU: its Runner
    tests would silently train on the GPU and test_dist_train would switch
    to NCCL. CUDA reads ``CUDA_VISIBLE_DEVICES`` when torch first
    initialises it, which importing torch does not do, so hiding the GPUs
    here (before any test module is collected) holds for this process and
    every subprocess it starts. The ``gpu`` tests (tests/test_gpu, selected
    only by ``-m gpu``; setup.cfg's ``-m 'not gpu'`` leaves them out) keep
    the GPUs."""
    if not gpu_selected(config.getoption('markexpr', '')):
        os.environ['CUDA_VISIBLE_DEVICES'] = ''


@pytest.fixture(scope='module')
def one_torch_thread():
    """Run a module on one torch thread: with tiny tensors it is faster, and
    much faster on a busy machine (OpenMP threads wait for a descheduled
    sibling)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def tiny_sd_dir(tmp_path_factory) -> str:
    """A tiny random Stable Diffusion folder of SD 2.1's block structure,
    one per session."""
    from mmpsearch.testing.tiny_sd import make_tiny_sd
    return make_tiny_sd(str(tmp_path_factory.mktemp('tiny_sd')))


@pytest.fixture(scope='session')
def tiny_cuhk(tmp_path_factory) -> str:
    """A small synthetic tree in the released CUHK-SYSU format (the smallest
    the format allows: 101 training scenes, 8 training identities)."""
    from mmpsearch.datasets.synthetic import make_synthetic
    root = tmp_path_factory.mktemp('teacher_cuhk') / 'cuhk'
    make_synthetic(
        'cuhk', str(root), num_images=202, num_ids=16, image_size=(128, 96))
    return str(root)


@pytest.fixture(scope='session')
def extract_tool():
    """tools/extract_teacher_embeddings.py as a module (tools/ is not a
    package), so its main() runs in this process."""
    return load_tool('tools/extract_teacher_embeddings.py',
                     'extract_teacher_tool')
