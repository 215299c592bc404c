# Copyright (c) mmpsearch contributors. All rights reserved.
"""Check the keys of ``type=...`` dicts of a config against the signature
of the class they build, before anything is built.

One entry point, :func:`check_config_keys`, for the tools
(``mmpsearch.utils.config.load_config``) and the API (``init_searcher``);
the rest of this module is its inside, which reads mmengine 0.10.7's
Runner (the keys it pops or reads itself) and the ``CFG_KEYS`` attribute of
the classes whose plain sub-dicts (``model.test_cfg``) have fixed keys.

A misspelled argument (``model.backbone.depht=18``,
``default_hooks.checkpoint.intervl=1``) otherwise reaches the constructor as
a raw ``TypeError: __init__() got an unexpected keyword argument`` once the
Runner builds it, or, for a class that forwards ``**kwargs`` to a later call
(``CheckpointHook`` to ``Runner.save_checkpoint``), only at the first save.

The check refuses only what is certainly wrong: a type that cannot be
resolved, a class taking ``**kwargs`` (unless we know where they go) and
dicts built by helpers rather than by the class itself (``norm_cfg``,
``init_cfg``...) are left alone.
"""
import difflib
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

#: Keys mmengine's Config / Registry read themselves, never passed on.
META_KEYS = frozenset(['type', '_scope_', '_delete_'])

#: Keys the Runner pops before building, per top-level config key.
RUNNER_POPPED = {
    'default_hooks': ('priority', ),
    'custom_hooks': ('priority', ),
    'param_scheduler': ('convert_to_iter_based', ),
    'optim_wrapper': ('constructor', 'paramwise_cfg'),
}

#: Sub-dicts built by helper functions (mmcv's build_norm_layer pops
#: ``requires_grad``, mmengine's initialize reads ``layer`` / ``override``,
#: nms dicts are read by mmcv's batched_nms...), not by ``cls(**cfg)``.
SKIP_DICTS = ('norm_cfg', 'act_cfg', 'conv_cfg', 'init_cfg', 'dcn', 'nms',
              'upsample_cfg', 'plugins', 'dataloader_cfg')

#: env_cfg keys mmengine's Runner.setup_env reads (mmengine 0.10.7);
#: ``seed`` etc. live in ``randomness``, not here.
ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')


class ConfigKeyError(KeyError):
    """A config key that the class it is for does not take."""

    def __str__(self) -> str:  # no repr quotes around the message
        return str(self.args[0]) if self.args else ''


def _registry_for(top: str) -> List[Any]:
    """Registries to look a string ``type`` up in, most likely first."""
    from mmpsearch import registry as R
    first = {
        'model': R.MODELS,
        'default_hooks': R.HOOKS,
        'custom_hooks': R.HOOKS,
        'train_dataloader': R.DATASETS,
        'val_dataloader': R.DATASETS,
        'test_dataloader': R.DATASETS,
        'train_cfg': R.LOOPS,
        'val_cfg': R.LOOPS,
        'test_cfg': R.LOOPS,
        'optim_wrapper': R.OPTIM_WRAPPERS,
        'param_scheduler': R.PARAM_SCHEDULERS,
        'val_evaluator': R.METRICS,
        'test_evaluator': R.METRICS,
        'visualizer': R.VISUALIZERS,
        'log_processor': R.LOG_PROCESSORS,
        'model_wrapper_cfg': R.MODEL_WRAPPERS,
    }.get(top)
    rest = [
        R.MODELS, R.TASK_UTILS, R.TRANSFORMS, R.DATASETS, R.DATA_SAMPLERS,
        R.HOOKS, R.METRICS, R.OPTIMIZERS, R.OPTIM_WRAPPERS, R.PARAM_SCHEDULERS,
        R.LOOPS, R.VISUALIZERS, R.VISBACKENDS, R.LOG_PROCESSORS, R.EVALUATOR
    ]
    return ([first] if first is not None else []) + \
        [r for r in rest if r is not first]


def _resolve_type(cfg_type: Any, top: str = '') -> Optional[Callable]:
    """The class (or function) a ``type`` value names, or None when it
    cannot be resolved (then nothing is checked)."""
    if callable(cfg_type):
        return cfg_type
    if not isinstance(cfg_type, str):
        return None
    for registry in _registry_for(top):
        try:
            found = registry.get(cfg_type)
        except Exception:  # noqa: BLE001 - unknown scope etc.: not ours
            found = None
        if found is not None:
            return found
    return None


def _forwarded_kwargs(obj: Callable) -> Optional[Tuple[str, ...]]:
    """For a class whose ``**kwargs`` go to a known call: that call's
    argument names; else None (anything is accepted)."""
    from mmengine.hooks import CheckpointHook
    if isinstance(obj, type) and issubclass(obj, CheckpointHook):
        from mmengine.runner import Runner
        names, _ = _params(Runner.save_checkpoint)
        return tuple(names)
    return None


def _params(obj: Callable) -> Tuple[List[str], bool]:
    """Keyword names ``obj`` accepts and whether it takes ``**kwargs``."""
    if isinstance(obj, type) and obj.__init__ is object.__init__:
        return [], False  # no __init__ of its own: takes no argument
    target = obj.__init__ if isinstance(obj, type) else obj
    sig = inspect.signature(target)
    names, var_kw = [], False
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if not (i == 0 and isinstance(obj, type) and p.name == 'self'):
                names.append(p.name)
    return names, var_kw


def _accepted_keys(obj: Callable) -> Optional[List[str]]:
    """The keys a ``type=obj`` dict may hold, or None for any."""
    try:
        names, var_kw = _params(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if var_kw:
        forwarded = _forwarded_kwargs(obj)
        if forwarded is None:
            return None
        names = names + [n for n in forwarded if n not in names]
    return names


def _name(obj: Any) -> str:
    return getattr(obj, '__name__', str(obj))


def _check_typed_key(path: str, node: Any, key: str, top: str) -> None:
    """Refuse ``key`` (the last part of the dotted ``path``) of the dict
    ``node`` when ``node`` has a ``type`` whose constructor does not take
    it."""
    if key in META_KEYS or key in RUNNER_POPPED.get(top, ()):
        return
    obj = _resolve_type(node.get('type'), top)
    if obj is None:
        return
    names = _accepted_keys(obj)
    if names is None or key in names:
        return
    close = difflib.get_close_matches(key, names, n=1)
    hint = f'; did you mean {close[0]!r}?' if close else \
        f'; it takes {sorted(names)}'
    raise ConfigKeyError(f'{path}: {_name(obj)} takes no argument {key!r}'
                         f'{hint}')


def _check_sub_cfg_key(path: str, owner: Any, sub: str, key: str,
                       top: str) -> None:
    """``model.test_cfg.KEY``: a class that lists the keys of a plain
    (untyped) sub-dict in ``CFG_KEYS`` refuses others."""
    obj = _resolve_type(owner.get('type'), top) if hasattr(owner, 'get') \
        else None
    known = getattr(obj, 'CFG_KEYS', {}).get(sub) if obj is not None \
        else None
    if known is None or key in known or key in META_KEYS:
        return
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f'; did you mean {close[0]!r}?' if close else \
        f'; known: {sorted(known)}'
    raise ConfigKeyError(f'{path}: {_name(obj)}.{sub} has no key {key!r}'
                         f'{hint}')


def _children(node: Any) -> Iterable[Tuple[str, Any]]:
    if hasattr(node, 'items'):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)]
    return []


def _check_tree(node: Any, prefix: str, top: str) -> None:
    """Check every key of every ``type=`` dict under ``node``."""
    if hasattr(node, 'items'):
        if 'type' in node:
            for key in node:
                _check_typed_key(f'{prefix}.{key}', node, str(key), top)
        for key, child in _children(node):
            if hasattr(child, 'items') and 'type' not in child and \
                    'type' in node:
                for sub_key in child:
                    _check_sub_cfg_key(f'{prefix}.{key}.{sub_key}', node, key,
                                       str(sub_key), top)
    for key, child in _children(node):
        if key in SKIP_DICTS:
            continue
        if hasattr(child, 'items') or isinstance(child, (list, tuple)):
            _check_tree(child, f'{prefix}.{key}', top)


def _check_config_types(cfg: Any, tops: Optional[Iterable[str]]) -> None:
    """Check the ``type=`` dicts of the top-level keys ``tops`` of ``cfg``
    (None: all of them)."""
    for top in (tops if tops is not None else list(cfg.keys())):
        if top in cfg:
            _check_tree(cfg[top], top, top)


def _check_env_cfg(cfg: Any) -> None:
    """Refuse keys of ``env_cfg`` mmengine's Runner does not read (a typo
    there is otherwise ignored without a word)."""
    env_cfg = cfg.get('env_cfg') or {}
    for key in env_cfg:
        if key in ENV_CFG_KEYS or key in META_KEYS:
            continue
        close = difflib.get_close_matches(str(key), ENV_CFG_KEYS, n=1)
        hint = f'; did you mean {close[0]!r}?' if close else ''
        raise ConfigKeyError(
            f'env_cfg.{key}: not a key mmengine\'s Runner reads (it would be '
            f'ignored); known: {list(ENV_CFG_KEYS)}{hint}')


def _check_option_keys(cfg: Any, options: Optional[Dict[str, Any]]) -> None:
    """``--cfg-options``: the last key of each option against the class of
    the dict it goes into (also for a plain sub-dict such as
    ``model.test_cfg`` of a class that lists its keys)."""
    for full_key in options or {}:
        parts = full_key.split('.')
        if len(parts) < 2 or any(p in SKIP_DICTS for p in parts[:-1]):
            continue
        chain = [cfg]
        for part in parts[:-1]:
            node = chain[-1]
            if isinstance(node, (list, tuple)) and part.isdigit() and \
                    int(part) < len(node):
                chain.append(node[int(part)])
            elif hasattr(node, 'keys') and part in node:
                chain.append(node[part])
            else:
                break
        else:
            parent, key, top = chain[-1], parts[-1], parts[0]
            if not hasattr(parent, 'keys') or key in parent:
                continue
            if 'type' in parent:
                _check_typed_key(full_key, parent, key, top)
            elif len(chain) >= 3:
                _check_sub_cfg_key(full_key, chain[-2], parts[-2], key, top)


#: Config keys that mmengine's ``Runner.build_dataloader`` builds a torch
#: ``DataLoader`` from; they take no ``type``.
DATALOADER_TOPS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: Keys of a dataloader dict that ``Runner.build_dataloader`` (mmengine
#: 0.10.7) reads itself; the others go to ``DataLoader(**cfg)``.
RUNNER_DATALOADER_KEYS = ('num_batch_per_epoch', 'disable_subprocess_warning')


def _check_dataloader_cfgs(cfg: Any) -> None:
    """Refuse a key of ``train/val/test_dataloader`` that neither mmengine
    nor torch's ``DataLoader`` takes (``batch_sise`` was a raw
    ``DataLoader.__init__() got an unexpected keyword argument`` once the
    Runner built the loader)."""
    from torch.utils.data import DataLoader
    names = _params(DataLoader)[0] + list(RUNNER_DATALOADER_KEYS)
    for top in DATALOADER_TOPS:
        loader = cfg.get(top)
        # None, a built loader, or a type= of its own: not ours to check
        if not hasattr(loader, 'keys') or 'type' in loader:
            continue
        for key in loader:
            if key in names or key in META_KEYS:
                continue
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f'; did you mean {close[0]!r}?' if close else \
                f'; it takes {sorted(names)}'
            raise ConfigKeyError(
                f'{top}.{key}: not an argument of the dataloader (mmengine '
                f'builds a torch DataLoader from {top}){hint}')


#: The top-level keys whose ``type=`` dicts a whole config's check reads
#: (hooks: a typo there would otherwise surface only at the first save).
#: The other dicts are checked through ``--cfg-options`` and by their
#: constructors when the Runner builds them.
WHOLE_TYPED_TOPS = ('default_hooks', 'custom_hooks')


def check_config_keys(
        cfg: Any,
        options: Optional[Dict[str, Any]] = None,
        *,
        whole: bool = False,
        typed_tops: Optional[Iterable[str]] = WHOLE_TYPED_TOPS) -> None:
    """The config-key check: refuse keys that the class (or mmengine's
    Runner, or torch's ``DataLoader``) they are for does not take, with a
    :class:`ConfigKeyError` naming the key and the closest right one.

    The one entry point of this module: ``load_config`` calls it with the
    ``--cfg-options`` before merging them and with ``whole=True`` after;
    ``init_searcher`` with its ``cfg_options``.

    Args:
        cfg: The config (a ``Config`` or nested dicts). With ``options``, as
            it is before they are merged into it.
        options (dict, optional): Dotted keys (``--cfg-options``) about to
            be merged into ``cfg``: the last key of each option that is new
            is checked against the class of the dict it goes into, or, for a
            plain sub-dict such as ``model.test_cfg``, against the
            ``CFG_KEYS`` of the class that owns it.
        whole (bool): Also check ``cfg`` itself as mmengine's Runner will
            read it: the keys of ``env_cfg`` (a typo there is ignored without
            a word), of the ``type=`` dicts under ``typed_tops`` and of the
            dataloader dicts.
        typed_tops (Iterable[str], optional): For ``whole``: the top-level
            keys whose ``type=`` dicts are checked; None: every one (a test
            of the shipped configs).
    """
    _check_option_keys(cfg, options)
    if whole:
        _check_env_cfg(cfg)
        _check_config_types(cfg, typed_tops)
        _check_dataloader_cfgs(cfg)
