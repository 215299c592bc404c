# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the command-line tools (``tools/``, ``demo/``) share.

The library refuses with exceptions (:mod:`mmpsearch.utils.overwrite`:
:class:`FileExistsError`, :class:`~mmpsearch.utils.overwrite.ResumeError`,
:class:`~mmpsearch.utils.run_lock.RunLockError`);
a tool turns a refusal into an exit with its message and no traceback
(``docs/en/refusals.md``). Also the ``--json`` output of the analysis
tools and the config / runner set-up of ``tools/train.py`` and
``tools/test.py``. Imported after a tool has parsed its arguments.
"""
import json
import os
import os.path as osp
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Type

from .overwrite import ResumeError, refuse_existing_file
from .run_lock import RunLockError

#: What the shared checks raise when they refuse.
REFUSALS = (FileExistsError, ResumeError, RunLockError)


@contextmanager
def exit_on_refusal(*also: Type[Exception]) -> Iterator[None]:
    """Exit (status 1) with the message of a refusal raised inside: a
    :data:`REFUSALS` error or one of ``also`` (e.g. ``FileNotFoundError``
    of a missing input)."""
    try:
        yield
    except REFUSALS + also as e:
        raise SystemExit(str(e)) from None


def refuse_existing_json(args: Any) -> None:
    """Before any work: refuse (:class:`FileExistsError`) an existing
    ``args.json`` unless ``args.force`` (the options of
    :func:`~mmpsearch.utils.cli_args.add_json_args`), so that an earlier
    file is not overwritten; nothing without ``--json``."""
    if args.json:
        refuse_existing_file(args.json, '--json', args.force)


def write_json(data: Any,
               path: str,
               force: bool = False,
               said: str = 'written to',
               makedirs: bool = False) -> None:
    """Write a tool's ``--json`` file and say so (``{said} {path}``).

    A new file unless ``force`` (the tool refused an existing one before
    any work, :func:`~mmpsearch.utils.overwrite.refuse_existing_file`);
    with ``makedirs`` its folder is made first.
    """
    if makedirs:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w' if force else 'x') as f:
        json.dump(data, f, indent=2)
    print(f'{said} {path}')


def load_runner_config(args):
    """The config of ``tools/train.py`` / ``tools/test.py``.

    ``LOCAL_RANK`` from ``--local-rank`` unless the launcher set it; the
    modules registered; ``args.config`` loaded with ``--cfg-options`` (a
    wrong key: its message, no traceback); ``--launcher``; the work dir
    from ``--work-dir``, else the config's, else
    ``./work_dirs/CONFIG_NAME``.
    """
    from .cfg_signature import ConfigKeyError
    from .config import load_config
    from .setup_env import register_all_modules
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    register_all_modules(init_default_scope=False)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigKeyError as e:  # a typo: the message, not a traceback
        raise SystemExit(f'{args.config}: {e.args[0]}') from None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def checkpoint_file_problem(path: str,
                            missing: str = 'does not exist',
                            remote: bool = True) -> Optional[str]:
    """Why ``path`` is no checkpoint file (``'is a folder, not a checkpoint
    file'`` or ``missing``); None for a file, or a remote path (``'://'``)
    where ``remote``."""
    if (remote and '://' in str(path)) or osp.isfile(path):
        return None
    return 'is a folder, not a checkpoint file' if osp.isdir(path) \
        else missing


def build_runner(cfg):
    """mmengine's Runner of ``cfg``, or its ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
