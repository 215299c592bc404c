# Copyright (c) mmpsearch contributors. All rights reserved.
"""Does a checkpoint fit the model it is loaded into? One check for every
loader: the Runner's (``CheckpointFitHook``), ``init_searcher``, the
two-step baseline's ReID weights and ``init_cfg=StrictPretrained``."""
import logging
import re
from typing import Any, List, Mapping, Optional

import torch


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
    return dict(
        total=len(own),
        loaded=loaded,
        missing=missing,
        unexpected=unexpected,
        shape=shape)


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


def describe_fit(filename: str,
                 model: torch.nn.Module,
                 fit: dict,
                 state: Optional[dict] = None) -> str:
    """One message naming the checkpoint, the counts and the first keys of
    each kind of mismatch."""
    parts = [
        f'{fit["loaded"]} of the {fit["total"]} weights of the model '
        f'({type(model).__name__}) load'
    ]
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


def load_fitting_state_dict(module: torch.nn.Module,
                            checkpoint: Any,
                            filename: str,
                            hint: str = '') -> dict:
    """Load ``checkpoint`` (a loaded checkpoint or state dict) into
    ``module`` when it fits exactly (:func:`check_checkpoint_fits`, which
    raises otherwise). Returns the fit."""
    state = checkpoint_state_dict(checkpoint)
    fit = check_checkpoint_fits(module, state, filename, hint=hint)
    # every key is checked: only the optional counters may be absent
    module.load_state_dict(state, strict=False)
    return fit
