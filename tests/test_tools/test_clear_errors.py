# Copyright (c) mmpsearch contributors. All rights reserved.
"""Clear errors instead of raw or misleading ones (docs/en/refusals.md):
a load_from that loads nothing, --resume past max_iters, zero teacher
rows, dataloader typos, folders where a file is expected, the same file
for two outputs, and refusals that name a flag the tool has."""
import ast
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmpsearch.datasets.teacher_cache import (TeacherEmbeddings,
                                              save_teacher_embeddings)
from mmpsearch.testing import ToyRegressor
from mmpsearch.utils.cfg_signature import ConfigKeyError, check_config_keys
from mmpsearch.utils.checkpoint import (CheckpointMismatchError,
                                        check_checkpoint_fits)
from mmpsearch.utils.config import load_config
from ..conftest import load_tool
from .conftest import ORACLE, REPO, TOY_CONFIG, declared_options, run_tool


# ---------------------------------------------------------------------------
# load_from that fills none of the model's weights
# ---------------------------------------------------------------------------
def test_a_checkpoint_that_loads_nothing_is_refused_also_when_partial():
    model = ToyRegressor()
    other = {'state_dict': {'backbone.conv.weight': torch.zeros(3)}}
    # training's allow_partial used to warn, then train from scratch
    with pytest.raises(
            CheckpointMismatchError,
            match=r'0 of the 2 weights .* Not one weight of it '
            r'loads.* remove load_from'):
        check_checkpoint_fits(model, other, 'o.pth', allow_partial=True)
    # opted in (tools/test.py --allow-partial, strict=False): a warning
    fit = check_checkpoint_fits(
        model, other, 'o.pth', allow_partial=True, allow_empty=True)
    assert fit['loaded'] == 0
    # one weight of two: a partial load_from, warned about
    half = {'linear.weight': torch.zeros(1, 4)}
    assert check_checkpoint_fits(
        model, half, 'h.pth', allow_partial=True)['loaded'] == 1


def test_train_refuses_a_load_from_that_loads_nothing(tmp_path):
    ckpt = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.conv.weight': torch.zeros(3)}}, ckpt)
    work = tmp_path / 'work'
    proc = run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(work), '--cfg-options', f'load_from={ckpt}'
    ],
                    check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith(f'CheckpointMismatchError: checkpoint {ckpt} does '
                          'not fit the model: 0 of the 2 weights')
    assert 'Not one weight of it loads' in err and 'Traceback' not in \
        proc.stderr
    assert not list(work.glob('*.pth'))  # not one iteration trained


# ---------------------------------------------------------------------------
# --resume past max_iters
# ---------------------------------------------------------------------------
def test_resume_past_max_iters_is_refused_before_anything_is_written(tmp_path):
    work = tmp_path / 'work'
    run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=4'
    ])
    saved = work / 'toy_train.py'
    before = (saved.read_text(), saved.stat().st_mtime_ns,
              sorted(os.listdir(work)))
    # used to train nothing, rewrite the config and exit 0
    proc = run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(work), '--resume', '--cfg-options', 'train_cfg.max_iters=2'
    ],
                    check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err == (
        f'--resume {work}/iter_4.pth: the checkpoint is of iteration 4, '
        'past train_cfg.max_iters = 2; resuming would train nothing (and '
        'rewrite the config in the work dir). To train on, raise it: '
        '--cfg-options train_cfg.max_iters=N with N > 4; to evaluate the '
        'checkpoint, use tools/test.py (see docs/en/refusals.md).')
    # a complete run: nothing to do, said, exit 0, nothing rewritten
    proc = run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(work), '--resume', '--cfg-options', 'train_cfg.max_iters=4'
    ])
    assert 'the run is complete, nothing to train' in proc.stdout + \
        proc.stderr
    assert (saved.read_text(), saved.stat().st_mtime_ns,
            sorted(os.listdir(work))) == before
    # a folder for --resume / load_from is named as one
    folder = tmp_path / 'ckpt.pth'
    folder.mkdir()
    proc = run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(tmp_path / 'w2'), '--resume',
        str(folder)
    ],
                    check=False)
    assert proc.returncode == 1
    assert f'--resume {folder}: is a folder, not a checkpoint file' in \
        proc.stderr


# ---------------------------------------------------------------------------
# Teacher embeddings with zero rows
# ---------------------------------------------------------------------------
def test_teacher_rows_of_zeros_are_refused_naming_row_and_image(tmp_path):
    path = str(tmp_path / 'teacher.npz')
    e = np.random.RandomState(0).randn(5, 8).astype(np.float32)
    e[3] = 0  # trained loss_reid to a constant 5.0, exit code 0
    e[4] = 0
    save_teacher_embeddings(path, ['a.jpg', 'b.jpg'],
                            [np.zeros(
                                (2, 4)), np.zeros((3, 4))], [e[:2], e[2:]])
    with pytest.raises(ValueError) as info:
        TeacherEmbeddings(path)
    assert str(info.value) == (
        f'{path}: 2 teacher embedding rows are all zeros (norm 0; expected '
        'L2-normalised embeddings); the first is row 3, box 1 of image '
        "'b.jpg'. Re-extract the file with "
        'tools/extract_teacher_embeddings.py')
    # a folder is a folder, not a corrupt file
    with pytest.raises(FileNotFoundError, match='is a folder'):
        TeacherEmbeddings(str(tmp_path))


# ---------------------------------------------------------------------------
# Dataloader typos
# ---------------------------------------------------------------------------
def test_dataloader_typo_is_refused_before_anything_is_built(tmp_path):
    # was a raw "DataLoader.__init__() got an unexpected keyword argument"
    with pytest.raises(
            ConfigKeyError,
            match=r"train_dataloader\.batch_sise: not an argument "
            r"of the dataloader .* did you mean 'batch_size'\?"):
        load_config(TOY_CONFIG, {'train_dataloader.batch_sise': 2})
    # in a config file, too
    cfg_file = tmp_path / 'typo.py'
    cfg_file.write_text('train_dataloader = dict(batch_size=2, '
                        "num_wokers=0, dataset=dict(type='Toy'))\n")
    with pytest.raises(ConfigKeyError, match="did you mean 'num_workers'"):
        load_config(str(cfg_file))
    # the keys mmengine reads itself, and torch's, are fine
    load_config(
        TOY_CONFIG, {
            'train_dataloader.persistent_workers': False,
            'train_dataloader.num_batch_per_epoch': 2
        })
    proc = run_tool([
        'tools/train.py', TOY_CONFIG, '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', 'train_dataloader.batch_sise=2'
    ],
                    check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert "did you mean 'batch_size'" in proc.stderr


def test_every_shipped_config_has_dataloader_keys_that_exist():
    from mmengine.config import Config
    files = [
        f for f in sorted((REPO / 'configs').rglob('*.py'))
        if '_base_' not in f.parts
    ]
    assert len(files) > 10
    for f in files:
        check_config_keys(Config.fromfile(str(f)), whole=True)


# ---------------------------------------------------------------------------
# Folders where a file is expected
# ---------------------------------------------------------------------------
def test_subset_file_that_is_a_folder(tmp_path):
    from mmpsearch.datasets import load_cuhk_subset
    from mmpsearch.testing.released_trees import write_cuhk
    root = str(tmp_path / 'cuhk')
    write_cuhk(root, sizes=(50, 100))
    folder = Path(root) / 'annotation' / 'test' / 'subset' / 'Occlusion.mat'
    folder.mkdir(parents=True)
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'{folder} is a folder, not a file')):
        load_cuhk_subset(root, 'occlusion')


def test_test_py_names_a_checkpoint_folder(tmp_path):
    folder = tmp_path / 'ckpt.pth'
    folder.mkdir()
    proc = run_tool([
        'tools/test.py', ORACLE,
        str(folder), '--work-dir',
        str(tmp_path / 'w')
    ],
                    check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == \
        f'checkpoint {folder} is a folder, not a checkpoint file'


# ---------------------------------------------------------------------------
# One file for two outputs; refusals name a flag the tool has
# ---------------------------------------------------------------------------
def test_search_demo_refuses_one_file_for_two_pictures(tmp_path):
    demo = load_tool('demo/search_demo.py')
    out = str(tmp_path / 'x.png')
    # the steps picture used to replace the search picture
    with pytest.raises(
            SystemExit,
            match=f'--out and --show-steps name the '
            f'same file {out}'):
        demo.main([
            'cfg', 'ckpt', '--query-img', 'q.jpg', '--query-box', '1', '2',
            '3', '4', '--gallery', 'g', '--out', out, '--show-steps', out
        ])
    assert not os.path.exists(out)


def _flags(tree: ast.AST) -> set:
    return {name for names, _ in declared_options(tree) for name in names}


def _suggested_flags(tree: ast.AST) -> list:
    """The flag each refuse_existing_file / refuse_nonempty_dir call
    offers (its 4th argument or ``flag=``; ``--force`` by default)."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or getattr(
                node.func, 'id', getattr(node.func, 'attr',
                                         '')) not in ('refuse_existing_file',
                                                      'refuse_nonempty_dir'):
            continue
        flag = node.args[3] if len(node.args) > 3 else next(
            (k.value for k in node.keywords if k.arg == 'flag'), None)
        if flag is None:
            out.append('--force')
        elif isinstance(flag, ast.Constant) and flag.value:
            out.append(flag.value)
    return out


def test_every_refusal_names_a_flag_the_tool_accepts():
    scripts = sorted(REPO.glob('tools/**/*.py')) + \
        sorted(REPO.glob('demo/*.py'))
    checked = 0
    for path in scripts:
        tree = ast.parse(path.read_text())
        flags = _flags(tree)
        for flag in _suggested_flags(tree):
            assert flag in flags, (
                f'{path.relative_to(REPO)} suggests {flag}, which it does '
                f'not accept (it has {sorted(flags)})')
            checked += 1
    assert checked >= 10
    # tools/test.py --json EXISTING names --force, which it accepts
    existing = REPO / 'tools' / 'test.py'
    assert '--force' in _flags(ast.parse(existing.read_text()))


def test_test_py_json_existing_names_its_flag(tmp_path):
    ckpt = tmp_path / 'own.pth'
    torch.save({'state_dict': {'dummy': torch.zeros(1)}}, ckpt)
    existing = tmp_path / 'metrics.json'
    existing.write_text(json.dumps({'earlier': 1}))
    proc = run_tool([
        'tools/test.py', ORACLE,
        str(ckpt), '--json',
        str(existing), '--work-dir',
        str(tmp_path / 'w')
    ],
                    check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err == (f'--json {existing} already exists; refusing to overwrite '
                   'it. Name another file, or add --force to overwrite it '
                   '(see docs/en/refusals.md).')
    assert json.loads(existing.read_text()) == {'earlier': 1}
