# Copyright (c) mmpsearch contributors. All rights reserved.
"""scripts/install.sh and its helper scripts/mmcv_check.py: the mmcv wheel
cache is keyed by what the ops were compiled for (cpu / cuda<XY>), and on a
machine where torch sees a GPU an mmcv whose ops were compiled without CUDA
is not "already working" (it stops DiffPS and the baseline at their first
NMS: ``nms_impl: implementation for device cuda:0 not found``).

install.sh itself runs here with a fake interpreter: a wrapper of this
Python that answers ``-m pip`` by logging the call (and, for ``pip wheel``,
writing a stand-in wheel), and that imports stand-in ``torch``, ``mmcv``
... modules whose version values the test sets. Nothing is built, installed
or downloaded; no GPU is needed.
"""
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ..conftest import REPO, load_tool

INSTALL = REPO / 'scripts' / 'install.sh'

mc = load_tool('scripts/mmcv_check.py', 'mmcv_check')


# ---------------------------------------------------------------------------
# The helper's logic, with version values given directly
# ---------------------------------------------------------------------------
def test_target_is_torch_cuda_only_where_a_gpu_is_seen():
    assert mc.ops_target(True, '13.0') == '13.0'
    assert mc.ops_target(True, '12.4.1') == '12.4'
    # a CUDA build of torch on a machine without a GPU builds CPU ops
    assert mc.ops_target(False, '13.0') == 'cpu'
    assert mc.ops_target(False, None) == 'cpu'
    # MMCV_OPS=cuda: an image built without a GPU, for GPUs
    assert mc.ops_target(False, '13.0', 'cuda') == '13.0'
    assert mc.ops_target(True, '13.0', 'cpu') == 'cpu'
    with pytest.raises(ValueError, match='CPU build'):
        mc.ops_target(False, None, 'cuda')
    with pytest.raises(ValueError, match='MMCV_OPS'):
        mc.ops_target(True, '13.0', 'gpu')


def test_cache_key_names_what_the_ops_were_compiled_for():
    cpu = mc.cache_key('2.13.0+cu130', (3, 11), 'cpu')
    cuda = mc.cache_key('2.13.0+cu130', (3, 11), '13.0')
    assert cpu == 'torch2.13.0+cu130-py311-cpu'
    assert cuda == 'torch2.13.0+cu130-py311-cuda130'
    assert mc.old_cache_key('2.13.0+cu130', (3, 11)) == \
        'torch2.13.0+cu130-py311'
    assert mc.cache_key('2.11.0+cu130', (3, 12), '13.0') == \
        'torch2.11.0+cu130-py312-cuda130'


@pytest.mark.parametrize(
    'compiled, target, fits',
    [
        ('not available', 'cpu', True),
        ('13.0', 'cpu', True),  # CUDA ops import and run on the CPU too
        ('not available', '13.0', False),  # the CPU-built wheel on a GPU
        ('12.4', '13.0', False),  # another major version
        ('13.1', '13.0', True),  # same major: torch's own rule
        ('13.0', '13.0', True),
    ])
def test_check_needs_ops_for_torch_cuda_on_a_gpu(compiled, target, fits):
    why = mc.check_ops('2.1.0', '2.1.0', compiled, target)
    assert (why is None) == fits, why
    assert mc.check_ops('2.2.0', '2.1.0', compiled, target) is not None


def test_check_asks_the_installed_ops(monkeypatch):
    """_check reads mmcv.ops.get_compiling_cuda_version() (fake modules)."""
    import types
    mmcv = types.ModuleType('mmcv')
    mmcv.__version__ = '2.1.0'
    ops = types.ModuleType('mmcv.ops')
    ops.get_compiling_cuda_version = lambda: 'not available'
    mmcv.ops = ops
    monkeypatch.setitem(sys.modules, 'mmcv', mmcv)
    monkeypatch.setitem(sys.modules, 'mmcv.ops', ops)
    assert mc._check('2.1.0', 'cpu') is None
    assert 'compiled without CUDA' in mc._check('2.1.0', '13.0')
    ops.get_compiling_cuda_version = lambda: '13.0'
    assert mc._check('2.1.0', '13.0') is None


def test_nvcc_must_be_there_and_of_torch_major():
    assert mc.parse_nvcc_version(
        'Cuda compilation tools, release 13.0, V13.0.88') == '13.0'
    assert mc.parse_nvcc_version('bash: nvcc: not found') is None
    error, _ = mc.check_nvcc(None, '13.0', '/usr/local/cuda/bin/nvcc')
    assert 'needs nvcc' in error and 'MMCV_OPS=cpu' in error
    error, _ = mc.check_nvcc('12.4', '13.0', 'nvcc')
    assert 'CUDA 12.4' in error and 'CUDA 13.x toolkit' in error
    error, warning = mc.check_nvcc('13.2', '13.0', 'nvcc')
    assert error is None and 'same major' in warning
    assert mc.check_nvcc('13.0', '13.0', 'nvcc') == (None, None)


def _fake_wheel(path: Path, cuda: bool) -> Path:
    needed = b'libc10.so\0libtorch_cpu.so\0'
    if cuda:
        needed += b'libc10_cuda.so\0libcudart.so.13\0'
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('mmcv/__init__.py', '')
        zf.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so',
                    b'\x7fELF' + needed)
    return path


def test_old_key_wheels_move_to_the_key_of_their_ops(tmp_path):
    wheels = tmp_path / 'wheels'
    old = 'torch2.13.0+cu130-py311'
    name = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    cpu = _fake_wheel(wheels / old / name, cuda=False)
    assert mc.wheel_ops_kind(str(cpu)) == 'cpu'
    moved = mc.adopt_old_wheels(str(wheels), old, '13.0')
    assert moved == [str(wheels / f'{old}-cpu' / name)]
    assert not (wheels / old).exists()
    assert mc.wheel_ops_kind(moved[0]) == 'cpu'
    # a CUDA wheel goes to the cuda key of this torch's CUDA
    cuda = _fake_wheel(wheels / old / name, cuda=True)
    assert mc.wheel_ops_kind(str(cuda)) == 'cuda'
    assert mc.adopt_old_wheels(
        str(wheels), old, '13.0') == [str(wheels / f'{old}-cuda130' / name)]
    # nothing is overwritten: a wheel whose place is taken stays
    _fake_wheel(wheels / old / name, cuda=False)
    assert mc.adopt_old_wheels(str(wheels), old, '13.0') == []
    assert (wheels / old / name).is_file()


# ---------------------------------------------------------------------------
# install.sh itself, with a fake interpreter
# ---------------------------------------------------------------------------
FAKE_PYTHON = """#!/usr/bin/env bash
# pip: log the call; `pip wheel -w DIR` writes a stand-in wheel that
# remembers FORCE_CUDA; `pip install X.whl` "installs" it (FAKE_STATE)
if [ "$1" = -m ] && [ "$2" = pip ]; then
  shift 2
  echo "pip FORCE_CUDA=${{FORCE_CUDA:-}} $*" >> "$FAKE_LOG"
  prev=
  for a in "$@"; do
    if [ "$prev" = -w ] && [[ " $* " == *" wheel "* ]]; then
      echo "FORCE_CUDA=${{FORCE_CUDA:-}}" \\
        > "$a/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
    fi
    case "$a" in *.whl) cp "$a" "$FAKE_STATE" ;; esac
    prev=$a
  done
  exit 0
fi
# -P: the repo (the working directory) is not on sys.path, so the
# stand-in mmpsearch below is imported, not the real one
exec {python} -P "$@"
"""

FAKE_MODULES = {
    'torch/__init__.py':
    """
import os, types
__version__ = os.environ['FAKE_TORCH_VERSION']
version = types.SimpleNamespace(cuda=os.environ.get('FAKE_TORCH_CUDA') or None)
class cuda:
    @staticmethod
    def is_available():
        return os.environ.get('FAKE_CUDA_AVAILABLE') == '1'
def zeros(*args, **kwargs):
    return None
""",
    'torch/utils/__init__.py':
    '',
    'torch/utils/cpp_extension.py':
    """
import os
CUDA_HOME = os.environ.get('FAKE_CUDA_HOME') or None
""",
    'torchvision/__init__.py':
    '',
    'torchvision/ops.py':
    'def nms(*args):\n    return None\n',
    # installed: FAKE_MMCV_CUDA is its compiled CUDA version; after a fake
    # `pip install` of a stand-in wheel: that wheel's
    'mmcv/__init__.py':
    """
import os
state = os.environ['FAKE_STATE']
if not os.path.exists(state) and 'FAKE_MMCV_CUDA' not in os.environ:
    raise ImportError('no mmcv')
__version__ = '2.1.0'
""",
    'mmcv/ops.py':
    """
import os
def get_compiling_cuda_version():
    state = os.environ['FAKE_STATE']
    if os.path.exists(state):
        with open(state, 'rb') as f:
            built = f.read()
        return (os.environ['FAKE_NVCC'] if b'FORCE_CUDA=1' in built
                else 'not available')
    return os.environ['FAKE_MMCV_CUDA']
""",
    'mmpsearch/__init__.py':
    "__version__ = 'fake'\n",
    'mmdet/__init__.py':
    '',
    'mmpretrain/__init__.py':
    '',
    'diffusers/__init__.py':
    '',
    # get_installed_path: the folder mim would look in (FAKE_MIM_ROOT)
    'mim/__init__.py':
    '',
    'mim/utils.py':
    """
import os
def get_installed_path(package):
    return os.environ['FAKE_MIM_ROOT']
""",
}


def run_dirs(wheels: Path):
    return sorted(p for p in wheels.iterdir() if p.is_dir())


def builds(calls):
    """The `pip wheel` calls (mmcv builds) of a run."""
    return [c for c in calls if ' --disable-pip-version-check wheel ' in c]


@pytest.fixture
def fake_install(tmp_path):
    """Run install.sh against a fake venv; returns run(**env) ->
    (returncode, output, pip calls)."""
    site = tmp_path / 'site'
    for rel, text in FAKE_MODULES.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    python = venv / 'bin' / 'python'
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    # step 3's stamp: the requirements are "installed"
    stamp = subprocess.run(
        'cat requirements/*.txt setup.py | sha256sum | cut -d" " -f1',
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True).stdout
    (venv / '.mmpsearch-install-stamp').write_text(stamp)
    cuda_home = tmp_path / 'cuda'
    (cuda_home / 'bin').mkdir(parents=True)
    log = tmp_path / 'pip.log'

    def run(nvcc=None, **env):
        if nvcc:
            (cuda_home / 'bin' / 'nvcc').write_text(
                '#!/bin/sh\necho "Cuda compilation tools, release '
                f'{nvcc}, V{nvcc}.88"\n')
            (cuda_home / 'bin' / 'nvcc').chmod(0o755)
        full = dict(
            os.environ,
            PYTHONPATH=str(site),
            VENV=str(venv),
            MMPSEARCH_CACHE=str(tmp_path / 'cache'),
            FAKE_LOG=str(log),
            FAKE_STATE=str(tmp_path / 'installed_mmcv'),
            FAKE_TORCH_VERSION='2.13.0+cu130',
            FAKE_TORCH_CUDA='13.0',
            FAKE_NVCC=nvcc or '',
            FAKE_CUDA_HOME=str(cuda_home) if nvcc else '',
            FAKE_MIM_ROOT=str(REPO / 'mmpsearch'),
            MAX_JOBS='2')
        full.pop('MMCV_OPS', None)
        full.update(env)
        proc = subprocess.run(['bash', str(INSTALL)],
                              env=full,
                              capture_output=True,
                              text=True,
                              timeout=120)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc.returncode, proc.stdout + proc.stderr, calls

    run.cache = tmp_path / 'cache' / 'wheels'
    return run


def test_install_cpu_machine_keeps_the_working_mmcv_fast(fake_install):
    t0 = time.time()
    rc, out, calls = fake_install(FAKE_MMCV_CUDA='not available')
    assert rc == 0, out
    assert 'mmcv 2.1.0 with CPU ops already working' in out
    assert calls == []  # nothing installed or built
    assert time.time() - t0 < 30


def test_install_gpu_machine_rejects_cpu_built_ops(fake_install):
    """The defect: on a GPU machine, install.sh called an mmcv built
    without CUDA "already working"."""
    rc, out, calls = fake_install(
        nvcc='13.0', FAKE_CUDA_AVAILABLE='1', FAKE_MMCV_CUDA='not available')
    assert rc == 0, out
    assert 'ops already working' not in out
    assert 'compiled without CUDA' in out
    wheel_calls = builds(calls)
    assert len(wheel_calls) == 1 and 'FORCE_CUDA=1' in wheel_calls[0]
    key = 'torch2.13.0+cu130-py311-cuda130'
    assert [p.name for p in run_dirs(fake_install.cache)] == [key]
    # the stand-in wheel "installed": its ops now say CUDA 13.0, and a
    # second run finds them working without building
    rc, out, calls2 = fake_install(
        nvcc='13.0', FAKE_CUDA_AVAILABLE='1', FAKE_MMCV_CUDA='not available')
    assert rc == 0 and 'with CUDA 13.0 ops already working' in out, out
    assert calls2 == calls


@pytest.mark.parametrize('nvcc, message', [
    (None, 'needs nvcc, and none was found'),
    ('12.4', 'is CUDA 12.4, torch is built for CUDA 13.0'),
])
def test_install_gpu_machine_stops_without_a_fitting_nvcc(
        fake_install, nvcc, message):
    rc, out, calls = fake_install(
        nvcc=nvcc, FAKE_CUDA_AVAILABLE='1', FAKE_MMCV_CUDA='not available')
    assert rc != 0
    assert message in out, out
    assert not builds(calls)  # nothing built


def test_install_reuses_a_cpu_wheel_cached_under_the_old_key(fake_install):
    old = fake_install.cache / 'torch2.13.0+cu130-py311'
    name = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    _fake_wheel(old / name, cuda=False)
    rc, out, calls = fake_install()  # no mmcv installed, no GPU
    assert rc == 0, out
    new = fake_install.cache / 'torch2.13.0+cu130-py311-cpu' / name
    assert new.is_file() and not old.exists()
    assert f'using cached {new}' in out
    assert not builds(calls)  # not rebuilt
    assert any(str(new) in c for c in calls if ' install ' in c)


def test_install_reinstalls_mmpsearch_where_mim_does_not_find_it(
        fake_install, tmp_path):
    """A PEP 660 editable install (setuptools >= 80) leaves mim looking in
    site-packages/mmpsearch: install.sh does not call that installed, it
    reinstalls mmpsearch the legacy way with setuptools < 80, and stops
    when mim still does not find it."""
    rc, out, calls = fake_install(
        FAKE_MMCV_CUDA='not available',
        FAKE_MIM_ROOT=str(tmp_path / 'site-packages' / 'mmpsearch'))
    assert rc != 0
    assert 'requirements unchanged' not in out
    assert 'mim does not find it' in out and 'tools/train.py' in out, out
    installs = [c for c in calls if ' install ' in c]
    assert any('setuptools>=77,<80' in c for c in installs), installs
    assert any(c.endswith('--no-use-pep517 -e .') for c in installs)
