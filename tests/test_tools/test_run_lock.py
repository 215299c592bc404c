# Copyright (c) mmpsearch contributors. All rights reserved.
"""One run at a time in a work dir (``docs/en/refusals.md``): a second
``tools/train.py`` / ``tools/test.py`` into a work dir (or ``--out`` /
``--json``) that a live run holds is refused, naming that run; a lock left
by a run that is gone is taken over; ``--force`` takes any lock over."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from mmpsearch.utils.run_lock import (LOCK_NAME, RunLock, RunLockError,
                                      hold_run_locks, launcher_rank, lock_file,
                                      stale_reason)
from .conftest import ORACLE, run_tool


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def _write_lock(path, **info):
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = dict(
        pid=os.getpid(),
        host=socket.gethostname(),
        started='2024-01-01 00:00:00 +0000',
        command='tools/train.py cfg.py',
        token='other')
    holder.update(info)
    path.write_text(json.dumps(holder))
    return holder


def test_lock_held_released_and_refused(tmp_path):
    work = tmp_path / 'work'
    with RunLock(str(work), 'work dir', 'tools/train.py') as lock:
        path = work / LOCK_NAME
        assert lock.path == str(path) and path.is_file()
        info = json.loads(path.read_text())
        assert info['pid'] == os.getpid()
        assert info['host'] == socket.gethostname()
        assert info['started'] and info['command'].startswith('tools/train.py')
        # a second run (here: another lock of this live process) is refused
        with pytest.raises(RunLockError) as e:
            RunLock(str(work), 'work dir', 'tools/train.py').acquire()
        msg = str(e.value)
        assert f'work dir {work} is in use by another run' in msg
        assert f'pid {os.getpid()} on host {socket.gethostname()}' in msg
        assert str(path) in msg and '--force' in msg
        assert path.is_file()  # still held by the first
    assert not path.exists()  # released on exit
    # a file target: the lock is beside it
    assert lock_file(
        str(tmp_path / 'm.json'),
        is_dir=False) == str(tmp_path / '.m.json.lock')


def test_stale_lock_taken_over(tmp_path, capsys):
    work = tmp_path / 'work'
    path = work / LOCK_NAME
    dead = _dead_pid()
    _write_lock(path, pid=dead)
    assert f'pid {dead} no longer runs' in stale_reason(
        json.loads(path.read_text()))
    with RunLock(str(work), 'work dir', 'tools/train.py'):
        assert json.loads(path.read_text())['pid'] == os.getpid()
    assert 'taking over the lock' in capsys.readouterr().err
    assert not path.exists()
    # an empty lock file (a run killed while writing it) is stale too
    path.write_text('')
    with RunLock(str(work), 'work dir', 'tools/train.py'):
        assert json.loads(path.read_text())['pid'] == os.getpid()


def test_lock_of_another_host(tmp_path, monkeypatch):
    work = tmp_path / 'work'
    path = work / LOCK_NAME
    _write_lock(path, pid=_dead_pid(), host='other-node-1')
    # its pid cannot be checked from here: refused, naming the host
    with pytest.raises(RunLockError, match='on host other-node-1'):
        RunLock(str(work), 'work dir', 'tools/train.py').acquire()
    # an earlier start of the same (requeued) Slurm job: stale
    _write_lock(path, host='other-node-1', slurm_job_id='4242')
    monkeypatch.setenv('SLURM_JOB_ID', '4242')
    with RunLock(str(work), 'work dir', 'tools/train.py'):
        pass
    # --force takes over the lock of a live run
    monkeypatch.delenv('SLURM_JOB_ID')
    _write_lock(path)
    with RunLock(str(work), 'work dir', 'tools/train.py', force=True):
        assert json.loads(path.read_text())['token'] != 'other'
    assert not path.exists()


def test_release_keeps_a_lock_taken_over(tmp_path):
    work = tmp_path / 'work'
    lock = RunLock(str(work), 'work dir', 'tools/train.py').acquire()
    # another run took it over (--force): ours must not remove theirs
    _write_lock(work / LOCK_NAME)
    lock.release()
    assert json.loads((work / LOCK_NAME).read_text())['token'] == 'other'


def test_only_rank_zero_locks(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1')
    assert launcher_rank('pytorch') == 1 and launcher_rank('none') == 0
    with hold_run_locks([(str(tmp_path / 'w'), 'work dir', True)],
                        'tools/train.py',
                        launcher='pytorch') as locks:
        assert locks == []
    with hold_run_locks([(str(tmp_path / 'w'), 'work dir', True),
                         (None, '--json', False)], 'tools/train.py') as locks:
        assert len(locks) == 1 and (tmp_path / 'w' / LOCK_NAME).is_file()
    assert not (tmp_path / 'w' / LOCK_NAME).exists()


def test_train_refuses_a_work_dir_in_use(tmp_path, toy_config):
    work = tmp_path / 'work'
    with RunLock(str(work), 'work dir', 'tools/train.py other'):
        proc = run_tool(
            ['tools/train.py', toy_config, '--work-dir',
             str(work)],
            check=False)
        assert proc.returncode != 0
        assert 'Traceback' not in proc.stderr
        assert f'work dir {work} is in use by another run' in proc.stderr
        assert f'pid {os.getpid()}' in proc.stderr
        # refused before any work: nothing but the lock in the work dir
        assert sorted(os.listdir(work)) == [LOCK_NAME]
        # a requeued job that resumes is refused just the same
        proc = run_tool([
            'tools/train.py', toy_config, '--work-dir',
            str(work), '--resume'
        ],
                        check=False)
        assert 'is in use by another run' in proc.stderr
        assert sorted(os.listdir(work)) == [LOCK_NAME]
    # the holder is gone: trains, and releases its own lock on exit
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=2'
    ])
    assert (work / 'iter_2.pth').is_file()
    assert not (work / LOCK_NAME).exists()


def test_test_py_refuses_outputs_in_use(tmp_path):
    ckpt = tmp_path / 'oracle.pth'
    torch.save({'state_dict': {'dummy': torch.zeros(1)}}, ckpt)
    work, out = tmp_path / 'work', tmp_path / 'res' / 'results.pkl'
    base = ['tools/test.py', ORACLE, str(ckpt)]
    with RunLock(str(work), 'work dir', 'tools/test.py other'):
        proc = run_tool(base + ['--work-dir', str(work)], check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr
        assert f'work dir {work} is in use by another run' in proc.stderr
        assert sorted(os.listdir(work)) == [LOCK_NAME]
    with RunLock(str(out), '--out', 'tools/test.py other', is_dir=False):
        proc = run_tool(
            base + ['--work-dir',
                    str(tmp_path / 'w2'), '--out',
                    str(out)],
            check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr
        assert f'--out {out} is in use by another run' in proc.stderr
        assert not out.exists()
