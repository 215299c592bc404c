# Copyright (c) mmpsearch contributors. All rights reserved.
"""Nothing a user has is overwritten without being asked
(``docs/en/refusals.md``): train.py into a work dir with checkpoints,
make_synthetic.py / make_tiny_sd.py into a non-empty folder,
eval_search.py --json onto a file; and the dist/slurm scripts find their
Python without an activated environment."""
import json
import os
import runpy
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
from mmpsearch.evaluation.results_io import save_search_results
from mmpsearch.utils.overwrite import (ResumeError, check_train_work_dir,
                                       find_resume_checkpoint,
                                       refuse_existing_file,
                                       refuse_nonempty_dir)
from tests.test_evaluation.eval_utils import load_eval_search, search_results
from .conftest import REPO, run_ok, run_tool


def _earlier_run(work):
    """A work dir as an earlier ``tools/train.py`` run leaves it."""
    (work / '20240101_000000').mkdir(parents=True)
    (work / 'iter_2.pth').write_bytes(b'earlier weights')
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    (work / 'toy_train.py').write_text('# earlier config\n')
    return {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}


def _unchanged(work, before):
    assert {
        p.name: p.read_bytes()
        for p in work.iterdir() if p.is_file()
    } == before


# 1. tools/train.py and its work dir


def test_train_refuses_work_dir_with_checkpoints(tmp_path, toy_config):
    work = tmp_path / 'work'
    before = _earlier_run(work)
    proc = run_tool(['tools/train.py', toy_config, '--work-dir',
                     str(work)],
                    check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert f'work dir {work} already holds checkpoints' in proc.stderr
    for way in ('--resume', '--work-dir NEW_DIR', '--force'):
        assert way in proc.stderr
    # refused before any work: nothing written, not even a log folder
    _unchanged(work, before)
    assert sorted(p.name for p in work.iterdir()
                  if p.is_dir()) == ['20240101_000000']


def test_train_force_overwrites(tmp_path, toy_config):
    work = tmp_path / 'work'
    before = _earlier_run(work)
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(work), '--force', '--cfg-options', 'train_cfg.max_iters=2'
    ])
    assert (work / 'iter_2.pth').read_bytes() != before['iter_2.pth']
    assert (work / 'last_checkpoint').read_text().strip() == \
        str(work / 'iter_2.pth')


def test_work_dir_decision(tmp_path):
    # absent, empty, or holding only logs of a run that saved nothing
    check_train_work_dir(str(tmp_path / 'new'), None)
    check_train_work_dir(str(tmp_path), None)
    (tmp_path / '20240101_000000').mkdir()
    (tmp_path / 'toy_train.py').write_text('# config\n')
    check_train_work_dir(str(tmp_path), None)
    # a checkpoint, or only last_checkpoint: refused without --resume/--force
    for i, name in enumerate(('epoch_3.pth', 'last_checkpoint')):
        work = tmp_path / f'run_{i}'
        work.mkdir()
        (work / name).write_text('x')
        with pytest.raises(
                FileExistsError,
                match=f'{work} already holds '
                f'checkpoints of an earlier run .{name}.'):
            check_train_work_dir(str(work), None)
        assert check_train_work_dir(str(work), None, force=True) is None
        assert check_train_work_dir(str(work), str(work / name)) is None
    # checkpoints below the work dir (e.g. a demo's results) do not count
    (tmp_path / '20240101_000000' / 'other.pth').write_text('x')
    check_train_work_dir(str(tmp_path), None)
    # a file is no work dir, whatever the flags
    (tmp_path / 'afile').write_text('x')
    for resume, force in ((None, False), (None, True), ('auto', False)):
        with pytest.raises(
                FileExistsError, match='afile is a file, not a folder'):
            check_train_work_dir(str(tmp_path / 'afile'), resume, force)


def test_resume_last_checkpoint_messages(tmp_path):
    work = tmp_path / 'work'
    # nothing yet: a first run starts from the beginning
    assert find_resume_checkpoint(str(work)) is None
    work.mkdir()
    assert check_train_work_dir(str(work), 'auto') is None
    ckpt = work / 'iter_4.pth'
    ckpt.write_bytes(b'w')
    last = work / 'last_checkpoint'
    # missing beside checkpoints: resuming would start over them
    with pytest.raises(ResumeError) as e:
        find_resume_checkpoint(str(work))
    assert f'{last} does not exist, but {work} holds iter_4.pth' in str(
        e.value) and f'--resume {ckpt}' in str(e.value)
    # empty
    last.write_text('\n')
    with pytest.raises(ResumeError) as e:
        find_resume_checkpoint(str(work))
    assert f'{last} is empty; expected one line, the path of the latest ' \
        'checkpoint' in str(e.value) and f'--resume {ckpt}' in str(e.value)
    # stale: the work dir was moved
    last.write_text('/old/place/work/iter_4.pth\n')
    with pytest.raises(ResumeError) as e:
        find_resume_checkpoint(str(work))
    assert f'{last} names /old/place/work/iter_4.pth, which does not ' \
        'exist; expected the path of a checkpoint file' in str(e.value)
    assert f'moved or renamed? {ckpt} exists: --resume {ckpt}' in str(e.value)
    # stale: the checkpoint is gone
    last.write_text(str(work / 'iter_6.pth'))
    with pytest.raises(ResumeError, match='iter_6.pth, which does not exist'):
        find_resume_checkpoint(str(work))
    last.write_text(str(tmp_path))
    with pytest.raises(ResumeError, match='a folder; expected the path of a'):
        find_resume_checkpoint(str(work))
    last.write_text(str(ckpt))
    assert find_resume_checkpoint(str(work)) == str(ckpt)


def test_the_library_refuses_with_file_exists_error(tmp_path):
    """The shared checks are library code: they raise FileExistsError with
    the message (the option, the path, the flag), not SystemExit."""
    existing = tmp_path / 'metrics.json'
    existing.write_text('{}')
    with pytest.raises(FileExistsError) as e:
        refuse_existing_file(str(existing), '--json')
    assert not isinstance(e.value, SystemExit)
    assert str(e.value).startswith(f'--json {existing} already exists; '
                                   'refusing to overwrite it')
    assert 'add --force to overwrite it' in str(e.value)
    with pytest.raises(
            FileExistsError,
            match=f'--out {tmp_path} is not empty .1 entries: '
            'metrics.json.*add --overwrite'):
        refuse_nonempty_dir(str(tmp_path), '--out', flag='--overwrite')
    refuse_existing_file(str(existing), '--json', force=True)
    refuse_nonempty_dir(str(tmp_path), '--out', force=True)


def test_a_tool_exits_with_the_refusal_message(tmp_path):
    """A tool turns the library's FileExistsError into an exit: status 1,
    the message, no traceback, nothing written."""
    out = tmp_path / 'data'
    out.mkdir()
    (out / 'mine.txt').write_text('kept')
    proc = run_tool([
        'tools/dataset_converters/make_synthetic.py', '--format', 'cuhk',
        '--out',
        str(out)
    ],
                    check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert f'--out {out} is not empty (1 entries: mine.txt)' in proc.stderr
    assert 'add --force to write into this one anyway' in proc.stderr
    assert [p.name for p in out.iterdir()] == ['mine.txt']


def test_train_resume_names_stale_last_checkpoint(tmp_path, toy_config):
    work = tmp_path / 'work'
    _earlier_run(work)
    (work / 'last_checkpoint').write_text('')
    proc = run_tool(
        ['tools/train.py', toy_config, '--work-dir',
         str(work), '--resume'],
        check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert f'{work / "last_checkpoint"} is empty' in proc.stderr


# 2. generators and eval_search.py --json


def _run_script(monkeypatch, script, argv):
    monkeypatch.setattr(sys, 'argv', [script] + [str(a) for a in argv])
    runpy.run_path(str(REPO / script), run_name='__main__')


def _release(root):
    """Files with CUHK-SYSU's names, standing for a real release."""
    (root / 'annotation').mkdir(parents=True)
    (root / 'Image' / 'SSM').mkdir(parents=True)
    for rel in ('annotation/Images.mat', 'annotation/pool.mat',
                'Image/SSM/s1.jpg'):
        (root / rel).write_bytes(b'the real ' + rel.encode())
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob('*') if p.is_file()
    }


def test_make_synthetic_refuses_nonempty_out(tmp_path, monkeypatch):
    script = 'tools/dataset_converters/make_synthetic.py'
    args = [
        '--format', 'cuhk', '--num-images', '202', '--num-ids', '8',
        '--image-size', '64', '64', '--out'
    ]
    real = tmp_path / 'CUHK-SYSU'
    before = _release(real)
    with pytest.raises(SystemExit, match=f'--out {real} is not empty'):
        _run_script(monkeypatch, script, args + [real])
    assert {
        str(p.relative_to(real)): p.read_bytes()
        for p in real.rglob('*') if p.is_file()
    } == before
    # an empty folder, and --force, write
    empty = tmp_path / 'empty'
    empty.mkdir()
    _run_script(monkeypatch, script, args + [empty])
    assert (empty / 'annotation' / 'Images.mat').is_file()
    _run_script(monkeypatch, script, args + [real, '--force'])
    assert (real / 'annotation' / 'Images.mat').read_bytes() != \
        before['annotation/Images.mat']
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(SystemExit, match='afile is a file, not a folder'):
        _run_script(monkeypatch, script, args + [tmp_path / 'afile'])


def test_make_tiny_sd_refuses_nonempty_out(tmp_path, monkeypatch):
    import mmpsearch.testing.tiny_sd as tiny_sd
    written = []
    # the writer itself is tested elsewhere; here only whether it is called
    monkeypatch.setattr(
        tiny_sd,
        'make_tiny_sd',
        lambda out, seed=0: written.append(out) or out)
    script = 'tools/misc/make_tiny_sd.py'
    sd = tmp_path / 'stable-diffusion-2-1-base'
    (sd / 'unet').mkdir(parents=True)
    (sd / 'model_index.json').write_text('{"real": true}')
    with pytest.raises(SystemExit, match=f'OUT {sd} is not empty'):
        _run_script(monkeypatch, script, [sd])
    assert written == []
    _run_script(monkeypatch, script, [tmp_path / 'new'])
    _run_script(monkeypatch, script, [sd, '--force'])
    assert written == [str(tmp_path / 'new'), str(sd)]


def test_eval_search_refuses_existing_json(tmp_path):
    cli = load_eval_search()
    metrics = tmp_path / 'metrics.json'
    metrics.write_text('{"mAP": 0.9}')
    results = tmp_path / 'unread.pkl'
    results.write_bytes(b'never read')
    # refused before anything is read (the data root does not even exist)
    with pytest.raises(SystemExit, match=f'--json {metrics} already exists'):
        cli.main([
            str(results), '--dataset', 'cuhk', '--data-root',
            str(tmp_path / 'none'), '--json',
            str(metrics)
        ])
    assert metrics.read_text() == '{"mAP": 0.9}'
    with pytest.raises(SystemExit, match='is a folder, not a file'):
        cli.main([
            str(results), '--dataset', 'cuhk', '--data-root',
            str(tmp_path / 'none'), '--json',
            str(tmp_path)
        ])
    # --force scores and overwrites
    root, results = tmp_path / 'cuhk', tmp_path / 'results.pkl'
    make_synthetic(
        'cuhk', str(root), num_images=202, num_ids=8, image_size=(64, 64))
    save_search_results(
        search_results(load_cuhk_protocol(str(root), 100)), str(results))
    summary = cli.main([
        str(results), '--dataset', 'cuhk', '--data-root',
        str(root), '--json',
        str(metrics), '--force'
    ])
    assert summary['mAP'] == pytest.approx(1.0)
    assert json.loads(metrics.read_text()) == summary


# 3. dist/slurm scripts without an activated environment


def _bare_env(**extra):
    """No activated environment: the venv's bin is not on PATH."""
    env = {
        'HOME': os.environ.get('HOME', '/tmp'),
        'PATH': '/usr/local/bin:/usr/bin:/bin',
        'OMP_NUM_THREADS': '1',
        'CUDA_VISIBLE_DEVICES': ''
    }  # torchrun on the CPU (gloo)
    if Path(sys.prefix).resolve() != (REPO / '.venv').resolve():
        env['VENV'] = sys.prefix  # as `make VENV=...` exports it
    env.update(extra)
    return env


def _venv_python(env):
    """The interpreter tools/find_python.sh should find in ``env``."""
    return Path(env.get('VENV', REPO / '.venv')) / 'bin' / 'python'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize('script,args', [
    ('tools/dist_train.sh', ['CONFIG', '1', '--help']),
    ('tools/dist_test.sh', ['CONFIG', 'CKPT', '1', '--help']),
])
def test_dist_scripts_need_no_active_venv(tmp_path, script, args):
    # torchrun really starts one worker, which prints the tool's help
    proc = subprocess.run(
        ['bash', str(REPO / script)] + args,
        cwd=tmp_path,
        env=_bare_env(PORT=_free_port()),
        capture_output=True,
        text=True,
        timeout=120)
    out = proc.stdout + proc.stderr
    assert 'command not found' not in out
    assert proc.returncode == 0, out[-3000:]
    assert '--launcher {none,pytorch,slurm,mpi}' in proc.stdout


def test_slurm_scripts_need_no_active_venv(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\necho "srun $*"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = _bare_env()
    env['PATH'] = f'{bin_dir}:{env["PATH"]}'
    python = _venv_python(env)
    # both run through tools/slurm_launch.sh, each with its own arguments
    expect = {
        'tools/slurm_train.sh': 'train.py CONFIG --work-dir=ARG -x '
        '--launcher=slurm',
        'tools/slurm_test.sh': 'test.py CONFIG ARG -x --launcher=slurm'
    }
    for script, tail in expect.items():
        proc = run_ok(
            ['bash',
             str(REPO / script), 'PART', 'JOB', 'CONFIG', 'ARG', '-x'],
            cwd=tmp_path,
            env=env)
        assert f'{python} -u ' in proc.stdout, proc.stdout
        assert proc.stdout.rstrip().endswith(tail), proc.stdout
    # $PYTHON (documented before) and $PY still choose
    proc = subprocess.run(
        ['bash',
         str(REPO / 'tools/slurm_train.sh'), 'P', 'J', 'C', 'W'],
        cwd=tmp_path,
        env={
            **env, 'PYTHON': '/opt/py/bin/python'
        },
        capture_output=True,
        text=True,
        timeout=60)
    assert '/opt/py/bin/python -u ' in proc.stdout
