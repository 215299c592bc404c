# Copyright (c) mmpsearch contributors. All rights reserved.
"""The OpenMMLab model index (model-index.yml, configs/*/metafile.yml) and
the per-method READMEs agree with the configs and files that exist.

The checks are functions of a repository root that return a list of
problems, so that :func:`test_checks_can_fail` can run them on a copy of
``configs/`` with a config added (or an entry broken) and see them fail.
"""
import re
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
#: The method folders: every config in them is a model of the index.
METHOD_DIRS = ('configs/psdiff', 'configs/diffps')
METAFILES = tuple(f'{d}/metafile.yml' for d in METHOD_DIRS)
READMES = tuple(f'{d}/README.md' for d in METHOD_DIRS)
#: How a paper's number is marked in a Result's Dataset.
PAPER_MARK = '(paper, not reproduced here)'


def _load(path: Path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _is_url(ref: str) -> bool:
    return re.match(r'^[a-z][a-z0-9+.-]*://', ref) is not None


def method_configs(root: Path) -> List[str]:
    """Every model config: the non-underscore ``.py`` files of the method
    folders, as repository-relative paths."""
    return sorted(
        p.relative_to(root).as_posix() for d in METHOD_DIRS
        for p in (root / d).glob('*.py') if not p.name.startswith('_'))


def imported_metafiles(root: Path) -> Tuple[List[str], List[str]]:
    """(the ``Import:`` list of model-index.yml, problems)."""
    index = root / 'model-index.yml'
    if not index.is_file():
        return [], ['model-index.yml is missing']
    data = _load(index) or {}
    imports = data.get('Import')
    if not isinstance(imports, list) or not imports:
        return [], ['model-index.yml has no Import list']
    problems = []
    for ref in imports:
        if not (root / ref).is_file():
            problems.append(f'model-index.yml imports {ref}, which does not '
                            'exist')
    for dup in sorted({r for r in imports if imports.count(r) > 1}):
        problems.append(f'model-index.yml imports {dup} more than once')
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for p in (root / 'configs').glob('*/metafile.yml'))
    for ref in on_disk:
        if ref not in imports:
            problems.append(f'{ref} is not imported by model-index.yml')
    return [r for r in imports if (root / r).is_file()], problems


def _metafiles(root: Path) -> Dict[str, dict]:
    imports, _ = imported_metafiles(root)
    return {ref: _load(root / ref) or {} for ref in imports}


def import_problems(root: Path) -> List[str]:
    imports, problems = imported_metafiles(root)
    for ref in METAFILES:
        if ref not in imports:
            problems.append(f'model-index.yml does not import {ref}')
    for ref, data in _metafiles(root).items():
        for key in ('Collections', 'Models'):
            if not isinstance(data.get(key), list) or not data[key]:
                problems.append(f'{ref}: no {key} list')
    return problems


def config_problems(root: Path) -> List[str]:
    """Every ``Config:`` exists and lies in a method folder; every method
    config is a model exactly once; model names are unique."""
    problems = []
    listed: Dict[str, List[str]] = {}
    names: Dict[str, List[str]] = {}
    for ref, data in _metafiles(root).items():
        for model in data.get('Models') or []:
            name = model.get('Name')
            names.setdefault(str(name), []).append(ref)
            config = model.get('Config')
            if not config:
                problems.append(f'{ref}: model {name} has no Config')
                continue
            listed.setdefault(config, []).append(ref)
            if not (root / config).is_file():
                problems.append(f'{ref}: model {name}: Config {config} does '
                                'not exist')
            elif not any(config.startswith(d + '/') for d in METHOD_DIRS):
                problems.append(f'{ref}: model {name}: Config {config} is '
                                f'not in {" or ".join(METHOD_DIRS)}')
            elif Path(config).stem != name:
                problems.append(f'{ref}: model {name} is named after '
                                f'another config than {config}')
            if 'Weights' in model:
                problems.append(f'{ref}: model {name} has Weights, but no '
                                'checkpoint is released')
    for config in method_configs(root):
        count = len(listed.get(config, []))
        if count != 1:
            problems.append(f'{config} is a model of the metafiles {count} '
                            'times, expected exactly once')
    for name, refs in sorted(names.items()):
        if len(refs) > 1:
            problems.append(f'model name {name} is used {len(refs)} times')
    return problems


def collection_problems(root: Path) -> List[str]:
    """Every ``In Collection`` names a collection of the index; every
    collection has a paper, an existing README and existing code."""
    problems = []
    collections = {}
    for ref, data in _metafiles(root).items():
        for coll in data.get('Collections') or []:
            name = coll.get('Name')
            if name in collections:
                problems.append(f'{ref}: collection {name} is defined twice')
            collections[name] = ref
            readme = coll.get('README')
            if not readme:
                problems.append(f'{ref}: collection {name} has no README')
            elif not _is_url(readme) and not (root / readme).is_file():
                problems.append(f'{ref}: collection {name}: README {readme} '
                                'does not exist')
            paper = coll.get('Paper') or {}
            if not paper.get('URL') or not paper.get('Title'):
                problems.append(f'{ref}: collection {name} needs Paper URL '
                                'and Title')
            code = (coll.get('Code') or {}).get('URL')
            if not code:
                problems.append(f'{ref}: collection {name} has no Code URL')
            elif not _is_url(code) and not (root /
                                            code.split('#')[0]).is_file():
                problems.append(f'{ref}: collection {name}: Code {code} '
                                'does not exist')
    for ref, data in _metafiles(root).items():
        for model in data.get('Models') or []:
            coll = model.get('In Collection')
            if coll not in collections:
                problems.append(f'{ref}: model {model.get("Name")} is In '
                                f'Collection {coll!r}, which is not defined '
                                f'(defined: {sorted(collections)})')
            for result in model.get('Results') or []:
                if result.get('Task') != 'Person Search':
                    problems.append(f'{ref}: model {model.get("Name")}: '
                                    f'Task {result.get("Task")!r}')
                # `mim search` shows the dataset name beside each metric:
                # a paper's number must not read as a result of this code
                dataset = str(result.get('Dataset'))
                if not (dataset.endswith(PAPER_MARK)
                        or dataset.startswith('Synthetic')):
                    problems.append(f'{ref}: model {model.get("Name")}: '
                                    f'Dataset {dataset!r} is not marked '
                                    f'{PAPER_MARK!r} (nothing is measured '
                                    'on the real datasets here)')
                metrics = result.get('Metrics') or {}
                if set(metrics) != {'mAP', 'top-1'}:
                    problems.append(f'{ref}: model {model.get("Name")}: '
                                    f'metrics {sorted(metrics)}, expected '
                                    'mAP and top-1')
    return problems


# ------------------------------------------------------------------ READMEs
#: A repository path ending in a file suffix the READMEs name (configs,
#: tools, code, docs, metafiles).
_FILE_REF = re.compile(r'(?<![\w./*-])((?:\.\.?/)*[\w.-]+(?:/[\w.-]+)*'
                       r'\.(?:py|sh|yml|yaml|md))(#[\w-]*)?(?![\w/-])')
_URL = re.compile(r'[a-z][a-z0-9+.-]*://\S+')
_FENCE = re.compile(r'^\s*(```|~~~)')


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r'[`*_]', '', heading.strip().lower())
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def _anchors(md: Path) -> set:
    anchors, fenced = set(), False
    for line in md.read_text(encoding='utf-8').splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith('#'):
            anchors.add(_slug(line.lstrip('#')))
    return anchors


def readme_refs(readme: Path) -> List[Tuple[str, str]]:
    """(path, anchor) of every file the README names, URLs left out."""
    text = _URL.sub(' ', readme.read_text(encoding='utf-8'))
    return [(m.group(1), (m.group(2) or '')[1:])
            for m in _FILE_REF.finditer(text)]


def _resolve(root: Path, readme: Path, ref: str) -> Path:
    """A bare name is in the README's folder; a path is from the
    repository root, or relative to the README (``../``)."""
    if '/' not in ref or ref.startswith('.'):
        return (readme.parent / ref).resolve()
    return root / ref


def readme_problems(root: Path) -> List[str]:
    """Every file named in the READMEs exists (with its anchor, for
    Markdown), and each README names every config of its folder."""
    problems = []
    for rel in READMES:
        readme = root / rel
        if not readme.is_file():
            problems.append(f'{rel} is missing')
            continue
        named = set()
        for ref, anchor in readme_refs(readme):
            path = _resolve(root, readme, ref)
            named.add(path.resolve())
            if not path.is_file():
                problems.append(f'{rel} names {ref}, which does not exist')
            elif anchor and path.suffix == '.md' and \
                    anchor not in _anchors(path):
                problems.append(f'{rel} links {ref}#{anchor}, which has no '
                                'such heading')
        for config in method_configs(root):
            if Path(config).parent == Path(rel).parent and \
                    (root / config).resolve() not in named:
                problems.append(f'{rel} does not name {Path(config).name}')
    return problems


# -------------------------------------------------------------------- tests
def test_model_index_imports_both_metafiles():
    assert import_problems(REPO) == []


def test_every_config_is_a_model_exactly_once():
    assert method_configs(REPO), 'no configs found in the method folders'
    assert config_problems(REPO) == []


def test_collections_and_their_links():
    assert collection_problems(REPO) == []


def test_readmes_name_existing_files():
    assert readme_problems(REPO) == []


def test_readme_refs_parsing(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text(
        'see [a](a_cfg.py) and `tools/train.py`, the `*_paper.py` '
        'configs, ../../docs/x.md#some-heading and '
        'https://github.com/o/r/blob/main/not_here.py\n')
    assert readme_refs(readme) == [('a_cfg.py', ''), ('tools/train.py', ''),
                                   ('../../docs/x.md', 'some-heading')]
    assert _slug(' DiffPS and Stable Diffusion 2.1-base') == \
        'diffps-and-stable-diffusion-21-base'
    assert _slug(' DiffPS: differences from the official code') == \
        'diffps-differences-from-the-official-code'


def test_mim_reads_the_model_index():
    """``mim search`` loads it with the ``modelindex`` package."""
    load = pytest.importorskip('modelindex.load_model_index').load
    index = load(str(REPO / 'model-index.yml'))
    names = {m.name for m in index.models}
    assert {Path(c).stem for c in method_configs(REPO)} <= names
    assert {c.name for c in index.collections} == {'PSDiff', 'DiffPS'}


def _copy_index(tmp_path: Path) -> Path:
    root = tmp_path / 'repo'
    shutil.copytree(REPO / 'configs', root / 'configs')
    shutil.copy(REPO / 'model-index.yml', root / 'model-index.yml')
    return root


def test_checks_can_fail(tmp_path):
    """A config added without a metafile entry, a dangling Config, an
    unknown collection and an unimported metafile are all reported."""
    root = _copy_index(tmp_path)
    assert config_problems(root) == []

    new = root / 'configs' / 'psdiff' / 'psdiff_r101_cuhk.py'
    new.write_text('# a new model\n')
    problems = config_problems(root)
    assert any('psdiff_r101_cuhk.py is a model of the metafiles 0 times' in p
               for p in problems), problems
    # private helpers (leading underscore) are not models
    new.rename(new.with_name('_helpers.py'))
    assert config_problems(root) == []

    meta = root / 'configs' / 'diffps' / 'metafile.yml'
    data = _load(meta)
    data['Models'].append(dict(data['Models'][0]))  # listed twice
    data['Models'][1]['Config'] = 'configs/diffps/diffps_sd15_cuhk.py'
    data['Models'][1]['In Collection'] = 'DiffPS-v2'
    meta.write_text(yaml.safe_dump(data, sort_keys=False))
    problems = config_problems(root) + collection_problems(root)
    assert any('diffps_sd15_cuhk.py does not exist' in p for p in problems)
    assert any('diffps_sd21_prw.py is a model of the metafiles 0 times' in p
               for p in problems)
    assert any('diffps_sd21_cuhk.py is a model of the metafiles 2 times' in p
               for p in problems)
    assert any("'DiffPS-v2', which is not defined" in p for p in problems)
    data['Models'][0]['Results'][0]['Dataset'] = 'CUHK-SYSU'  # unmarked
    meta.write_text(yaml.safe_dump(data, sort_keys=False))
    assert any("Dataset 'CUHK-SYSU' is not marked" in p
               for p in collection_problems(root))

    (root / 'model-index.yml'
     ).write_text('Import:\n  - configs/psdiff/metafile.yml\n')
    assert any('configs/diffps/metafile.yml' in p
               for p in import_problems(root))


def test_readme_check_can_fail(tmp_path):
    root = _copy_index(tmp_path)
    readme = root / 'configs' / 'diffps' / 'README.md'
    text = readme.read_text(encoding='utf-8')
    (root / 'configs' / 'diffps' / 'diffps_sd21_vitb_cuhk.py').write_text('')
    readme.write_text(text + '\nSee [old](diffps_sd14_cuhk.py).\n')
    problems = [p for p in readme_problems(root) if 'diffps/' in p]
    assert any('names diffps_sd14_cuhk.py, which does not exist' in p
               for p in problems), problems
    assert any('does not name diffps_sd21_vitb_cuhk.py' in p
               for p in problems), problems
