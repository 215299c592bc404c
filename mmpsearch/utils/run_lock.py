# Copyright (c) mmpsearch contributors. All rights reserved.
"""One run at a time in a work dir (``docs/en/refusals.md``).

Two runs that write into the same work dir (or the same output file)
overwrite each other's checkpoints, ``last_checkpoint``, logs and config
without a word: the checks of :mod:`mmpsearch.utils.overwrite` only look at
start-up, and the first checkpoint may come hours later. So a tool holds a
lock for the life of its run: a small JSON file that names the run (pid,
host, start time, command), created atomically (``O_EXCL``) and removed on
exit. A second run is refused with a message that names the first.

A lock is *stale*, and taken over with a note, when its run is gone: the pid
no longer runs on this host (or runs a newer process of the same number),
or it was left by an earlier start of the same Slurm job (a requeued job
never runs twice at once). A lock of a live run, or of a run on another
host (whose pid cannot be checked from here), is only taken over with
``--force``.
"""
import atexit
import json
import os
import os.path as osp
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence

from .overwrite import DOCS


class RunLockError(RuntimeError):
    """A run lock refused: another run holds it, or the path cannot hold
    one. The tools turn it into an exit with its message
    (:func:`mmpsearch.utils.cli.exit_on_refusal`)."""


#: The lock file inside a locked work dir.
LOCK_NAME = '.mmpsearch_run.lock'

#: The environment variable of the global rank of each launcher.
_RANK_ENV = dict(
    pytorch='RANK', slurm='SLURM_PROCID', mpi='OMPI_COMM_WORLD_RANK')


def lock_file(target: str, is_dir: bool = True) -> str:
    """The lock file of ``target``: ``TARGET/.mmpsearch_run.lock`` for a
    folder, ``.NAME.lock`` beside a file ``NAME``."""
    if is_dir:
        return osp.join(target, LOCK_NAME)
    folder, name = osp.split(osp.abspath(target))
    return osp.join(folder, f'.{name}.lock')


def _proc_start(pid: int) -> Optional[str]:
    """When process ``pid`` started, in clock ticks since boot (Linux; None
    elsewhere): tells a pid that was reused by a newer process."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            # the command name (field 2) may hold spaces: split after it
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(tool: str) -> dict:
    pid = os.getpid()
    command = ' '.join([tool] + sys.argv[1:])
    return dict(
        pid=pid,
        host=socket.gethostname(),
        started=time.strftime('%Y-%m-%d %H:%M:%S %z'),
        command=command if len(command) <= 300 else command[:297] + '...',
        pid_start=_proc_start(pid),
        slurm_job_id=os.environ.get('SLURM_JOB_ID'),
        token=uuid.uuid4().hex)


def _read(path: str) -> Optional[dict]:
    """The holder recorded in ``path``; None when it is gone, {} when it
    cannot be read (empty or cut: a run killed while writing it)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def stale_reason(info: dict) -> Optional[str]:
    """Why the run that holds a lock is over, or None when it may still run.

    Args:
        info (dict): The lock file's content.
    """
    if not info.get('pid'):
        return 'the lock file is empty or unreadable'
    host, pid = info.get('host'), int(info['pid'])
    if host == socket.gethostname():
        if not _pid_alive(pid):
            return f'pid {pid} no longer runs on {host}'
        recorded, now = info.get('pid_start'), _proc_start(pid)
        if recorded and now and recorded != now:
            return f'pid {pid} on {host} is now another process'
        return None
    job = os.environ.get('SLURM_JOB_ID')
    if job and info.get('slurm_job_id') == job:
        return (f'it is an earlier start of this Slurm job {job} (requeued), '
                'which cannot run at the same time')
    return None


def describe_holder(info: dict) -> str:
    """``tools/train.py ... (pid 12, host h, started 2024-...)``."""
    return (f'{info.get("command", "a run")} (pid {info.get("pid")} on host '
            f'{info.get("host")}, started {info.get("started")})')


@dataclass(eq=False)  # a lock is one object, not a value
class RunLock:
    """A lock on a work dir or an output file, held for the life of a run.

    Args:
        target (str): The work dir (created when missing) or output file.
        what (str): How the message names ``target`` (``work dir``,
            ``--json``).
        tool (str): The tool that runs (``tools/train.py``), recorded with
            its arguments for the message of a refused run.
        is_dir (bool): ``target`` is a folder (the lock goes inside it) or a
            file (``.NAME.lock`` beside it). Defaults to True.
        force (bool): Take the lock over from a run that still holds it.
        flag (str): The option that sets ``force``, for the message.
    """

    target: str
    what: str
    tool: str
    is_dir: bool = True
    force: bool = False
    flag: str = '--force'
    #: the lock file
    path: str = field(init=False)
    #: what the lock file holds once acquired
    info: Optional[dict] = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.path = lock_file(self.target, self.is_dir)

    def acquire(self) -> 'RunLock':
        """Create the lock file; refuse (:class:`RunLockError`) while
        another run holds it, unless it is stale or ``force``."""
        if self.is_dir and osp.lexists(self.target) and \
                not osp.isdir(self.target):
            raise RunLockError(f'{self.what} {self.target} is a file, not a '
                               'folder; expected the folder the run writes '
                               'into')
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        info = _holder(self.tool)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o644)
            except FileExistsError:
                self._take_over_or_refuse()
                continue
            with os.fdopen(fd, 'w') as f:
                json.dump(info, f, indent=1)
            self.info = info
            atexit.register(self.release)
            return self
        raise RunLockError(f'{self.what} {self.target}: cannot take the lock '
                           f'{self.path}; other runs keep taking it')

    def _take_over_or_refuse(self) -> None:
        """The lock file exists: remove it when stale (or ``force``), else
        refuse naming the run that holds it."""
        other = _read(self.path)
        if other is None:  # released meanwhile
            return
        if not other:  # being written by a run that starts right now?
            time.sleep(0.2)
            other = _read(self.path)
            if other is None or other.get('pid'):
                return
        reason = stale_reason(other)
        if reason is None and not self.force:
            raise RunLockError(
                f'{self.what} {self.target} is in use by another run: '
                f'{describe_holder(other)}; its lock is {self.path}. Two '
                'runs writing into the same place overwrite each other\'s '
                'checkpoints, results, logs and config. Wait for it to '
                f'end, or write elsewhere; if that run is over (e.g. it '
                f'was killed on another machine), add {self.flag} to take '
                f'its lock over (see {DOCS}).')
        taken = f'{self.path}.{uuid.uuid4().hex}.stale'
        try:
            os.rename(self.path, taken)
        except FileNotFoundError:
            return
        if _read(taken) != other:
            # another run took the stale lock meanwhile: give it back
            try:
                os.link(taken, self.path)
            except OSError:
                pass
            os.remove(taken)
            return
        os.remove(taken)
        why = reason or f'{self.flag} was given'
        print(
            f'{self.what} {self.target}: taking over the lock of '
            f'{describe_holder(other)}: {why}',
            file=sys.stderr)

    def release(self) -> None:
        """Remove the lock file, if it is still this run's."""
        if self.info is None:
            return
        current = _read(self.path)
        if current and current.get('token') == self.info['token']:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.info = None

    def __enter__(self) -> 'RunLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def launcher_rank(launcher: str = 'none') -> int:
    """The global rank of this process as its launcher set it (0 without
    one), known before the process group is initialised."""
    name = _RANK_ENV.get(launcher)
    try:
        return int(os.environ.get(name, 0)) if name else 0
    except ValueError:
        return 0


@contextmanager
def hold_run_locks(targets: Sequence[tuple],
                   tool: str,
                   force: bool = False,
                   launcher: str = 'none',
                   flag: str = '--force') -> Iterator[List[RunLock]]:
    """Hold a :class:`RunLock` on each of ``targets`` for the ``with``
    block: ``(path, what, is_dir)`` tuples; None paths and remote ones
    (``s3://``) are skipped. Only the process of global rank 0 locks (the
    other ranks of a distributed run belong to the same run).
    """
    locks: List[RunLock] = []
    try:
        if launcher_rank(launcher) == 0:
            for path, what, is_dir in targets:
                if path is None or '://' in str(path):
                    continue
                locks.append(
                    RunLock(str(path), what, tool, is_dir, force,
                            flag).acquire())
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()
