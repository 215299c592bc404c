# Copyright (c) mmpsearch contributors. All rights reserved.
"""Reading the released MATLAB annotation files of CUHK-SYSU and PRW.

``scipy.io.loadmat`` (default options, no ``squeeze_me``) returns MATLAB
structs as numpy record arrays of shape (1, N) or (N, 1), cells as object
arrays, strings as ``<U`` arrays of shape (1,) and scalars / vectors as 2-D
arrays; an empty MATLAB value ``[]`` comes back as a (0, 0) array. The helpers
below turn those into plain Python values and raise an error that names the
file, the entry and what was expected whenever the nesting is not the
released one. Parsed results are cached in-process, keyed by the file's path,
size and modification time, so that the gallery and query splits and the
metric parse a (large) annotation file only once.
"""
import os
import os.path as osp
import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, \
    Tuple

import numpy as np

SPLITS = ('train', 'gallery', 'query')

_CACHE: Dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()


def file_key(path: str) -> Tuple[str, int, int]:
    """(real path, size, mtime) of an existing file: a cache key that changes
    when the file is rewritten."""
    st = os.stat(path)
    return osp.realpath(path), st.st_size, st.st_mtime_ns


def require_file(path: str, what: str) -> None:
    """Raise ``FileNotFoundError`` naming ``path`` and what it should hold."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist; expected {what}')


def cached(kind: str, path: str, parse: Callable[[], Any]) -> Any:
    """``parse()`` once per (kind, file version); later calls reuse it.

    Callers must treat the returned object as read-only.
    """
    key = (kind, ) + file_key(path)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    value = parse()
    with _CACHE_LOCK:
        _CACHE[key] = value
    return value


def clear_cache() -> None:
    """Forget every parsed file and image size (e.g. between tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()


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


def to_xywh(value: Any, path: str, what: str,
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


def image_size(img_path: str) -> Tuple[int, int]:
    """(width, height) of an image from its header only.

    PIL reads the header on ``open`` and decodes pixels only on ``load``, so
    this is cheap; sizes are cached per file version because the gallery and
    query splits share images.
    """
    from PIL import Image

    def read() -> Tuple[int, int]:
        try:
            with Image.open(img_path) as img:
                return tuple(img.size)
        except Exception as e:
            raise ValueError(f'{img_path} could not be read as an image '
                             f'({type(e).__name__}: {e})') from None

    require_file(img_path, 'an image file')
    return cached('image_size', img_path, read)


def check_box_in_image(box: Sequence[float], width: int, height: int,
                       img_path: str, source: str) -> None:
    """Raise when a box ``[x1, y1, x2, y2]`` lies outside its image.

    "Outside" means that less than half of the box area is inside the image
    (or the box is empty): boxes that poke a few pixels past the border, as
    hand-drawn boxes of people at the frame edge do, are kept as released;
    boxes read with the wrong convention or for another (e.g. resized) image
    are caught.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    area = (x2 - x1) * (y2 - y1)
    iw = min(x2, width) - max(x1, 0.0)
    ih = min(y2, height) - max(y1, 0.0)
    inside = max(iw, 0.0) * max(ih, 0.0)
    if area <= 0 or inside < 0.5 * area:
        raise ValueError(
            f'{source}: box [x1, y1, x2, y2] = '
            f'{[round(v, 2) for v in (x1, y1, x2, y2)]} lies outside the '
            f'image {img_path} of size {width}x{height} (width x height)')


def make_instances(boxes: np.ndarray, person_ids: np.ndarray, width: int,
                   height: int, img_path: str, source: str) -> List[dict]:
    """Data-info instances, after checking every box lies in the image."""
    instances = []
    for box, pid in zip(boxes, person_ids):
        check_box_in_image(box, width, height, img_path, source)
        instances.append(
            dict(
                bbox=[float(v) for v in box],
                bbox_label=0,
                person_id=int(pid),
                ignore_flag=0))
    return instances


def image_data_info(img_path: str, img_id: str, split: str,
                    boxes: np.ndarray, person_ids, source: str,
                    **extra) -> dict:
    """One image's data info (the project's convention): size read from the
    image header, boxes checked against it; ``extra`` adds ``cam_id`` /
    ``query_index``."""
    w, h = image_size(img_path)
    return dict(
        img_path=img_path,
        img_id=img_id,
        height=h,
        width=w,
        split=split,
        **extra,
        instances=make_instances(boxes, person_ids, w, h, img_path, source))


def filter_data_infos(data_list: List[dict], filter_cfg: Optional[dict],
                      test_mode: bool) -> List[dict]:
    """mmdet-style ``filter_cfg`` for person-search data infos.

    ``filter_empty_gt`` drops images without any box (training only) and
    ``min_size`` drops images whose shorter side is smaller.
    """
    if test_mode or not filter_cfg:
        return data_list
    unknown = set(filter_cfg) - {'filter_empty_gt', 'min_size'}
    if unknown:
        raise KeyError(f'filter_cfg has unknown keys {sorted(unknown)}; '
                       "expected 'filter_empty_gt' and/or 'min_size'")
    empty = filter_cfg.get('filter_empty_gt', False)
    min_size = filter_cfg.get('min_size', 0)
    kept = [
        info for info in data_list
        if not (empty and len(info['instances']) == 0)
        and min(info['width'], info['height']) >= min_size
    ]
    if data_list and not kept:
        raise ValueError(f'filter_cfg={filter_cfg} removes all '
                         f'{len(data_list)} images of the dataset')
    return kept
