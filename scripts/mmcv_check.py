# Copyright (c) mmpsearch contributors. All rights reserved.
"""What ``scripts/install.sh`` asks about torch and mmcv, in one place it
can call and the tests can drive with fake version values.

mmcv's ``setup.py`` compiles its ops for CUDA only when
``torch.cuda.is_available()`` or ``FORCE_CUDA=1``; a wheel built on a
machine without a GPU has CPU kernels only, and on a GPU machine DiffPS,
the two-step baseline and every config with mmcv's NMS / RoIAlign then stop
with ``nms_impl: implementation for device cuda:0 not found`` (e.g.
open-mmlab/mmdetection#6765, #11531). So the wheel cache key
names what the ops were compiled for (``cpu`` or ``cuda<XY>``), and on a
machine with a GPU the "already working" check asks the installed ops for
their CUDA version (``mmcv.ops.get_compiling_cuda_version()``).

Subcommands (each prints one line for the shell, or exits 1 with a reason
on stderr)::

    python scripts/mmcv_check.py info          # TARGET KEY OLD_KEY
    python scripts/mmcv_check.py check VERSION TARGET
    python scripts/mmcv_check.py nvcc TARGET
    python scripts/mmcv_check.py adopt CACHE_WHEELS OLD_KEY TARGET

``TARGET`` is ``cpu`` or a CUDA version ``X.Y`` (torch's, from
``torch.version.cuda``). ``MMCV_OPS=cpu|cuda`` overrides the automatic
choice, e.g. ``MMCV_OPS=cuda`` to build CUDA ops in an image built without
a GPU.
"""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile
from typing import Optional, Tuple

CPU = 'cpu'


def ops_target(cuda_available: bool,
               torch_cuda: Optional[str],
               override: str = 'auto') -> str:
    """What mmcv's ops must be compiled for: ``'cpu'``, or torch's CUDA
    version ``'X.Y'`` where torch sees a GPU (or ``override='cuda'``)."""
    override = (override or 'auto').lower()
    if override not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f'MMCV_OPS must be auto, cpu or cuda, got '
                         f'{override!r}')
    if override == 'cpu':
        return CPU
    if override == 'cuda' or cuda_available:
        if not torch_cuda:
            raise ValueError('CUDA ops asked for, but this torch is a CPU '
                             'build (torch.version.cuda is None): install '
                             'a CUDA build of torch first')
        return '.'.join(torch_cuda.split('.')[:2])
    return CPU


def old_cache_key(torch_version: str, python: Tuple[int, int]) -> str:
    """The key of install.sh before it knew CPU from CUDA builds."""
    return f'torch{torch_version}-py{python[0]}{python[1]}'


def cache_key(torch_version: str, python: Tuple[int, int], target: str) -> str:
    """``torch<version>-py<XY>-cpu`` or ``...-cuda<XY>``: torch's full
    version (its ABI) and what the ops were compiled for."""
    ops = CPU if target == CPU else 'cuda' + target.replace('.', '')
    return f'{old_cache_key(torch_version, python)}-{ops}'


def _major(version: str) -> str:
    return version.split('.')[0]


def check_ops(mmcv_version: str, want_version: str,
              compiled_cuda: Optional[str], target: str) -> Optional[str]:
    """Why the installed mmcv does not fit, or None when it does.

    ``compiled_cuda`` is ``mmcv.ops.get_compiling_cuda_version()``:
    ``'not available'`` for a CPU-only build. On a GPU its major version
    must be torch's; another minor version is accepted, as torch's
    ``cpp_extension`` accepts it when building (a warning there) and
    CUDA's minor-version compatibility runs it.
    """
    if mmcv_version != want_version:
        return f'mmcv {mmcv_version} is installed, not {want_version}'
    if target == CPU:
        return None
    if not compiled_cuda or not re.match(r'^\d+\.\d+', compiled_cuda):
        return (f'mmcv\'s ops were compiled without CUDA '
                f'(get_compiling_cuda_version() = {compiled_cuda!r}), but '
                f'torch runs on CUDA {target}: DiffPS and the baseline '
                'would stop at their first NMS on the GPU')
    if _major(compiled_cuda) != _major(target):
        return (f'mmcv\'s ops were compiled for CUDA {compiled_cuda}, '
                f'torch is built for CUDA {target}')
    return None


def parse_nvcc_version(text: str) -> Optional[str]:
    """``'X.Y'`` from ``nvcc --version`` (``... release 12.4, V12.4.131``).
    """
    m = re.search(r'release (\d+\.\d+)', text)
    return m.group(1) if m else None


def check_nvcc(nvcc_version: Optional[str], target: str,
               nvcc: str) -> Tuple[Optional[str], Optional[str]]:
    """(error, warning) of building CUDA ops for ``target`` with this
    nvcc (None where none was found)."""
    if nvcc_version is None:
        return (f'building mmcv\'s CUDA ops needs nvcc, and none was found '
                f'({nvcc}): install the CUDA toolkit {target} (its major '
                'version must be torch\'s) and set CUDA_HOME, or set '
                'MMCV_OPS=cpu for CPU-only ops (PSDiff needs none; DiffPS '
                'and the baseline then cannot run on the GPU)'), None
    if _major(nvcc_version) != _major(target):
        return (f'{nvcc} is CUDA {nvcc_version}, torch is built for CUDA '
                f'{target}: mmcv\'s ops must be compiled with a CUDA '
                f'{_major(target)}.x toolkit (set CUDA_HOME to one), or '
                'install the torch build for your toolkit'), None
    if nvcc_version != target:
        return None, (f'nvcc is CUDA {nvcc_version}, torch is built for '
                      f'CUDA {target}: the same major version, which torch '
                      'and CUDA accept')
    return None, None


def wheel_ops_kind(path: str) -> str:
    """``'cuda'`` if the wheel's compiled ops link torch's CUDA library,
    else ``'cpu'`` (read from the wheel, without installing it)."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if re.match(r'^mmcv/_ext\..*\.so$', name):
                data = zf.read(name)
                return 'cuda' if (b'libc10_cuda.so' in data
                                  or b'libcudart' in data) else CPU
    return CPU  # mmcv-lite: no ops at all


def adopt_old_wheels(wheels_dir: str, old_key: str,
                     torch_cuda: Optional[str]) -> list:
    """Move the wheels cached under the old key (``torch<v>-py<XY>``) to
    the key of what they hold (``-cpu`` / ``-cuda<XY>``, XY of this torch,
    the torch they were built against). Nothing is overwritten: a wheel
    whose new place is taken stays where it is. Returns the new paths."""
    old_dir = osp.join(wheels_dir, old_key)
    moved = []
    if not osp.isdir(old_dir):
        return moved
    for name in sorted(os.listdir(old_dir)):
        if not (name.startswith('mmcv-') and name.endswith('.whl')):
            continue
        src = osp.join(old_dir, name)
        kind = wheel_ops_kind(src)
        if kind == CPU:
            key = f'{old_key}-{CPU}'
        elif torch_cuda:
            key = f'{old_key}-cuda' + ''.join(torch_cuda.split('.')[:2])
        else:
            continue
        dst_dir = osp.join(wheels_dir, key)
        dst = osp.join(dst_dir, name)
        if osp.exists(dst):
            continue
        os.makedirs(dst_dir, exist_ok=True)
        shutil.move(src, dst)
        moved.append(dst)
    try:
        os.rmdir(old_dir)  # only when empty
    except OSError:
        pass
    return moved


def _info() -> str:
    import torch
    target = ops_target(torch.cuda.is_available(), torch.version.cuda,
                        os.environ.get('MMCV_OPS', 'auto'))
    py = sys.version_info[:2]
    return (f'{target} {cache_key(torch.__version__, py, target)} '
            f'{old_cache_key(torch.__version__, py)}')


def _check(want_version: str, target: str) -> Optional[str]:
    try:
        import mmcv
        import mmcv.ops
    except Exception as e:  # ImportError, or a broken build's OSError
        return f'mmcv with ops does not import ({type(e).__name__}: {e})'
    compiled = None
    if target != CPU:
        compiled = mmcv.ops.get_compiling_cuda_version()
    return check_ops(mmcv.__version__, want_version, compiled, target)


def _nvcc(target: str) -> Tuple[Optional[str], Optional[str]]:
    # mmcv's setup.py compiles with torch's CUDA_HOME/bin/nvcc
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = osp.join(CUDA_HOME, 'bin', 'nvcc') if CUDA_HOME else 'nvcc'
    version = None
    if CUDA_HOME and osp.isfile(nvcc):
        try:
            out = subprocess.run([nvcc, '--version'],
                                 capture_output=True,
                                 text=True,
                                 timeout=60).stdout
            version = parse_nvcc_version(out)
        except (OSError, subprocess.SubprocessError):
            version = None
    where = nvcc if CUDA_HOME else 'no CUDA_HOME, no nvcc on PATH'
    return check_nvcc(version, target, where)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd, args = (argv[0], argv[1:]) if argv else ('', [])
    try:
        if cmd == 'info':
            print(_info())
        elif cmd == 'check':
            why = _check(*args)
            if why:
                print(why, file=sys.stderr)
                return 1
        elif cmd == 'nvcc':
            error, warning = _nvcc(*args)
            if warning:
                print(f'[install] note: {warning}', file=sys.stderr)
            if error:
                print(f'[install] error: {error}', file=sys.stderr)
                return 1
        elif cmd == 'adopt':
            wheels_dir, old_key, target = args
            torch_cuda = None if target == CPU else target
            for path in adopt_old_wheels(wheels_dir, old_key, torch_cuda):
                print(f'[install] cached wheel moved to its new key: {path}')
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except ValueError as e:
        print(f'[install] error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
