# Copyright (c) mmpsearch contributors. All rights reserved.
"""Reading and writing the released MATLAB annotation files of CUHK-SYSU and
PRW.

``scipy.io.loadmat`` (default options, no ``squeeze_me``) returns MATLAB
structs as numpy record arrays of shape (1, N) or (N, 1), cells as object
arrays, strings as ``<U`` arrays of shape (1,) and scalars / vectors as 2-D
arrays; an empty MATLAB value ``[]`` comes back as a (0, 0) array. The helpers
below turn those into plain Python values and raise an error that names the
file, the entry and what was expected whenever the nesting is not the
released one.

The writing helpers at the end (:func:`mat_struct`, :func:`mat_cell`,
:func:`save_mat` ...) build the same nesting for ``scipy.io.savemat``; the
synthetic data writers use them. The checks of the other files (images,
boxes, the data root) and the cache of parsed files are in
``file_checks.py``.
"""
import io
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mmpsearch.utils.paths import require_file


def load_mat(path: str, what: str) -> Dict[str, Any]:
    """``scipy.io.loadmat`` with errors that name the file."""
    from scipy.io import loadmat
    require_file(path, what)
    try:
        return loadmat(path)
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f'{path} is not a MATLAB v5/v7 file ({e}); '
                         f'expected {what} as released') from None
    except Exception as e:  # scipy raises several types on corrupt files
        raise ValueError(f'{path} could not be read as a .mat file '
                         f'({type(e).__name__}: {e}); expected {what}') \
            from None


def get_var(mat: Dict[str, Any], name: str, path: str) -> Any:
    """The variable ``name`` of a loaded .mat file."""
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith('__'))
        raise KeyError(f'{path} has no variable {name!r} (found {found})')
    return mat[name]


def _unwrap(value: Any) -> Any:
    """Strip 1-element object arrays (cells holding one value)."""
    while isinstance(value, np.ndarray) and value.dtype == object \
            and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def struct_array(value: Any, fields: Sequence[str], path: str,
                 what: str) -> np.ndarray:
    """A MATLAB struct array (any 2-D shape, or a cell holding one) as a flat
    record array, after checking it has ``fields``."""
    value = _unwrap(value)
    if not isinstance(value, np.ndarray) or value.dtype.names is None:
        raise ValueError(
            f'{path}: {what} is not a MATLAB struct (got '
            f'{type(value).__name__} {getattr(value, "dtype", "")} of shape '
            f'{getattr(value, "shape", "")}); expected a struct with fields '
            f'{list(fields)}')
    missing = [f for f in fields if f not in value.dtype.names]
    if missing:
        raise KeyError(f'{path}: {what} has no field {missing[0]!r} '
                       f'(fields {list(value.dtype.names)}); expected fields '
                       f'{list(fields)}')
    return value.reshape(-1)


def struct_scalar(value: Any, fields: Sequence[str], path: str,
                  what: str) -> np.void:
    """A 1x1 MATLAB struct (possibly inside a cell) as one record."""
    arr = struct_array(value, fields, path, what)
    if arr.size != 1:
        raise ValueError(f'{path}: {what} should be a 1x1 struct, got '
                         f'{arr.size} elements')
    return arr[0]


def cell_items(value: Any, path: str, what: str) -> List[Any]:
    """The elements of a MATLAB cell array (any 2-D shape), in order."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise ValueError(
            f'{path}: {what} is not a MATLAB cell array (got '
            f'{type(value).__name__} {getattr(value, "dtype", "")}); '
            'expected a cell')
    return list(value.reshape(-1))


def to_str(value: Any, path: str, what: str) -> str:
    """A MATLAB char row (``<U`` array of shape (1,)) as ``str``."""
    value = _unwrap(value)
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind == 'U':
        if value.size == 1:
            return str(value.reshape(-1)[0])
        if value.size == 0:
            return ''
        # a char matrix of several rows is not a file name
    raise ValueError(f'{path}: {what} should be a string, got {value!r}')


def to_xywh(value: Any,
            path: str,
            what: str,
            allow_empty: bool = False) -> Optional[np.ndarray]:
    """A box ``[x, y, w, h]`` as float64 (4,); ``None`` for an empty value
    when ``allow_empty``."""
    value = _unwrap(value)
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f'{path}: {what} should be a numeric [x, y, w, h], '
                         f'got {value!r}') from None
    if arr.size == 0 and allow_empty:
        return None
    if arr.size != 4 or not np.all(np.isfinite(arr)):
        raise ValueError(f'{path}: {what} should be [x, y, w, h] (4 finite '
                         f'numbers), got {arr.tolist()}')
    return arr


# --------------------------------------------------------------------------
# Writing .mat files in the released nesting.
# --------------------------------------------------------------------------
def mat_struct(fields: Sequence[str], rows: Sequence[Sequence]) -> np.ndarray:
    """A 1xN MATLAB struct array (numpy record array of object fields)."""
    arr = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[f][0, i] = v
    return arr


def mat_cell(items: Sequence, column: bool = True) -> np.ndarray:
    """An Nx1 (or 1xN) MATLAB cell array."""
    arr = np.empty((len(items), 1) if column else (1, len(items)), object)
    for i, v in enumerate(items):
        arr.flat[i] = v
    return arr


def mat_num(v: Any) -> np.ndarray:
    """A number or vector as MATLAB stores it: a 2-D float64 array."""
    return np.atleast_2d(np.asarray(v, dtype=np.float64))


#: MATLAB's empty ``[]`` (e.g. the ``idlocate`` of a gallery image that
#: does not hold the query).
MAT_EMPTY = np.zeros((0, 0))

#: Bytes of the text header of a MAT v5 file.
MAT_HEADER_SIZE = 116


def save_mat(path: str, mdict: Dict[str, np.ndarray], header: str) -> None:
    """``scipy.io.savemat`` (MAT v5) into ``path`` (its folder created),
    with the header text replaced by ``header``: scipy's holds the time of
    writing, so equal content would not give equal bytes."""
    from scipy.io import savemat
    text = header.encode('ascii')
    if len(text) > MAT_HEADER_SIZE:
        raise ValueError(f'header {header!r} is longer than the '
                         f'{MAT_HEADER_SIZE} bytes of a MAT v5 header')
    buf = io.BytesIO()
    savemat(buf, mdict, format='5', oned_as='row')
    data = bytearray(buf.getvalue())
    data[:MAT_HEADER_SIZE] = text.ljust(MAT_HEADER_SIZE)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(bytes(data))
