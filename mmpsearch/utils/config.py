# Copyright (c) mmpsearch contributors. All rights reserved.
"""Config loading for the tools, with errors that name the wrong key."""
import difflib
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional

from mmengine.config import Config

from .cfg_signature import check_config_keys

# Keys mmengine's Runner reads that a config may legitimately leave out, so
# that ``--cfg-options`` may add them.
RUNNER_KEYS = frozenset([
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name', 'cfg',
    'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'runner_type',
    'vis_backends'
])

TRAIN_KEYS = ('model', 'train_dataloader', 'train_cfg', 'optim_wrapper')


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def check_cfg_options(cfg: Config,
                      options: Optional[Dict[str, Any]],
                      what: str = '--cfg-options') -> None:
    """Refuse ``--cfg-options`` keys whose path does not exist in ``cfg``
    (``what`` names the option in messages, e.g. ``init_searcher``'s).

    Only the last component of a dotted key may be new (a new argument of an
    existing dict); a new top-level key must be one the Runner reads. This
    catches typos such as ``train_cfg.max_iter`` -> ``trian_cfg``.

    A top-level variable of a config file that the Runner does not read
    (``teacher_embeds = ...``, ``num_proposals = 300``, ``train_pipeline``)
    is refused too: its value was copied into the fields that use it when
    the file was read, so overriding it afterwards would change nothing.
    The error names those fields.
    """
    for full_key in options or {}:
        parts = full_key.split('.')
        top = parts[0]
        if top in cfg and top not in RUNNER_KEYS:
            value = cfg[top]
            # Fields that hold the same value under the same name: where
            # the variable most likely went (a value match alone, e.g. 32,
            # would name unrelated fields).
            uses = [] if isinstance(value, (dict, list, tuple)) else [
                p for p in _paths_with_value(cfg, value, skip=top)
                if p.rsplit('.', 1)[-1] == top
            ]
            where = (f'; it was copied into {", ".join(uses[:6])}'
                     f'{" ..." if len(uses) > 6 else ""}: override those'
                     if uses else '; override the Runner fields that use '
                     'it (e.g. train_dataloader.dataset.pipeline... for '
                     'train_pipeline)')
            raise KeyError(
                f'{what} {full_key}: {top!r} is a variable of the '
                'config file, already used when the file was read, so '
                f'overriding it would change nothing{where}')
        node: Any = cfg
        for depth, part in enumerate(parts):
            is_last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise KeyError(
                        f'{what} {full_key}: {".".join(parts[:depth])}'
                        f' is a list of {len(node)} items; {part!r} is not '
                        'an index of it')
                node = node[int(part)]
                continue
            if not hasattr(node, 'keys'):
                raise KeyError(f'{what} {full_key}: {".".join(parts[:depth])} '
                               f'is a {type(node).__name__}, not a dict')
            if part not in node:
                if depth == 0 and part in RUNNER_KEYS:
                    break
                if is_last and depth > 0:
                    break
                raise KeyError(f'{what} {full_key}: the config has no key '
                               f'{".".join(parts[:depth + 1])!r}'
                               f'{_suggest(part, node.keys())}')
            node = node[part]


def _paths_with_value(node: Any,
                      value: Any,
                      skip: str = '',
                      prefix: str = '') -> List[str]:
    """Dotted paths (as ``--cfg-options`` spells them) of the fields of
    ``node`` equal to ``value``."""
    found: List[str] = []
    if hasattr(node, 'items'):
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return found
    for key, child in items:
        path = f'{prefix}{key}'
        if path == skip:
            continue
        if isinstance(child, (dict, list, tuple)) or hasattr(child, 'items'):
            found += _paths_with_value(child, value, skip, path + '.')
        elif type(child) is type(value) and child == value:
            found.append(path)
    return found


def load_config(path: str,
                cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read a config file and merge ``--cfg-options`` into it, with clear
    errors for a missing file, a key that is not in the config, an argument
    the class of its dict does not take (``--cfg-options`` keys, hooks) and
    an ``env_cfg`` key mmengine does not read."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        # a misspelled last key (model.backbone.depht) against the class
        check_config_keys(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    # typos mmengine would ignore (env_cfg) or meet only at the first
    # checkpoint save / hook build / dataloader build
    # (train_dataloader.batch_sise: a raw TypeError)
    check_config_keys(cfg, whole=True)
    return cfg


def check_config(cfg: Config, required: Iterable[str] = TRAIN_KEYS) -> None:
    """Check that ``cfg`` has the keys a tool needs (training by default)."""
    for key in required:
        if cfg.get(key) is None:
            raise KeyError(f'config {cfg.filename} has no {key!r}'
                           f'{_suggest(key, cfg.keys())}; this tool needs '
                           f'{", ".join(required)}')
