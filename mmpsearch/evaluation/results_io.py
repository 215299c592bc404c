# Copyright (c) mmpsearch contributors. All rights reserved.
"""Load, validate and save person-search results files.

The results format (written by ``tools/test.py --out`` through
``PersonSearchMetric(results_file=...)`` and scored offline by
``tools/analysis_tools/eval_search.py``)::

    {'gallery': {img_id: {'bboxes': float32 (N, 4) x1y1x2y2,
                          'scores': float32 (N,),
                          'embeddings': float32 (N, D)}},
     'query': [{'img_id': str, 'bbox': float32 (4,),
                'embedding': float32 (D,)}, ...]}     # query-split order

Files are pickles, but never read with ``pickle.load``: a restricted
unpickler accepts only what the format holds (dicts, lists, str, numbers
and numpy arrays) and refuses any other global before it is called.
"""
import io
import os
import os.path as osp
import pickle
from typing import Any, Dict, Optional, Sequence

import numpy as np

from mmpsearch.datasets.protocol import SearchProtocol
from mmpsearch.utils.detections import (check_detection_rows,
                                        check_query_embedding)
from mmpsearch.utils.paths import require_file
from .functional.gallery import PlainKeyError

GALLERY_KEYS = ('bboxes', 'scores', 'embeddings')
QUERY_KEYS = ('img_id', 'bbox', 'embedding')


class UnsafeResultsFileError(pickle.UnpicklingError):
    """A results file asked to load something else than numpy arrays."""


def _numpy_array_globals() -> Dict[tuple, Any]:
    """The globals numpy's array pickles refer to, under the module names of
    numpy 1.x (``numpy.core``) and 2.x (``numpy._core``), resolved from the
    installed numpy without importing the deprecated ``numpy.core``."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {}
    for mod in ('numpy.core', 'numpy._core'):
        allowed[(f'{mod}.multiarray', '_reconstruct')] = \
            multiarray._reconstruct
        allowed[(f'{mod}.numeric', '_frombuffer')] = numeric._frombuffer
    allowed[('numpy', 'ndarray')] = np.ndarray
    allowed[('numpy', 'dtype')] = np.dtype
    return allowed


class _ResultsUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction globals."""

    _allowed = _numpy_array_globals()

    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafeResultsFileError(
                f'{self._source}: refusing to load global {module}.{name}; '
                'a results file may only hold dicts, lists, str and numpy '
                'arrays (is it a results file of mmpsearch?)')
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeResultsFileError(
            f'{self._source}: persistent ids are not allowed in a results '
            'file')


def safe_load_pickle(path: str) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays."""
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return _ResultsUnpickler(io.BytesIO(data), path).load()
    except UnsafeResultsFileError:
        raise
    except Exception as e:  # truncated / not a pickle
        raise ValueError(f'{path}: not a readable results pickle '
                         f'({type(e).__name__}: {e})') from e


def _require_keys(item: Any, keys: Sequence[str], where: str) -> None:
    """A ``TypeError`` unless ``item`` is a dict, a ``KeyError`` naming the
    first of ``keys`` it lacks."""
    if not isinstance(item, dict):
        raise TypeError(f'{where}: expected a dict with keys {keys}, got '
                        f'{type(item).__name__}')
    for key in keys:
        if key not in item:
            raise PlainKeyError(f'{where}: missing key {key!r}')


def _check_array(value: Any, where: str, shape: tuple, what: str) -> None:
    """``value`` must be a float32 ndarray of ``shape`` (None = any)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f'{where}: expected a numpy float32 array {what}, '
                        f'got {type(value).__name__}')
    if value.dtype != np.float32:
        raise TypeError(f'{where}: expected dtype float32 {what}, got '
                        f'{value.dtype}')
    ok = value.ndim == len(shape) and all(s is None or s == v
                                          for s, v in zip(shape, value.shape))
    if not ok:
        raise ValueError(f'{where}: expected shape {what}, got '
                         f'{tuple(value.shape)}')


def validate_search_results(results: Any,
                            protocol: Optional[SearchProtocol] = None,
                            source: str = 'results') -> None:
    """Check ``results`` against the results format and, when given, the
    protocol; raise a clear error naming the image / field otherwise.

    Checked: the keys, types, dtypes (float32) and shapes of every entry;
    one embedding width D everywhere; finite numbers. With ``protocol``:
    exactly the protocol's gallery images (none missing, none extra), as
    many queries as the protocol, in its order (image names and boxes within
    one pixel).

    Args:
        results (Any): The loaded object.
        protocol (SearchProtocol, optional): The protocol it is scored with.
        source (str): Name of the file, for messages.
    """
    if not isinstance(results, dict):
        raise TypeError(f'{source}: expected a dict with keys "gallery" and '
                        f'"query", got {type(results).__name__}')
    for key in ('gallery', 'query'):
        if key not in results:
            raise PlainKeyError(
                f'{source}: missing key {key!r} (expected keys '
                '"gallery" and "query")')
    gallery, queries = results['gallery'], results['query']
    if not isinstance(gallery, dict):
        raise TypeError(f'{source}: "gallery" must be a dict img_id -> '
                        f'detections, got {type(gallery).__name__}')
    if not isinstance(queries, list):
        raise TypeError(f'{source}: "query" must be a list, got '
                        f'{type(queries).__name__}')
    dim = None
    for qi, q in enumerate(queries):
        where = f'{source}: query {qi}'
        _require_keys(q, QUERY_KEYS, where)
        if not isinstance(q['img_id'], str):
            raise TypeError(f'{where}: "img_id" must be a str')
        _check_array(q['bbox'], f'{where} "bbox"', (4, ), '(4,)')
        _check_array(q['embedding'], f'{where} "embedding"', (None, ), '(D,)')
        if dim is None:
            dim = q['embedding'].shape[0]
        elif q['embedding'].shape[0] != dim:
            raise ValueError(f'{where}: embedding of width '
                             f'{q["embedding"].shape[0]}, expected {dim} as '
                             'in query 0')
        if not np.isfinite(q['bbox']).all():
            raise ValueError(f'{where}: non-finite bbox')
        # width 0, NaN, all zeros: as search() refuses a query embedding
        check_query_embedding(q['embedding'], where)
    for img_id, item in gallery.items():
        where = f'{source}: gallery image {img_id!r}'
        if not isinstance(img_id, str):
            raise TypeError(f'{where}: image names must be str')
        _require_keys(item, GALLERY_KEYS, where)
        _check_array(item['scores'], f'{where} "scores"', (None, ), '(N,)')
        n = item['scores'].shape[0]
        _check_array(item['bboxes'], f'{where} "bboxes"', (n, 4), f'({n}, 4)')
        _check_array(item['embeddings'], f'{where} "embeddings"', (n, dim),
                     f'({n}, {"D" if dim is None else dim})')
        if dim is None:
            dim = item['embeddings'].shape[1]
        # the checks GalleryIndex applies: finite, x1 <= x2, boxes near
        # an image, scores in [0, 1], D >= 1
        check_detection_rows(item['bboxes'], item['scores'],
                             item['embeddings'], where)
    if protocol is None:
        return
    missing = [i for i in protocol.gallery if i not in gallery]
    if missing:
        raise PlainKeyError(
            f'{source}: lacks {len(missing)} gallery image(s) of the '
            f'{protocol.name} protocol, e.g. {missing[:5]}; every gallery '
            'image needs an entry (with empty arrays when nothing was '
            'detected)')
    extra = [i for i in gallery if i not in protocol.gallery]
    if extra:
        raise PlainKeyError(
            f'{source}: {len(extra)} gallery image(s) are not in '
            f'the {protocol.name} protocol, e.g. {extra[:5]} '
            '(wrong dataset?)')
    if len(queries) != len(protocol.queries):
        raise ValueError(f'{source}: {len(queries)} queries, but the '
                         f'{protocol.name} protocol has '
                         f'{len(protocol.queries)}')
    for qi, (q, pq) in enumerate(zip(queries, protocol.queries)):
        if q['img_id'] != pq.img_id:
            raise ValueError(f'{source}: query {qi} is in image '
                             f'{q["img_id"]!r}, but the protocol\'s query '
                             f'{qi} is in {pq.img_id!r} (queries must be in '
                             'query-split order)')
        if np.abs(q['bbox'].astype(np.float64) -
                  np.asarray(pq.box, np.float64)).max() > 1.0:
            raise ValueError(f'{source}: query {qi} ({pq.img_id}) has box '
                             f'{q["bbox"].tolist()}, but the protocol\'s box '
                             f'is {np.asarray(pq.box).tolist()}')


def require_results_file(path: str) -> None:
    """A ``FileNotFoundError`` naming ``path`` unless it is a file (a
    folder is named as one, not as missing)."""
    require_file(path, 'a results file: the .pkl written by tools/test.py '
                 '--out')


def load_search_results(path: str,
                        protocol: Optional[SearchProtocol] = None) -> dict:
    """Load a results file safely and validate it.

    Args:
        path (str): The ``.pkl`` file.
        protocol (SearchProtocol, optional): Also check it against this.

    Returns:
        dict: The results.
    """
    require_results_file(path)
    results = safe_load_pickle(path)
    validate_search_results(results, protocol, source=path)
    return results


def save_search_results(results: dict,
                        path: str,
                        overwrite: bool = False) -> None:
    """Validate and write a results file.

    Args:
        results (dict): In the results format.
        path (str): Destination.
        overwrite (bool): Replace an existing file; otherwise an existing
            file is an error and is left untouched.
    """
    validate_search_results(results, source=path)
    if not overwrite and osp.exists(path):
        raise FileExistsError(f'results file {path} already exists; pass '
                              'overwrite=True or choose another name')
    dirname = osp.dirname(osp.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    mode = 'wb' if overwrite else 'xb'
    try:
        with open(path, mode) as f:
            pickle.dump(results, f, protocol=4)
    except FileExistsError:
        raise FileExistsError(f'results file {path} already exists; pass '
                              'overwrite=True or choose another name')
    except BaseException:
        if osp.exists(path):
            os.remove(path)
        raise
