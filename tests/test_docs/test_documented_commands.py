# Copyright (c) mmpsearch contributors. All rights reserved.
"""The commands, paths and defaults that the docs state are the code's.

Reads README.md, docs/en/*.md and configs/*/README.md and checks, without
running any model:

- every ``python tools/...`` / ``demo/...`` command (fenced blocks and
  inline code, also a tool named by its file name as in ``benchmark.py
  CONFIG [--steps 1 2 4 8]``) names a file that exists and only options
  that the tool's argument parser has (``dist_*.sh`` / ``slurm_*.sh`` pass
  theirs on to ``train.py`` / ``test.py``);
- the defaults the docs state are the parser's: the ``Default`` column of
  an ``| Argument | Default | Meaning |`` table (the tool is the last one
  named above it), a ``[--opt VALUE]`` in a usage line, and prose of the
  form ``--opt ... (default VALUE)`` / ``--opt defaults to VALUE``;
- every ``make TARGET`` is a target of the Makefile, every repository path
  (``configs/...``, ``tools/...``, ``demo/...``, ``scripts/...``,
  ``tests/...``) exists.

The parsers are the tools' own: each tool module is imported and its
``parse_args()`` (or ``main()``) called with ``ArgumentParser.parse_args``
replaced by a function that hands the parser back before anything runs.
The checks are functions of a text, so that :func:`test_checks_can_fail`
plants wrong statements and sees each reported.
"""
import argparse
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

from ..conftest import REPO, load_tool

DOCS = sorted([REPO / 'README.md'] +
              list((REPO / 'docs' / 'en').glob('*.md')) +
              list((REPO / 'configs').glob('*/README.md')))
#: Shell launchers and the Python tool they pass their options on to.
LAUNCHERS = {
    'dist_train.sh': 'tools/train.py',
    'slurm_train.sh': 'tools/train.py',
    'dist_test.sh': 'tools/test.py',
    'slurm_test.sh': 'tools/test.py',
}
_FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.S | re.M)
_INLINE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
_TOOL_FILE = re.compile(r'(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:py|sh))\b')
_REPO_PATH = re.compile(
    r'(?<![\w/.$<{-])((?:configs|tools|demo|scripts|tests)/[\w./-]*'
    r'[\w-]\.(?:py|sh|yml|md|mat|txt))(?![\w/])')
_MAKE = re.compile(r'(?<![\w-])make ((?:[A-Z_]+=\S* )*)([a-z][\w-]*)')
_OPTION = re.compile(r'(?<![\w-])(--[a-z][\w-]*)')


# --------------------------------------------------------------- the tools
class _Captured(Exception):

    def __init__(self, parser):
        super().__init__('parser captured')
        self.parser = parser


def _all_tools() -> Dict[str, Path]:
    """Repository-relative path -> file of every Python tool."""
    files = list((REPO / 'tools').rglob('*.py')) + list(
        (REPO / 'demo').glob('*.py'))
    return {p.relative_to(REPO).as_posix(): p for p in files}


@lru_cache(maxsize=None)
def tool_parser(rel: str) -> argparse.ArgumentParser:
    """The argument parser that ``rel`` (e.g. 'tools/train.py') builds."""
    path = REPO / rel
    module = load_tool(rel)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    entry = getattr(module, 'parse_args', None) or module.main
    mp = pytest.MonkeyPatch()
    mp.setattr(argparse.ArgumentParser, 'parse_args', capture)
    mp.setattr(argparse.ArgumentParser, 'parse_known_args', capture)
    mp.setattr(sys, 'argv', [str(path)])
    try:
        try:
            entry()
        except TypeError:  # parse_args(argv) / main(argv) with no default
            entry(None)
    except _Captured as c:
        return c.parser
    finally:
        mp.undo()
    raise AssertionError(f'{rel}: no ArgumentParser.parse_args call')


def _options(parser) -> Dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


def resolve_tool(name: str) -> Tuple[Optional[str], Optional[str]]:
    """(the Python tool whose parser reads the options, a problem)."""
    base = name.rsplit('/', 1)[-1]
    if base in LAUNCHERS:
        return LAUNCHERS[base], None
    if name.endswith('.sh'):
        return None, None
    tools = _all_tools()
    rel = name[2:] if name.startswith('./') else name
    if '/' in rel:
        if rel in tools:
            return rel, None
        if rel.startswith(('tools/', 'demo/')):
            return None, f'{name} does not exist'
        return None, None  # another project's file
    matches = [t for t in tools if t.rsplit('/', 1)[-1] == base]
    return (matches[0], None) if len(matches) == 1 else (None, None)


# ---------------------------------------------------------- the doc's text
def _commands(text: str) -> List[str]:
    """Command lines: each line of a fenced block (continuations joined,
    comments dropped), split at ``&&`` / ``;`` / ``|``, and every inline
    code span."""
    out = []
    for block in _FENCE.findall(text):
        block = re.sub(r'\\\n\s*', ' ', block)
        for line in block.splitlines():
            line = re.sub(r'(^|\s)#.*$', '', line)
            out += [p for p in re.split(r'&&|;|\s\|\s', line) if p.strip()]
    prose = _FENCE.sub('', text)
    out += [s.replace('\\|', '|') for s in _INLINE.findall(prose)]
    return out


def _tool_calls(command: str) -> List[Tuple[str, List[str]]]:
    """(tool file, the words after it) of each tool in a command."""
    calls = []
    matches = list(_TOOL_FILE.finditer(command))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else None
        rest = command[m.end():end]
        calls.append((m.group(1), rest.split()))
    return calls


def _normalise(value) -> str:
    if isinstance(value, (list, tuple)):
        return ' '.join(_normalise(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default_problem(where, tool, opt, stated, parser) -> Optional[str]:
    action = _options(parser).get(opt)
    if action is None:
        return f'{where}: {tool} has no option {opt}'
    stated = stated.strip().strip('`').strip()
    if stated in ('', '-', '–'):
        return None
    if stated == 'required':
        ok = action.required
        actual = 'required' if action.required else _normalise(action.default)
    elif stated == 'off':
        ok = action.default in (False, None)
        actual = _normalise(action.default)
    elif action.default is None or action.default is argparse.SUPPRESS:
        return None  # stated in words (e.g. "cuda if available")
    else:
        actual = _normalise(action.default)
        ok = stated == actual
    if not ok:
        return (f'{where}: {tool} {opt} is documented with default '
                f'{stated!r}; the parser says {actual!r}')
    return None


def command_problems(text: str, where: str) -> List[str]:
    """Missing tools and options unknown to the tool's parser; defaults of
    ``[--opt VALUE]`` usage lines."""
    problems = []
    for command in _commands(text):
        for name, words in _tool_calls(command):
            tool, problem = resolve_tool(name)
            if problem:
                problems.append(f'{where}: `{command.strip()}`: {problem}')
            if tool is None:
                continue
            parser = tool_parser(tool)
            known = _options(parser)
            for word in words:
                for opt in _OPTION.findall(word.split('=')[0]):
                    if word.lstrip('[').startswith(opt) and opt not in known:
                        problems.append(
                            f'{where}: `{command.strip()}`: {tool} has no '
                            f'option {opt}')
            # [--opt V ...] with literal values: the default
            for m in re.finditer(r'\[(--[a-z][\w-]*)((?: [^\s\[\]]+)+)\]',
                                 ' '.join(words)):
                opt, values = m.group(1), m.group(2).split()
                if any(v == '...' or v.isupper() or '|' in v or '[' in v
                       for v in values):
                    continue
                problem = _default_problem(where, tool, opt, ' '.join(values),
                                           parser)
                if problem:
                    problems.append(problem)
    return problems


def _table_rows(lines, start):
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            return
        yield [c.strip() for c in line.strip().strip('|').split('|')]


def default_problems(text: str, where: str) -> List[str]:
    """The Default column of ``| Argument | Default | ... |`` tables and
    prose ``--opt ... (default V)`` / ``--opt defaults to V``."""
    problems = []
    lines = _FENCE.sub(lambda m: '\n' * m.group(0).count('\n'),
                       text).splitlines()
    full = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if not (line.startswith('|') and cells[:2] == ['Argument', 'Default']):
            continue
        tool = None
        for above in reversed(full[:i]):
            names = [resolve_tool(n)[0] for n in _TOOL_FILE.findall(above)]
            names = [n for n in names if n]
            if names:
                tool = names[-1]
                break
        assert tool, f'{where}:{i + 1}: a Default table under no tool'
        parser = tool_parser(tool)
        for row in _table_rows(lines, i):
            opts = list(dict.fromkeys(_OPTION.findall(row[0])))
            if not opts:
                continue
            stated = [row[1]] if len(opts) == 1 else row[1].split(', ')
            if len(stated) != len(opts):
                continue
            for opt, value in zip(opts, stated):
                problem = _default_problem(f'{where}:{i + 1}', tool, opt,
                                           value, parser)
                if problem:
                    problems.append(problem)
    prose = re.sub(r'\s+', ' ', _FENCE.sub('', text))
    for m in re.finditer(
            r'`((?:[\w/.-]+\.py )?--[a-z][\w-]*)[^`]*`[^.;`]{0,40}?'
            r'(?:\(default|defaults to) `?([\w.-]+)`?', prose):
        span = m.group(1).split()
        opt = span[-1]
        tool = resolve_tool(span[0])[0] if len(span) == 2 else None
        if tool is None:  # the last tool named before it in the sentence
            before = prose[max(0, m.start() - 300):m.start()]
            names = [resolve_tool(n)[0] for n in _TOOL_FILE.findall(before)]
            names = [n for n in names if n]
            tool = names[-1] if names else None
        if tool is None:
            continue
        problem = _default_problem(where, tool, opt, m.group(2),
                                   tool_parser(tool))
        if problem:
            problems.append(problem)
    return problems


def path_problems(text: str, where: str) -> List[str]:
    """Repository paths that do not exist; make targets the Makefile does
    not have."""
    problems = []
    # files a guide has the reader write: named in a `# path` first line
    written = set(re.findall(r'^```\w*\n# ([\w./-]+\.py)\b', text, re.M))
    for rel in dict.fromkeys(_REPO_PATH.findall(text)):
        if '*' not in rel and rel not in written and not (REPO / rel).exists():
            problems.append(f'{where}: {rel} does not exist')
    targets = set(
        re.findall(r'^([a-z][\w-]*):', (REPO / 'Makefile').read_text(), re.M))
    for command in _commands(text):
        for _, target in _MAKE.findall(command):
            if target not in targets:
                problems.append(f'{where}: `{command.strip()}`: make has no '
                                f'target {target}')
    return problems


def _all_problems(text: str, where: str) -> List[str]:
    return (command_problems(text, where) + default_problems(text, where) +
            path_problems(text, where))


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize(
    'doc', DOCS, ids=[d.relative_to(REPO).as_posix() for d in DOCS])
def test_doc_matches_the_code(doc):
    text = doc.read_text(encoding='utf-8')
    where = doc.relative_to(REPO).as_posix()
    assert _all_problems(text, where) == []


def test_every_tool_has_a_parser():
    for rel in _all_tools():
        assert '--help' in _options(tool_parser(rel)) or \
            '-h' in _options(tool_parser(rel)), rel


def test_checks_can_fail():
    """One planted wrong statement of each kind is reported."""
    cases = {
        # an option the tool does not have
        '```bash\npython tools/train.py CONFIG --no-such-option\n```\n':
        'tools/train.py has no option --no-such-option',
        'Run `tools/dist_train.sh CONFIG 2 --work-dirs DIR`.':
        'tools/train.py has no option --work-dirs',
        # a tool that does not exist
        '```bash\npython tools/analysis_tools/no_tool.py x\n```\n':
        'tools/analysis_tools/no_tool.py does not exist',
        # a default of a usage line, a table and prose
        '| `benchmark_sd_memory.py [--timestep 7]` | x |':
        "--timestep is documented with default '7'",
        ('`make_synthetic.py`:\n\n| Argument | Default | Meaning |\n'
         '|---|---|---|\n| `--num-images` | 400 | scenes |\n'):
        "--num-images is documented with default '400'",
        'The tool (`eval_search.py --score-thr`, default 0.3) drops.':
        None,  # "default" without a bracket: not a stated default
        'See `tools/analysis_tools/browse_dataset.py`: the first `--num` '
        'samples (default 3) are drawn.':
        "--num is documented with default '3'",
        # a path and a make target
        'Train `configs/psdiff/psdiff_r99_cuhk.py`.':
        'configs/psdiff/psdiff_r99_cuhk.py does not exist',
        'Run `make demo-slow`.':
        'make has no target demo-slow',
    }
    for text, expected in cases.items():
        problems = _all_problems(text, 'planted.md')
        if expected is None:
            assert problems == [], problems
        else:
            assert any(expected in p for p in problems), (text, problems)


def _documented_command(doc: str, needle: str) -> List[str]:
    """The words of the fenced command in ``doc`` that contains ``needle``."""
    text = (REPO / doc).read_text(encoding='utf-8')
    found = [c for c in _commands(text) if needle in c and 'tools/' in c]
    assert len(found) == 1, f'{doc}: {len(found)} commands with {needle}'
    return shlex.split(found[0])


def test_dpm_solver_recipe_runs():
    """train_test.md's recipe for a DPM solver's options, applied by
    tools/test.py's own parser and config loader, builds the solver it
    names, and the tiny PSDiff of the model tests samples with it."""
    from mmpsearch.diffusion.samplers import DPMSolverPPSampler
    from mmpsearch.utils import register_all_modules
    from mmpsearch.utils.config import load_config
    from tests.test_models.test_detectors.test_psdiff import (_model, _predict,
                                                              _test_samples)
    words = _documented_command('docs/en/train_test.md', 'solver_order')
    args = words[words.index('tools/test.py') + 1:]
    parser = tool_parser('tools/test.py')
    ns = argparse.ArgumentParser.parse_args(parser, args)
    register_all_modules()
    cfg = load_config(str(REPO / ns.config), ns.cfg_options)
    # what the recipe sets, on the tiny model (random weights: no score
    # threshold, or nothing would be kept)
    recipe = {k: cfg.model.test_cfg[k] for k in ('sampler', 'box_renewal')}
    assert recipe['sampler']['eta'] is None and not recipe['box_renewal']
    model = _model(**recipe, sampling_steps=3)
    sampler = model.bbox_head.build_sampler()
    assert isinstance(sampler, DPMSolverPPSampler)
    assert sampler.solver_order == 3
    images, samples = _test_samples()
    for res in _predict(model, images, samples):
        assert len(res) > 0 and torch.isfinite(res.bboxes).all()
    # the recipe without its eta=None is refused, as the doc says
    bad = [w for w in args if not w.endswith('.eta=None')]
    ns = argparse.ArgumentParser.parse_args(parser, bad)
    cfg = load_config(str(REPO / ns.config), ns.cfg_options)
    model = _model(sampler=cfg.model.test_cfg.sampler, box_renewal=False)
    with pytest.raises(ValueError, match='replace the whole entry'):
        _predict(model, images, samples)


def _downloads(node, path=''):
    """(key, URL) of every init_cfg / checkpoint in a config that names
    weights by URL (``http(s)://``, ``torchvision://``, ...)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _downloads(v, f'{path}.{k}' if path else k)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _downloads(v, f'{path}.{i}')
    elif isinstance(node, str) and re.match(r'^[a-z+-]+://', node) and \
            path.startswith('model.') and 'init_cfg' in path and \
            not path.startswith('model.reid.model.'):
        # the two-step baseline never runs its ReID model's init_cfg: the
        # ReID weights come from model.reid.checkpoint (TwoStepPersonSearch)
        yield path, node


def test_offline_list_is_complete():
    """train_test.md's "Offline machines" table names every config whose
    init_cfg downloads, with each key that does."""
    from mmengine.config import Config
    text = (REPO / 'docs' / 'en' / 'train_test.md').read_text()
    section = text.split('## Offline machines', 1)[1].split('\n## ', 1)[0]
    rows = [r for r in section.splitlines() if r.startswith('| `')]
    problems = []
    for path in sorted((REPO / 'configs').glob('[!_]*/*.py')):
        found = list(_downloads(Config.fromfile(str(path)).to_dict()))
        row = [r for r in rows if f'`{path.name}`' in r]
        if found and not row:
            problems.append(f'{path.name} downloads {found[0][1]}; not listed')
        for key, _ in found:
            key = key.rsplit('.init_cfg', 1)[0] + '.init_cfg'
            if row and f'`{key}`' not in row[0]:
                problems.append(f'{path.name}: {key} downloads; not listed')
        if row and not found:
            problems.append(f'{path.name} is listed but downloads nothing')
    assert problems == []
