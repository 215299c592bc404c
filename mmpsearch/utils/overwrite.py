# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the tools refuse to overwrite (``docs/en/refusals.md``).

Every tool that writes into a folder or file the user names checks first,
before any work, and stops with a message that names the path and the ways
on; ``--force`` writes over it anyway.

These are library functions: they raise :class:`FileExistsError` (a path
in the way) or :class:`ResumeError` (nothing sound to resume from); the
tools turn them into an exit with the message
(:func:`mmpsearch.utils.cli.exit_on_refusal`).
"""
import glob
import os
import os.path as osp
from typing import Dict, List, Optional

DOCS = 'docs/en/refusals.md'


class ResumeError(ValueError):
    """``--resume`` cannot go on as asked: ``last_checkpoint`` is missing,
    empty or stale, or the checkpoint is past ``max_iters``."""


def _is_remote(path: str) -> bool:
    return '://' in str(path)


def _names(entries: List[str], most: int = 4) -> str:
    shown = ', '.join(entries[:most])
    return shown + (f' and {len(entries) - most} more'
                    if len(entries) > most else '')


def refuse_nonempty_dir(path: str,
                        what: str,
                        force: bool = False,
                        flag: str = '--force') -> None:
    """Refuse (:class:`FileExistsError`) unless ``path`` is absent, an
    empty folder, or ``force``.

    ``what`` names the argument in the message (``--out``, ``OUT``). A file
    at ``path`` is always refused: nothing can be written into it.
    """
    if osp.lexists(path) and not osp.isdir(path):
        raise FileExistsError(f'{what} {path} is a file, not a folder; '
                              'give a new or empty folder')
    if force or not osp.isdir(path):
        return
    entries = sorted(os.listdir(path))
    if entries:
        raise FileExistsError(
            f'{what} {path} is not empty ({len(entries)} entries: '
            f'{_names(entries)}); refusing to write into it, files of the '
            f'same names would be overwritten. Give a new or empty folder, '
            f'or add {flag} to write into this one anyway (see {DOCS}).')


def refuse_existing_file(path: str,
                         what: str,
                         force: bool = False,
                         flag: Optional[str] = '--force') -> None:
    """Refuse (:class:`FileExistsError`) unless nothing is at ``path`` or
    ``force``; a folder at ``path`` is always refused.

    ``flag`` names the option that sets ``force`` in the message; None for
    an output that is never overwritten (the message offers no flag).
    """
    if osp.isdir(path):
        raise FileExistsError(f'{what} {path} is a folder, not a file')
    if force or not osp.lexists(path):
        return
    if not flag:
        raise FileExistsError(
            f'{what} {path} already exists, and it is never overwritten: '
            f'name another file (see {DOCS}).')
    raise FileExistsError(
        f'{what} {path} already exists; refusing to overwrite it. Name '
        f'another file, or add {flag} to overwrite it (see {DOCS}).')


def work_dir_checkpoints(work_dir: str) -> List[str]:
    """The checkpoints of an earlier run in ``work_dir``: its top-level
    ``*.pth`` files and ``last_checkpoint`` (what training writes)."""
    if _is_remote(work_dir) or not osp.isdir(work_dir):
        return []
    found = sorted(
        osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))
    if osp.lexists(osp.join(work_dir, 'last_checkpoint')):
        found.append('last_checkpoint')
    return found


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """What ``tools/train.py --resume`` (no path) resumes from.

    The checkpoint named in ``WORK_DIR/last_checkpoint``, or None when there
    is no ``last_checkpoint`` and no checkpoint (nothing to resume: a first
    run). Raises :class:`ResumeError` naming the file when
    ``last_checkpoint`` is empty or names a file that does not exist, or
    when it is missing beside ``*.pth`` files (training from scratch would
    overwrite them).
    """
    if _is_remote(work_dir):
        return None  # mmengine reads it through its file backend
    last = osp.join(work_dir, 'last_checkpoint')
    pths = [p for p in work_dir_checkpoints(work_dir) if p.endswith('.pth')]
    latest = osp.join(work_dir, max(
        pths, key=lambda p: osp.getmtime(osp.join(work_dir, p)))) \
        if pths else None
    if not osp.lexists(last):
        if not pths:
            return None
        raise ResumeError(
            f'--resume: {last} does not exist, but {work_dir} holds '
            f'{_names(pths)}: expected last_checkpoint to name the latest '
            'of them (training writes it at every save). Resuming '
            'without it would start from scratch and overwrite them; '
            f'pass the checkpoint to resume from, e.g. --resume {latest}')
    try:
        with open(last) as f:
            content = f.read().strip()
    except OSError as e:
        raise ResumeError(f'--resume: cannot read {last}: {e}') from None
    hint = (f' (the newest in the work dir: --resume {latest})'
            if pths else '')
    if not content:
        raise ResumeError(
            f'--resume: {last} is empty; expected one line, the path of '
            'the latest checkpoint (training writes it at every save). '
            f'Pass the checkpoint to resume from: --resume CHECKPOINT{hint}')
    if _is_remote(content) or osp.isfile(content):
        return content
    moved = osp.join(work_dir, osp.basename(content))
    if osp.isfile(moved):
        way = (f'; the work dir was moved or renamed? {moved} exists: '
               f'--resume {moved}')
    else:
        way = '. Pass the checkpoint to resume from: --resume CHECKPOINT' + \
            hint
    state = 'a folder' if osp.isdir(content) else 'which does not exist'
    raise ResumeError(f'--resume: {last} names {content}, {state}; expected '
                      f'the path of a checkpoint file{way}')


def check_train_work_dir(work_dir: str,
                         resume: Optional[str],
                         force: bool = False) -> Optional[str]:
    """Decide whether ``tools/train.py`` may train into ``work_dir``.

    Args:
        work_dir (str): The run's work dir.
        resume (str, optional): None for a fresh run, ``'auto'`` for
            ``--resume`` without a path, else the checkpoint resumed from.
        force (bool): ``--force``: a fresh run may overwrite an earlier
            one's checkpoints.

    Returns:
        str or None: With ``resume='auto'``, the checkpoint to resume from
        (None: nothing to resume yet); else None.

    Raises:
        FileExistsError: ``work_dir`` is a file, or holds checkpoints of
            an earlier run (a fresh run without ``force``).
        ResumeError: See :func:`find_resume_checkpoint`.
    """
    if osp.lexists(work_dir) and not osp.isdir(work_dir):
        raise FileExistsError(
            f'work dir {work_dir} is a file, not a folder; the work dir '
            'is where logs, checkpoints and the config are written')
    if resume == 'auto':
        return find_resume_checkpoint(work_dir)
    if resume is not None or force:
        return None
    found = work_dir_checkpoints(work_dir)
    if found:
        raise FileExistsError(
            f'work dir {work_dir} already holds checkpoints of an earlier '
            f'run ({_names(found)}); training again would overwrite them, '
            'last_checkpoint and the saved config. Either\n'
            '  continue that run:  --resume (from its last_checkpoint) or '
            '--resume CHECKPOINT\n'
            '  train elsewhere:    --work-dir NEW_DIR\n'
            '  overwrite it:       --force\n'
            f'(see {DOCS})')
    return None


def resume_is_complete(checkpoint: str, train_cfg: Optional[dict]) -> bool:
    """Whether resuming from ``checkpoint`` leaves nothing to train.

    mmengine resumes at the checkpoint's iteration and trains while it is
    below ``train_cfg.max_iters``: past it, the run trained nothing, still
    rewrote the config in the work dir, and exited 0. Read before the
    Runner is built.

    Returns:
        bool: True when the checkpoint is of iteration ``max_iters`` (the
        run is complete). False when there is something to train, or
        nothing to compare (no ``max_iters``, a remote file, no
        ``meta['iter']``).

    Raises:
        ResumeError: The checkpoint is past ``max_iters``.
    """
    max_iters = (train_cfg or {}).get('max_iters')
    if max_iters is None or _is_remote(checkpoint) or \
            not osp.isfile(checkpoint):
        return False
    from .safe_load import checkpoint_iteration  # torch: only when needed
    done = checkpoint_iteration(checkpoint)
    if done is None or done < max_iters:
        return False
    if done == max_iters:
        return True
    raise ResumeError(
        f'--resume {checkpoint}: the checkpoint is of iteration {done}, '
        f'past train_cfg.max_iters = {max_iters}; resuming would train '
        'nothing (and rewrite the config in the work dir). To train on, '
        f'raise it: --cfg-options train_cfg.max_iters=N with N > {done}; '
        'to evaluate the checkpoint, use tools/test.py (see '
        f'{DOCS}).')


def refuse_same_outputs(outputs: Dict[str, Optional[str]]) -> None:
    """Refuse (:class:`FileExistsError`) two output options that name the
    same file (the second write would replace the first, with no refusal:
    neither existed yet).

    Args:
        outputs (dict): Option name -> path (None: not given).
    """
    seen: Dict[str, str] = {}
    for what, path in outputs.items():
        if not path or _is_remote(path):
            continue
        key = osp.realpath(path)
        if key in seen:
            raise FileExistsError(
                f'{seen[key]} and {what} name the same file {path}; the '
                'second would overwrite the first. Give each its own file.')
        seen[key] = what
