# Copyright (c) mmpsearch contributors. All rights reserved.
"""Safe checkpoint loading: ``torch.load(weights_only=True)`` plus an
allow-list of exactly the types mmengine checkpoints hold, and
:func:`safe_checkpoint_loading`, the explicit call with which the tools and
``init_searcher`` make mmengine's own loaders use it.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
checkpoints (message hub with ``HistoryBuffer``, numpy scalars and arrays in
the meta data, ``Counter`` in ``MultiStepLR``) then fail to load. The fix is
not to switch the safety off but to allow these few types: any other global
in a checkpoint's pickle is refused before anything in it runs.
"""
import collections
import os
import os.path as osp
import pickle
import re
import zipfile
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

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
    cached = osp.join(model_dir, file_name or osp.basename(urlparse(url).path))
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


@contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """Within this block, mmengine's ``CheckpointLoader`` (used by
    ``load_from``, ``--resume``, ``load_checkpoint`` and
    ``init_cfg=Pretrained``) reads local files through
    :func:`load_from_local` and remote weights (http(s)://, torchvision://,
    open-mmlab://) through :func:`safe_load_url`; on leaving it, mmengine's
    loaders are restored.

    An explicit call of the entry points (``tools/train.py``,
    ``tools/test.py``, ``init_searcher``...), never a side effect of
    ``import mmpsearch`` or ``register_all_modules()``: another library in
    the same process keeps mmengine's loaders.
    """
    # register_scheme writes into the table, then replaces it by a sorted
    # copy: keep the table and its entries
    schemes = CheckpointLoader._schemes
    entries = list(schemes.items())
    load_url = mmengine_checkpoint.load_url
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    # remote weights all go through this module-level name of mmengine's
    # checkpoint module
    mmengine_checkpoint.load_url = safe_load_url
    try:
        yield
    finally:
        schemes.clear()
        schemes.update(entries)
        CheckpointLoader._schemes = schemes
        mmengine_checkpoint.load_url = load_url
