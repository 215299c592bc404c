# Copyright (c) mmpsearch contributors. All rights reserved.
"""Checks of a person-search dataset's files, and the data infos built
from them.

Everything a dataset reads besides the ``.mat`` annotations is checked here,
before the first iteration, with an error that names the file and what was
expected: the data root (missing, or another dataset's tree), image names
that lead outside the image folder, images cut short (a truncated JPEG or
PNG decodes without an error, its missing rows grey), and boxes that lie
outside their image. Parsed annotation files and image sizes are cached
in-process, keyed by the file's path, size and modification time, so that
the gallery and query splits and the metric read a (large) file only once.
"""
import os
import os.path as osp
import threading
from typing import (Any, Callable, Dict, Hashable, List, Optional, Sequence,
                    Tuple)

import numpy as np

from mmpsearch.utils.paths import require_file

_CACHE: Dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()


def file_key(path: str) -> Tuple[str, int, int]:
    """(real path, size, mtime) of an existing file: a cache key that changes
    when the file is rewritten."""
    st = os.stat(path)
    return osp.realpath(path), st.st_size, st.st_mtime_ns


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


def check_data_root(root: str, dataset: str, layout: str, own: Sequence[str],
                    others: Dict[str, Tuple[str, Sequence[str]]]) -> None:
    """Refuse a ``data_root`` that is missing or holds another dataset.

    Args:
        root: The configured data root.
        dataset: Its dataset's name, e.g. ``'CUHK-SYSU'``.
        layout: What the folder should hold, for the message.
        own: Entries (files or folders) of which a tree of ``dataset`` holds
            at least one.
        others: ``{name: (key, entries)}`` of the other datasets (``key``
            as in ``--dataset``): when ``root`` has none of ``own`` but one
            of a dataset's entries, the error names that dataset.
    """
    if not osp.isdir(root):
        state = 'is not a folder' if osp.exists(root) else 'does not exist'
        raise FileNotFoundError(f'data_root {root} {state}; expected the '
                                f'{dataset} dataset folder holding {layout}')
    if any(osp.exists(osp.join(root, e)) for e in own):
        return
    for name, (key, entries) in others.items():
        found = [e for e in entries if osp.exists(osp.join(root, e))]
        if found:
            raise ValueError(
                f'data_root {root} holds a {name} tree ({found[0]}), not '
                f'{dataset}; expected {layout}. Read this folder with a '
                f'{name} config (--dataset {key}), or point data_root at '
                f'the {dataset} folder')


def join_inside(folder: str, name: str, source: str) -> str:
    """``folder/name``, refusing a ``name`` read from an annotation file that
    is absolute or leads out of ``folder`` (``../``), so that annotation
    files cannot make the loaders read files outside the dataset.
    ``source`` names where ``name`` was read, e.g. ``'Images.mat:
    Img(3).imname'``."""
    norm = osp.normpath(name)
    if osp.isabs(name) or norm == '..' or norm.startswith('..' + os.sep):
        raise ValueError(
            f'{source} = {name!r} leads outside the image folder {folder}; '
            'expected an image file name inside it (absolute and '
            "'../' names are refused)")
    return osp.join(folder, name)


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
                size = tuple(img.size)
        except Exception as e:
            raise ValueError(f'{img_path} could not be read as an image '
                             f'({type(e).__name__}: {e})') from None
        check_image_complete(img_path)
        return size

    require_file(img_path, 'an image file')
    return cached('image_size', img_path, read)


_JPEG_EOI = b'\xff\xd9'
_PNG_IEND = b'IEND\xaeB`\x82'


def _find_after(f, start: int, token: bytes, chunk: int = 1 << 20) -> bool:
    """Whether ``token`` occurs in the open file ``f`` at or after
    ``start``."""
    f.seek(start)
    prev = b''
    while True:
        block = f.read(chunk)
        if not block:
            return False
        if token in prev + block:
            return True
        prev = block[-(len(token) - 1):]


def _jpeg_scan_start(f) -> Optional[int]:
    """Offset of the first scan's data (after the SOS segment) of a JPEG, by
    walking the header segments; ``None`` when the file ends first."""
    pos = 2
    while True:
        f.seek(pos)
        m = f.read(4)
        if len(m) < 2 or m[0] != 0xFF:
            return None
        marker = m[1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2  # markers without a length
        elif len(m) < 4 or marker == 0xD9:
            return None
        else:
            length = int.from_bytes(m[2:4], 'big')
            pos += 2 + length
            if marker == 0xDA:  # start of scan
                return pos


def check_image_complete(img_path: str) -> None:
    """Raise when a JPEG or PNG file is cut short.

    Decoders read such a file without an error: OpenCV (mmcv's
    ``LoadImageFromFile``) gives the missing rows grey and only prints a
    warning. A complete JPEG has its end-of-image marker after the scan data
    and a PNG ends with its IEND chunk. Usually a read of the file's last
    bytes settles it; only a file with data after the marker (some cameras
    append some) is read further. Other formats are not checked.
    """
    with open(img_path, 'rb') as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 64))
        tail = f.read().rstrip(b'\x00')
        if head[:2] == b'\xff\xd8':
            if tail.endswith(_JPEG_EOI):
                return
            start = _jpeg_scan_start(f)
            if start is not None and _find_after(f, start, _JPEG_EOI):
                return
            what = 'JPEG', 'its image data is cut (no end-of-image marker)'
        elif head == b'\x89PNG\r\n\x1a\n':
            if tail.endswith(_PNG_IEND) or _find_after(f, 8, _PNG_IEND):
                return
            what = 'PNG', 'its image data is cut (no IEND chunk)'
        else:
            return
    raise ValueError(f'{img_path} is a truncated {what[0]} file ({size} '
                     f'bytes): {what[1]}; expected a complete image (copy '
                     'or download the file again)')


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


def image_data_info(img_path: str, img_id: str, split: str, boxes: np.ndarray,
                    person_ids, source: str, **extra) -> dict:
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
