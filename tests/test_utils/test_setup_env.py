# Copyright (c) mmpsearch contributors. All rights reserved.
"""Neither ``import mmpsearch`` nor ``register_all_modules()`` changes how
mmengine loads checkpoints: safe loading is an explicit call of the entry
points (``safe_checkpoint_loading()``), which restores mmengine's loaders on
leaving. Another library in the same process keeps mmengine's own."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# mmengine's checkpoint-loading state: the scheme table of CheckpointLoader
# (prefix -> loader module.name) and the module-level load_url it calls
# for remote weights. Printed as one line; the probe imports nothing of
# mmpsearch itself.
PROBE = '''
import mmengine.runner.checkpoint as ckpt
def state():
    schemes = {p: f'{f.__module__}.{f.__qualname__}'
               for p, f in ckpt.CheckpointLoader._schemes.items()}
    return repr((schemes, ckpt.load_url.__module__, ckpt.load_url.__name__,
                 id(ckpt.CheckpointLoader._schemes)))
'''


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, '-c', PROBE + '\n' + code],
                          cwd=str(REPO),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_and_register_change_no_checkpoint_loader():
    out = run('before = state()\n'
              'import mmpsearch\n'
              'import mmpsearch.apis, mmpsearch.datasets, mmpsearch.utils\n'
              'from mmpsearch.utils import register_all_modules\n'
              'register_all_modules(init_default_scope=False)\n'
              'register_all_modules(init_default_scope=True)\n'
              'after = state()\n'
              'assert "mmpsearch" not in after, after\n'
              'print(before == after)')
    assert out.split() == ['True'], out


def test_safe_loading_is_explicit_and_restored():
    out = run('import mmpsearch\n'
              'from mmpsearch.utils import safe_checkpoint_loading\n'
              'before = state()\n'
              'with safe_checkpoint_loading():\n'
              '    inside = state()\n'
              '    assert ckpt.load_url.__module__ == '
              '"mmpsearch.utils.safe_load"\n'
              '    local = ckpt.CheckpointLoader._get_checkpoint_loader('
              '"/some/iter_1.pth")\n'
              '    assert local.__module__ == "mmpsearch.utils.safe_load"\n'
              'print(before != inside, before == state())')
    assert out.split() == ['True', 'True'], out


#: What register_all_modules imports to register (mmdet's idiom).
REGISTERED = ('mmpsearch.datasets', 'mmpsearch.engine', 'mmpsearch.evaluation',
              'mmpsearch.models', 'mmpsearch.visualization')


def _imports(path: Path):
    """(module, names) of every import of a python file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = '.' * node.level + (node.module or '')
            yield base, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize(
    'path',
    sorted((REPO / 'mmpsearch' / 'utils').glob('*.py')),
    ids=lambda p: p.name)
def test_utils_is_a_leaf(path):
    """Nothing in mmpsearch/utils/ imports models/, engine/ or evaluation/
    (or anything else of mmpsearch but utils/), except
    register_all_modules, the mmdet idiom that imports everything."""
    bad = []
    for module, _ in _imports(path):
        absolute = module if not module.startswith('.') else \
            'mmpsearch.utils' + module[1:] if not module.startswith('..') \
            else 'mmpsearch' + module[1:]
        allowed = absolute.startswith('mmpsearch.utils') or absolute in (
            'mmpsearch', 'mmpsearch.registry', 'mmpsearch.version')
        if absolute.startswith('mmpsearch') and not allowed:
            bad.append(module)
    if path.name == 'setup_env.py':  # register_all_modules imports them all
        bad = [m for m in bad if m not in REGISTERED]
    assert not bad, f'{path.name} imports {bad}'
