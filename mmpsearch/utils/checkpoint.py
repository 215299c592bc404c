# Copyright (c) mmpsearch contributors. All rights reserved.
"""Safe checkpoint loading: ``torch.load(weights_only=True)`` plus an
allow-list of exactly the types mmengine checkpoints hold.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
checkpoints (message hub with ``HistoryBuffer``, numpy scalars and arrays in
the meta data, ``Counter`` in ``MultiStepLR``) then fail to load. The fix is
not to switch the safety off but to allow these few types: any other global
in a checkpoint's pickle is refused before anything in it runs.
"""
import collections
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Any, Callable, List, Mapping, Optional

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


def _numpy_dtype_classes() -> List[type]:
    """The concrete ``np.dtype`` subclasses (``np.dtypes.Float64DType``...)
    that numpy >= 1.25 pickles dtypes through."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:  # pragma: no cover - old numpy
        return []
    return [
        getattr(dtypes, name) for name in dir(dtypes)
        if name.endswith('DType') and isinstance(getattr(dtypes, name), type)
    ]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle asked for something outside the allow-list."""


# HistoryBuffer's statistics methods (min, max, current, mean) are functions
# with a dotted qualname, which pickle stores as getattr(HistoryBuffer, name).
# A free ``getattr`` would let a pickle reach any attribute of an allowed
# object (e.g. ndarray.tofile), so only this one lookup is allowed.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise UnsafeCheckpointError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only '
        f'HistoryBuffer.{{{", ".join(_HISTORY_BUFFER_METHODS)}}} is allowed')


#: Everything an mmengine 0.10.7 checkpoint may hold besides tensors and
#: plain containers: the message hub's ``HistoryBuffer`` (and its statistics
#: methods), numpy arrays and scalars (logged values, seeds), ``Counter``
#: (``MultiStepLR.milestones``).
SAFE_GLOBALS: List[Any] = [
    HistoryBuffer,
    (_history_buffer_getattr, 'builtins.getattr'),
    _reconstruct,
    scalar,
    np.ndarray,
    np.dtype,
    collections.Counter,
    collections.defaultdict,
] + _numpy_dtype_classes()


def safe_torch_load(filename: Any,
                    map_location: Optional[Any] = None,
                    extra_safe_globals: Optional[List[Any]] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and mmengine's types allowed.

    Args:
        filename (str or file-like): The checkpoint.
        map_location: As for :func:`torch.load`.
        extra_safe_globals (list, optional): More types to allow, for a
            checkpoint that is known to need them.

    Raises:
        UnsafeCheckpointError: When the pickle references a global outside
            the allow-list. Nothing of the checkpoint is executed.
    """
    allowed = SAFE_GLOBALS + list(extra_safe_globals or [])
    name = filename if isinstance(filename, str) else repr(filename)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if _CORRUPT.search(str(e)):
            raise _corrupt(name, e) from None
        # torch's message says which global it met; keep that line only
        found = re.search(r'(Unsupported global|unsupported GLOBAL)[^\n]*',
                          str(e))
        reason = found.group(0) if found else str(e).strip().splitlines()[-1]
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {name}: its pickle references a '
            'global that is not on mmpsearch\'s allow-list of checkpoint '
            f'types ({reason}), so it was not loaded and none of its code '
            'ran. If you trust the file and know the type, pass it in '
            '`extra_safe_globals`.') from None
    except (EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _corrupt(name, e) from None
    except RuntimeError as e:
        if not _CORRUPT.search(str(e)):
            raise
        raise _corrupt(name, e) from None


def checkpoint_iteration(filename: str) -> Optional[int]:
    """The training iteration ``filename`` was saved at (mmengine's
    ``meta['iter']``), or None when it does not say."""
    ckpt = safe_torch_load(filename, map_location='cpu')
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    done = meta.get('iter') if isinstance(meta, dict) else None
    return int(done) if isinstance(done, (int, np.integer)) and \
        not isinstance(done, bool) else None


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or not a checkpoint at all."""


#: What torch says about a file that is not (all) there.
_CORRUPT = re.compile(r'PytorchStreamReader|zip archive|central directory|'
                      r'invalid load key|unexpected EOF|Ran out of input|'
                      r'Unsupported operand')


def _corrupt(name: str, error: BaseException) -> CorruptCheckpointError:
    size = ''
    if isinstance(name, str) and osp.isfile(name):
        size = f' ({osp.getsize(name)} bytes)'
    first = (str(error).strip().splitlines() or [''])[0]
    reason = f'{type(error).__name__}: {first}' if first else \
        type(error).__name__
    return CorruptCheckpointError(
        f'checkpoint {name}{size} cannot be read: expected a file written '
        'by torch.save (mmengine\'s CheckpointHook / runner.save_checkpoint '
        'write a zip archive), but it is truncated or not a checkpoint '
        f'({reason}). Was a copy or download interrupted? Copy it again, '
        'or use another checkpoint (e.g. an earlier iter_*.pth).')


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """mmengine's local checkpoint loader, made safe (see module docstring)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return safe_torch_load(filename, map_location=map_location)


def safe_load_url(url: str,
                  model_dir: Optional[str] = None,
                  map_location: Optional[Any] = None,
                  progress: bool = True,
                  file_name: Optional[str] = None,
                  **kwargs) -> Any:
    """Download ``url`` once into torch's hub cache and load it with
    :func:`safe_torch_load` (torch's ``load_state_dict_from_url``, which
    mmengine uses for ``torchvision://``, ``open-mmlab://`` and http(s)
    weights, loads without the weights-only restriction)."""
    from urllib.error import URLError
    from urllib.parse import urlparse

    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir,
                      file_name or osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        try:
            download_url_to_file(url, cached, progress=progress)
        except (URLError, OSError) as e:  # offline, DNS, proxy, HTTP 404
            raise WeightsDownloadError(
                f'cannot download the pretrained weights {url} '
                f'({type(e).__name__}: {getattr(e, "reason", e)}); a '
                'config\'s init_cfg (or load_from) names them. Without '
                'internet, provide them locally: download the file on a '
                f'machine that has internet and put it at {cached} (the '
                'torch hub cache, $TORCH_HOME/hub/checkpoints), or point the '
                'config at a local copy, e.g. --cfg-options '
                'model.backbone.init_cfg.checkpoint=/path/to/'
                f'{osp.basename(cached)}') from None
    return safe_torch_load(cached, map_location=map_location)


class WeightsDownloadError(OSError):
    """Pretrained weights named by URL that could not be downloaded."""


def register_safe_checkpoint_loader() -> Callable:
    """Make mmengine's ``CheckpointLoader`` (used by ``load_from``,
    ``--resume``, ``load_checkpoint`` and ``init_cfg=Pretrained``) read local
    files through :func:`load_from_local`."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    # remote weights (http(s)://, torchvision://, open-mmlab://) all go
    # through this module-level name of mmengine's checkpoint module
    mmengine_checkpoint.load_url = safe_load_url
    return load_from_local


# ---------------------------------------------------------------------------
# Does a checkpoint fit the model it is loaded into?
# ---------------------------------------------------------------------------
class CheckpointMismatchError(RuntimeError):
    """A checkpoint leaves weights of the model unloaded, holds weights the
    model does not have, or holds weights of another shape."""


#: Keys a checkpoint may lack without changing what the model computes:
#: BatchNorm's ``num_batches_tracked`` counters (read only with
#: ``momentum=None``; some converted weights leave them out). Everything else
#: the model's ``state_dict()`` holds must be in the checkpoint. Weights the
#: model keeps out of its ``state_dict()`` on purpose (the frozen Stable
#: Diffusion of ``StableDiffusionBackbone``, non-persistent buffers) are not
#: expected in the first place.
OPTIONAL_KEY_SUFFIXES = ('num_batches_tracked', )

#: How many keys of each kind an error message lists.
NUM_KEYS_SHOWN = 5


def checkpoint_state_dict(checkpoint: Any) -> dict:
    """The weights of a loaded checkpoint, as mmengine's Runner loads them:
    ``checkpoint['state_dict']`` (else the checkpoint itself), with a
    leading ``module.`` (a DDP wrapper's) stripped."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise CheckpointMismatchError(
            f'the checkpoint holds a {type(state).__name__}, not a state '
            'dict of weights')
    return {re.sub(r'^module\.', '', str(k)): v for k, v in state.items()}


def compare_state_dict(model: torch.nn.Module, state: dict) -> dict:
    """How ``state`` (from :func:`checkpoint_state_dict`) fits ``model``.

    Returns:
        dict: ``total`` (keys of ``model.state_dict()``), ``loaded`` (those
        ``state`` fills), ``missing``, ``unexpected`` and ``shape`` (present
        in both, shapes differ: mmengine would skip them), sorted lists.
    """
    own = model.state_dict()
    missing = sorted(
        k for k in own
        if k not in state and not k.endswith(OPTIONAL_KEY_SUFFIXES))
    unexpected = sorted(k for k in state if k not in own)
    shape = sorted(
        k for k in own if k in state and hasattr(state[k], 'shape')
        and tuple(state[k].shape) != tuple(own[k].shape))
    loaded = sum(1 for k in own if k in state) - len(shape)
    return dict(total=len(own), loaded=loaded, missing=missing,
                unexpected=unexpected, shape=shape)


class NonFiniteCheckpointError(ValueError):
    """A checkpoint holds NaN or infinite weights."""


def check_state_dict_finite(state: Mapping[str, Any],
                            filename: str,
                            keys: Optional[List[str]] = None) -> None:
    """Refuse a checkpoint with a NaN or infinite weight.

    A model with such a weight computes NaN scores and embeddings: NaN
    falls below every score threshold, so a searcher loaded from it finds
    nothing (an empty gallery index, ``search`` returning ``[]`` or
    ``similarity=nan``) instead of failing.

    Args:
        state (dict): The weights (:func:`checkpoint_state_dict`).
        filename (str): The checkpoint, for the message.
        keys (list[str], optional): Check only these keys (those that load
            into the model); by default all of ``state``.

    Raises:
        NonFiniteCheckpointError: Naming the first bad tensor, how many of
            its values are bad, and how many tensors are bad in all.
    """
    bad = []
    for key in (state if keys is None else keys):
        value = state.get(key)
        if isinstance(value, torch.Tensor) and (
                value.is_floating_point() or value.is_complex()) and \
                not bool(torch.isfinite(value).all()):
            bad.append(key)
    if not bad:
        return
    first = state[bad[0]]
    n_bad = first.numel() - int(torch.isfinite(first).sum())
    nans = int(torch.isnan(first).sum())
    more = f'; {len(bad)} tensors in all: {_first(bad)}' \
        if len(bad) > 1 else ''
    raise NonFiniteCheckpointError(
        f'checkpoint {filename} holds non-finite weights: the first is '
        f'{bad[0]!r} {tuple(first.shape)} with {n_bad} of its '
        f'{first.numel()} values NaN or inf '
        f'({nans} NaN){more}. A model with such weights computes NaN '
        'scores and finds nothing; was it saved after the training '
        'diverged? Use an earlier checkpoint (e.g. an earlier '
        'iter_*.pth).')


def _first(keys: List[str]) -> str:
    more = f' ... ({len(keys) - NUM_KEYS_SHOWN} more)' \
        if len(keys) > NUM_KEYS_SHOWN else ''
    return f'{keys[:NUM_KEYS_SHOWN]}{more}'


def describe_fit(filename: str, model: torch.nn.Module, fit: dict,
                 state: Optional[dict] = None) -> str:
    """One message naming the checkpoint, the counts and the first keys of
    each kind of mismatch."""
    parts = [f'{fit["loaded"]} of the {fit["total"]} weights of the model '
             f'({type(model).__name__}) load']
    if fit['missing']:
        parts.append(f'{len(fit["missing"])} are missing from the '
                     f'checkpoint (they would keep their initial, random '
                     f'values): {_first(fit["missing"])}')
    if fit['unexpected']:
        parts.append(f'{len(fit["unexpected"])} keys of the checkpoint are '
                     f'not in the model: {_first(fit["unexpected"])}')
    if fit['shape']:
        own = model.state_dict()
        shapes = [
            f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
            if state is not None else k for k in fit['shape']
        ]
        parts.append(f'{len(fit["shape"])} have another shape (checkpoint '
                     f'vs model; they would not load): {_first(shapes)}')
    return f'checkpoint {filename} does not fit the model: ' + \
        '; '.join(parts)


def check_checkpoint_fits(model: torch.nn.Module,
                          checkpoint: Any,
                          filename: str,
                          allow_partial: bool = False,
                          hint: str = '',
                          allow_empty: bool = False) -> dict:
    """Refuse (or, with ``allow_partial``, warn about) a checkpoint that
    does not fill every weight of ``model`` or holds others; refuse one
    whose weights that load hold a NaN or inf (also with
    ``allow_partial``).

    Args:
        model: The (unwrapped) model the checkpoint is for.
        checkpoint: The loaded checkpoint (a dict with ``state_dict``, or a
            state dict).
        filename (str): Its file, for the message.
        allow_partial (bool): Log a warning instead of raising.
        hint (str): How the caller opts in to a partial load, appended to
            the error.
        allow_empty (bool): With ``allow_partial``, also accept a
            checkpoint that fills none of the model's weights (an explicit
            opt-in: ``--allow-partial``, ``strict=False``). Refused by
            default: for training's ``load_from`` a warning was not enough,
            nothing loaded and the run trained from scratch.

    Returns:
        dict: See :func:`compare_state_dict`.

    Raises:
        CheckpointMismatchError: Unless ``allow_partial``; with it, when
            nothing loads, unless ``allow_empty``.
        NonFiniteCheckpointError: A weight that loads is NaN or inf.
    """
    from mmengine.logging import print_log

    state = checkpoint_state_dict(checkpoint)
    fit = compare_state_dict(model, state)
    # NaN / inf weights are refused whatever fits: the weights that load
    own = model.state_dict()
    check_state_dict_finite(
        state, filename,
        [k for k in own if k in state and k not in fit['shape']])
    if not (fit['missing'] or fit['unexpected'] or fit['shape']):
        return fit
    message = describe_fit(filename, model, fit, state)
    if not allow_partial:
        raise CheckpointMismatchError(
            message + '. Is it the checkpoint of this config?' +
            (f' {hint}.' if hint else ''))
    if fit['loaded'] == 0 and fit['total'] and not allow_empty:
        raise CheckpointMismatchError(
            message + '. Not one weight of it loads, so the model would '
            'keep its initial weights (training from scratch): is it the '
            'checkpoint of this config? To train from scratch, remove '
            'load_from')
    print_log(
        '!' * 72 + f'\nPARTIAL CHECKPOINT LOAD: {message}\n' + '!' * 72,
        logger='current',
        level=logging.WARNING)
    return fit
