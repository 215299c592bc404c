# Copyright (c) mmpsearch contributors. All rights reserved.
"""``--help`` of every Python tool answers before torch is imported.

Importing torch (and with it mmcv / mmdet / mmengine's runner) takes
seconds; a tool that parses its arguments first answers ``--help`` and a
usage error at once. ``import mmpsearch`` is light (it reads the versions
of mmcv, mmengine and mmdet from their metadata, and ``mmpsearch.utils``
imports its torch modules on first use), so the tools build their parsers
from :mod:`mmpsearch.utils.cli_args`. Each tool is run as ``__main__``
with ``--help`` in a fresh interpreter, which then reports whether
``torch``, ``mmcv`` or ``mmdet`` is in ``sys.modules``.
Untimed: tools/misc/help_timing.py prints the wall times.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import load_tool
from .conftest import tool_env

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted(
    p.relative_to(REPO).as_posix()
    for p in list((REPO / 'tools').rglob('*.py')) +
    list((REPO / 'demo').glob('*.py')))

PROBE = '''\
import runpy, sys
sys.argv = [sys.argv[1], '--help']
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
    code = e.code
else:
    code = 'no SystemExit'
sys.stdout.flush()
heavy = sorted(m for m in ('torch', 'mmcv', 'mmdet')
               if m in sys.modules)
print('\\nPROBE exit:', code, 'heavy:', ','.join(heavy) or '-')
'''


def probe(path: str) -> subprocess.CompletedProcess:
    """``path --help`` run as ``__main__`` in a fresh interpreter."""
    return subprocess.run([sys.executable, '-c', PROBE, path],
                          cwd=REPO,
                          env=tool_env(),
                          capture_output=True,
                          text=True,
                          timeout=120)


def heavy_modules(proc: subprocess.CompletedProcess) -> str:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('PROBE')]
    assert line, f'the probe did not finish:\n{proc.stderr[-3000:]}'
    return line[-1].split('heavy: ')[1]


def test_every_tool_is_listed():
    # the glob finds the tools (a moved tools/ would make the test vacuous)
    assert 'tools/train.py' in TOOLS and 'tools/test.py' in TOOLS
    assert 'demo/search_demo.py' in TOOLS
    assert len(TOOLS) >= 19


@pytest.mark.parametrize('tool', TOOLS)
def test_help_is_printed_without_importing_torch(tool):
    proc = probe(tool)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'PROBE exit: 0 ' in proc.stdout, proc.stdout[-3000:]
    assert proc.stdout.startswith('usage: '), proc.stdout[:500]
    assert '--help' in proc.stdout
    assert heavy_modules(proc) == '-', (
        f'{tool} --help imported {heavy_modules(proc)}: parse the '
        'arguments before importing torch / mmcv / mmdet / '
        'mmengine.runner')


def test_the_probe_sees_an_early_import(tmp_path):
    # a tool that imports torch before its parser is caught
    tool = tmp_path / 'eager.py'
    tool.write_text('import argparse\n'
                    'import torch  # noqa: F401\n'
                    "argparse.ArgumentParser(description='eager').parse_args()"
                    '\n')
    proc = probe(str(tool))
    assert 'usage: ' in proc.stdout
    assert heavy_modules(proc) == 'torch'


def test_the_parsers_copies_of_library_constants():
    # eval_search.py builds its parser before mmpsearch.datasets (torch) is
    # imported, from copies of two constants
    from mmpsearch.datasets.cuhk_subsets import CUHK_SUBSETS
    from mmpsearch.datasets.cuhk_sysu import CUHK_GALLERY_SIZES
    module = load_tool('tools/analysis_tools/eval_search.py')
    assert module.SUBSETS == CUHK_SUBSETS
    assert module.GALLERY_SIZES == CUHK_GALLERY_SIZES
