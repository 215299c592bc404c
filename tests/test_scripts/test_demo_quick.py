# Copyright (c) mmpsearch contributors. All rights reserved.
"""``make demo-quick`` is wired: the Makefile target, the quick variant of
scripts/demo.sh and its two leaf configs, without training anything.

scripts/demo.sh runs on a copy of scripts/ in an empty folder with a fake
Python that records each command and writes what the next stage reads
(scenes, checkpoints, embeddings), up to the first tools/test.py.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from ..conftest import leaves

REPO = Path(__file__).resolve().parents[2]
QUICK_PSDIFF = 'configs/psdiff/psdiff_r18_synthetic_quick.py'
QUICK_TEACHER = 'configs/teacher/teacher_synthetic_quick.py'
#: The quick variant's data and work dirs, and the full demo's.
QUICK_PATHS = {
    'data/synthetic_cuhk_quick/': 'data/synthetic_cuhk/',
    'work_dirs/teacher_synthetic_quick/': 'work_dirs/teacher_synthetic/',
}

FAKE_PYTHON = '''\
#!{python}
import os, sys
args = sys.argv[1:]
with open(os.environ['FAKE_LOG'], 'a') as f:
    f.write(' '.join(args) + '\\n')
def opt(name):
    return args[args.index(name) + 1]
tool = args[0] if args else ''
if tool == 'tools/dataset_converters/make_synthetic.py':
    out = opt('--out')
    os.makedirs(out + '/annotation')
    os.makedirs(out + '/Image/SSM')
    open(out + '/annotation/Images.mat', 'w').close()
elif tool == 'tools/train.py':
    work_dir = opt('--work-dir')
    os.makedirs(work_dir)
    open(work_dir + '/iter_1.pth', 'w').close()
    with open(work_dir + '/last_checkpoint', 'w') as f:
        f.write(work_dir + '/iter_1.pth')
elif tool == 'tools/extract_teacher_embeddings.py':
    open(opt('--out'), 'w').close()
else:
    sys.exit(3)  # tools/test.py: the end of the fake run
'''


def run_demo(tmp_path: Path, variant: str) -> tuple:
    """scripts/demo.sh (a copy, in an empty tree) with the fake Python:
    (the process, the commands it ran)."""
    for name in ('demo.sh', 'prepare_synthetic.sh'):
        (tmp_path / 'scripts').mkdir(exist_ok=True)
        shutil.copy(REPO / 'scripts' / name, tmp_path / 'scripts' / name)
    fake = tmp_path / 'fake_python'
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / 'commands.log'
    env = dict(
        os.environ, PY=str(fake), FAKE_LOG=str(log), DEMO_VARIANT=variant)
    proc = subprocess.run(
        ['bash', str(tmp_path / 'scripts' / 'demo.sh')],
        env=env,
        capture_output=True,
        text=True,
        timeout=60)
    commands = log.read_text().splitlines() if log.exists() else []
    return proc, commands


def test_scripts_parse():
    for name in ('demo.sh', 'prepare_synthetic.sh', 'baseline.sh'):
        subprocess.run(
            ['bash', '-n', str(REPO / 'scripts' / name)], check=True)


@pytest.mark.skipif(shutil.which('make') is None, reason='needs make')
def test_makefile_targets():
    text = (REPO / 'Makefile').read_text()
    phony = re.search(r'^\.PHONY:(.*)$', text, re.M).group(1).split()
    assert 'demo-quick' in phony and 'demo' in phony
    dry = {}
    for target in ('demo', 'demo-quick'):
        dry[target] = subprocess.run(
            ['make', '-n', '-C',
             str(REPO), target, 'VENV=/nonexistent'],
            capture_output=True,
            text=True,
            check=True).stdout
    assert 'DEMO_VARIANT=quick bash scripts/demo.sh' in dry['demo-quick']
    assert 'bash scripts/install.sh' in dry['demo-quick']  # after install
    assert 'DEMO_VARIANT=full bash scripts/demo.sh' in dry['demo']


def test_readme_names_the_quick_variant():
    readme = (REPO / 'README.md').read_text()
    first = readme.split('\n## ')[1]  # the section of the first commands
    assert '`make demo-quick`' in first
    assert 'configs/psdiff/psdiff_r18_synthetic_quick.py' in first


def test_quick_variant_runs_its_own_chain(tmp_path):
    proc, commands = run_demo(tmp_path, 'quick')
    # stopped at tools/test.py (the script exits 1 after its log's tail)
    assert proc.returncode == 1, proc.stderr
    assert '=== [demo-quick] scenes -> data/synthetic_cuhk_quick' in \
        proc.stdout
    teacher_ckpt = 'work_dirs/teacher_synthetic_quick/iter_1.pth'
    expected = [
        'tools/dataset_converters/make_synthetic.py --format cuhk --out '
        'data/synthetic_cuhk_quick --num-images 300 --num-ids 200 --seed 0',
        f'tools/train.py {QUICK_TEACHER} --work-dir '
        'work_dirs/teacher_synthetic_quick',
        f'tools/extract_teacher_embeddings.py {QUICK_TEACHER} '
        f'{teacher_ckpt} --out '
        'work_dirs/teacher_synthetic_quick/teacher_embeddings.npz',
        f'tools/train.py {QUICK_PSDIFF} --work-dir '
        'work_dirs/psdiff_r18_synthetic_quick --cfg-options '
        f'model.backbone.init_cfg.checkpoint={teacher_ckpt}',
    ]
    assert commands[:4] == expected
    test = commands[4]
    assert test.startswith(f'tools/test.py {QUICK_PSDIFF} '
                           'work_dirs/psdiff_r18_synthetic_quick/iter_1.pth')
    assert 'model.test_cfg.sampling_steps=1' in test
    assert 'evaluation at 1, 8 steps' in proc.stdout
    # nothing but the quick variant's folders was written
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {
        'scripts', 'fake_python', 'commands.log', 'data', 'work_dirs'
    }
    assert {p.name
            for p in (tmp_path / 'data').iterdir()
            } == {'synthetic_cuhk_quick'}
    assert {p.name
            for p in (tmp_path / 'work_dirs').iterdir()
            } == {'teacher_synthetic_quick', 'psdiff_r18_synthetic_quick'}


def test_full_variant_is_unchanged(tmp_path):
    proc, commands = run_demo(tmp_path, 'full')
    assert proc.returncode == 1, proc.stderr
    assert commands[0] == (
        'tools/dataset_converters/make_synthetic.py --format cuhk --out '
        'data/synthetic_cuhk --num-images 800 --num-ids 200 --seed 0')
    assert commands[3].startswith(
        'tools/train.py configs/psdiff/psdiff_r18_synthetic.py --work-dir '
        'work_dirs/psdiff_r18_synthetic ')
    assert 'evaluation at 1, 2, 4, 8 steps' in proc.stdout


def test_unknown_variant_is_refused(tmp_path):
    proc, commands = run_demo(tmp_path, 'fast')
    assert proc.returncode == 1 and commands == []
    assert 'DEMO_VARIANT=fast: expected full or quick' in proc.stderr


def _normalised(cfg: Config):
    """The config as a dict, the quick variant's paths replaced by the full
    demo's."""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        if isinstance(node, str):
            for quick, full in QUICK_PATHS.items():
                node = node.replace(quick, full)
        return node

    return walk(cfg.to_dict())


def _strings(node):
    return (x for x in leaves(node) if isinstance(x, str))


@pytest.mark.parametrize(
    'quick, full, schedule',
    [
        (QUICK_PSDIFF, 'configs/psdiff/psdiff_r18_synthetic.py', {
            'train_cfg', 'param_scheduler', 'lr_decay', 'default_hooks',
            'max_iters'
        }),
        # the crop split: fewer boxes per identity in 150 scenes
        (QUICK_TEACHER, 'configs/teacher/teacher_synthetic.py',
         {'train_dataloader', 'val_dataloader', 'test_dataloader'}),
    ])
def test_quick_configs_differ_only_in_data_and_schedule(quick, full, schedule):
    cfg = Config.fromfile(str(REPO / quick))
    # every path is the quick variant's, none the full demo's
    for text in _strings(cfg.to_dict()):
        for full_path in QUICK_PATHS.values():
            assert full_path not in text, text
    ours = _normalised(cfg)
    theirs = Config.fromfile(str(REPO / full)).to_dict()
    assert set(ours) == set(theirs)
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ == schedule
    for key in schedule & {'train_dataloader', 'val_dataloader'}:
        # ... and there only the holdout of the crop split
        assert ours[key]['dataset'].pop('holdout_every') == 3
        theirs[key]['dataset'].pop('holdout_every')
        assert ours[key] == theirs[key]
    assert any('synthetic_cuhk_quick' in t for t in _strings(cfg.to_dict()))


def test_quick_psdiff_schedule():
    cfg = Config.fromfile(str(REPO / QUICK_PSDIFF))
    full = Config.fromfile(
        str(REPO / 'configs/psdiff/psdiff_r18_synthetic.py'))
    assert cfg.max_iters == cfg.train_cfg.max_iters == 500
    assert cfg.train_cfg.val_interval == 500
    warmup, steps = cfg.param_scheduler
    assert warmup == full.param_scheduler[0]  # the same warm-up
    assert steps.milestones == [400] and steps.end == 500
    assert cfg.default_hooks.checkpoint.interval == 500
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    hooks = {k: v for k, v in cfg.default_hooks.items() if k != 'checkpoint'}
    assert hooks == {
        k: v
        for k, v in full.default_hooks.items() if k != 'checkpoint'
    }
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'work_dirs/teacher_synthetic_quick/iter_150.pth'
