# Copyright (c) mmpsearch contributors. All rights reserved.
"""Every tool checks what it writes before any work
(``docs/en/refusals.md``): each option of ``tools/`` and ``demo/`` that
names an output (``--out``, ``--json``, ``--work-dir``, ``--output-dir``,
...) goes through the shared check of ``mmpsearch/utils/overwrite.py`` or
``mmpsearch/utils/run_lock.py``; ``benchmark.py`` and
``score_calibration.py --json EXISTING`` are refused before they start."""
import ast
import re
from typing import Dict, Set

import pytest

from ..conftest import load_tool
from .conftest import REPO, declared_options

#: The shared checks (mmpsearch.utils.overwrite / run_lock).
SHARED_CHECKS = {
    'refuse_existing_file',
    'refuse_nonempty_dir',
    'check_train_work_dir',
    'hold_run_locks',
    'RunLock',
    # mmpsearch.engine.runner: the results file (one per seed) of
    # tools/test.py --out, each through refuse_existing_file
    # (test_seeds_and_settings.py::test_existing_seed_file_is_refused_first)
    'results_files'
}

#: Shared checks that take the tool's whole ``args`` and check the options
#: they name (mmpsearch.utils.cli).
ARGS_CHECKS = {'refuse_existing_json': {'json'}}

#: Option destinations that name something the tool writes.
OUTPUT_DEST = re.compile(r'(^|_)(out|output|json|work_dir|show_dir|'
                         r'show_steps|save|dump)(_|$)')

#: Outputs that need no check, and why.
EXEMPT = {
    ('tools/test.py', 'show_dir'):
    'painted into WORK_DIR/<timestamp>/SHOW_DIR, a new folder per run',
    ('tools/analysis_tools/benchmark_sd_memory.py', 'out_file'):
    'hidden: a temporary file between the tool and its worker process',
}


def _tools():
    return sorted(
        p for folder in ('tools', 'demo')
        for p in (REPO / folder).rglob('*.py'))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ''


def output_options(tree: ast.AST) -> Dict[str, str]:
    """``{dest: option}`` of the argparse options that name an output."""
    return {
        dest: ([n for n in names if n.startswith('--')] or names)[0]
        for names, dest in declared_options(tree) if OUTPUT_DEST.search(dest)
    }


def checked_names(tree: ast.AST) -> Set[str]:
    """The names and attributes (``args.json`` -> ``json``) in the
    arguments of every call of a shared check."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if _name(node.func) in SHARED_CHECKS:
            for arg in list(node.args) + [k.value for k in node.keywords]:
                names.update(_name(n) for n in ast.walk(arg))
        names.update(ARGS_CHECKS.get(_name(node.func), ()))
    return names


def test_every_written_path_goes_through_the_shared_check():
    scanned, unchecked = {}, []
    for path in _tools():
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), rel)
        outputs = output_options(tree)
        if not outputs:
            continue
        scanned[rel] = sorted(outputs)
        names = checked_names(tree)
        for dest, option in outputs.items():
            if (rel, dest) not in EXEMPT and dest not in names:
                unchecked.append(f'{rel} {option}')
    # the scan sees the tools that write (it cannot pass by seeing none)
    for rel, dest in [('tools/train.py', 'work_dir'), ('tools/test.py', 'out'),
                      ('tools/test.py', 'json'),
                      ('tools/analysis_tools/benchmark.py', 'json'),
                      ('tools/analysis_tools/score_calibration.py', 'json'),
                      ('tools/analysis_tools/browse_dataset.py', 'output_dir'),
                      ('demo/search_demo.py', 'show_steps')]:
        assert dest in scanned.get(rel, []), (rel, dest, scanned)
    assert not unchecked, (
        'these tools write a path the user names without the shared check '
        '(mmpsearch/utils/overwrite.py, run_lock.py): ' + ', '.join(unchecked))


def test_the_scan_finds_an_unchecked_output():
    tree = ast.parse('parser.add_argument("--json")\n'
                     'with open(args.json, "w") as f:\n    pass\n')
    assert output_options(tree) == {'json': '--json'}
    assert 'json' not in checked_names(tree)
    tree = ast.parse('parser.add_argument("--json")\n'
                     'refuse_existing_file(args.json, "--json")\n')
    assert 'json' in checked_names(tree)
    tree = ast.parse('parser.add_argument("--json")\n'
                     'refuse_existing_json(args)\n')
    assert 'json' in checked_names(tree)
    # an option added by a helper of mmpsearch.utils.cli_args
    tree = ast.parse('add_json_args(parser)\n')
    assert output_options(tree) == {'json': '--json'}


@pytest.mark.parametrize('rel, argv', [
    ('tools/analysis_tools/benchmark.py', ['no_such_config.py']),
    ('tools/analysis_tools/score_calibration.py',
     ['no_such_results.pkl', '--dataset', 'cuhk', '--data-root', 'nowhere']),
    ('tools/analysis_tools/search_errors.py',
     ['no_such_results.pkl', '--dataset', 'cuhk', '--data-root', 'nowhere']),
])
def test_existing_json_refused_before_any_work(tmp_path, rel, argv):
    existing = tmp_path / 'earlier.json'
    existing.write_text('{"earlier": 1}')
    tool = load_tool(rel)
    # the inputs do not exist: the --json refusal comes before reading them
    with pytest.raises(SystemExit) as e:
        tool.main(argv + ['--json', str(existing)])
    msg = str(e.value)
    assert f'--json {existing} already exists' in msg
    assert '--force' in msg
    assert existing.read_text() == '{"earlier": 1}'
    with pytest.raises(SystemExit, match='is a folder'):
        tool.main(argv + ['--json', str(tmp_path)])
