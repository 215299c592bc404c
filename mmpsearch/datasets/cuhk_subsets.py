# Copyright (c) mmpsearch contributors. All rights reserved.
"""The occlusion and low-resolution query subsets of CUHK-SYSU, read from
the released files.

Layout (as released, beside ``annotation/test/train_test``)::

    annotation/test/subset/Occlusion.mat
        Occlusion1: 1x187 struct (Query, Gallery, occlusion)
    annotation/test/subset/Resolution.mat
        Test_Size: 1x290 struct (Query, Gallery)

``Query`` and ``Gallery`` nest as in ``TestG{N}.mat`` (Query: 1x1 struct
``imname``, ``idlocate`` [x, y, w, h], ``ishard``, ``idname``; Gallery: 1xM
struct ``imname``, ``idlocate``, ``ishard`` with an empty ``idlocate`` where
the image does not hold the query). The third field of ``Occlusion1`` is not
read (the public loaders ignore it too).

Each subset query is one of the TestG queries (found by its image and box,
compared after an int cast as for the TestG files) and, as in the public
evaluation codes (the SEAS / DiffPS dataset reader, GFN's
``cuhk_utils.py``), it is searched in the gallery list stored with it in
the subset file. ``gallery_size=N`` searches the TestG{N} gallery list of
the query instead.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .cuhk_sysu import (ANNO_DIR, _box_key, _Labeller, _parse_images,
                        _parse_pool, _parse_testg, _paths, _xyxy,
                        check_cuhk_root, load_cuhk_protocol, testg_path)
from .protocol import Query, QuerySubset, SearchProtocol

CUHK_SUBSETS = ('occlusion', 'resolution')
# Defined once here: the synthetic writer (``synthetic/cuhk_writer.py``)
# writes these files.
SUBSET_DIR = osp.join(ANNO_DIR, 'test', 'subset')
# name -> (file, variable)
SUBSET_FILES: Dict[str, Tuple[str, str]] = {
    'occlusion': ('Occlusion.mat', 'Occlusion1'),
    'resolution': ('Resolution.mat', 'Test_Size'),
}


def check_subset_name(name: str) -> str:
    """``name`` if it is a CUHK-SYSU subset, else a ``ValueError``."""
    if name not in SUBSET_FILES:
        raise ValueError(f'{name!r} is not a CUHK-SYSU query subset; '
                         f'expected one of {CUHK_SUBSETS}')
    return name


def subset_path(data_root: str, name: str) -> str:
    """Path of the subset's file, with an error naming the file when it is
    absent."""
    check_subset_name(name)
    fname, var = SUBSET_FILES[name]
    path = osp.join(data_root, SUBSET_DIR, fname)
    if not osp.isfile(path):
        check_cuhk_root(data_root)
        state = 'is a folder, not a file' if osp.isdir(path) else \
            'does not exist'
        raise FileNotFoundError(
            f'{path} {state}: the CUHK-SYSU {name} subset is not '
            f'available under {data_root}; expected the released '
            f'{SUBSET_DIR}/{fname} (variable {var!r}, a struct of Query, '
            'Gallery)')
    return path


def available_subsets(data_root: str) -> List[str]:
    """The subsets whose files exist under ``data_root``, in the order of
    ``CUHK_SUBSETS``."""
    return [
        n for n in CUHK_SUBSETS
        if osp.isfile(osp.join(data_root, SUBSET_DIR, SUBSET_FILES[n][0]))
    ]


def resolve_subsets(subsets: Union[str, Sequence[str], None],
                    data_root: str) -> List[str]:
    """The subset names an option asks for: ``'auto'`` -> those whose
    files exist; a name or a sequence of names -> checked names (their
    files must exist when they are loaded); ``None`` / ``()`` -> none."""
    if subsets is None:
        return []
    if isinstance(subsets, str):
        if subsets == 'auto':
            return available_subsets(data_root)
        subsets = [subsets]
    names = [check_subset_name(n) for n in subsets]
    if len(set(names)) != len(names):
        raise ValueError(f'query subsets {names} repeat')
    return names


def load_cuhk_subset(data_root: str,
                     name: str,
                     protocol: Optional[SearchProtocol] = None,
                     gallery_size: Optional[int] = None) -> QuerySubset:
    """One query subset of CUHK-SYSU.

    Args:
        data_root (str): The dataset folder.
        name (str): ``'occlusion'`` (``Occlusion.mat``) or ``'resolution'``
            (``Resolution.mat``).
        protocol (SearchProtocol, optional): The full protocol (from
            :func:`load_cuhk_protocol`) whose queries the results follow
            and whose gallery the subset shares. Default: the one of
            ``TestG50.mat`` (every TestG file lists the same queries in the
            same order).
        gallery_size (int, optional): ``None`` (default): each query is
            searched in the gallery list of the subset file, as the public
            codes do. ``N``: in its ``TestG{N}.mat`` gallery list instead.

    Returns:
        QuerySubset: ``protocol.queries[k]`` is entry k of the subset file,
        with person id (and ``query_indices[k]``) the index of that query
        in the TestG files.
    """
    path = subset_path(data_root, name)
    var = SUBSET_FILES[name][1]
    if protocol is None:
        protocol = load_cuhk_protocol(data_root, gallery_size or 50)
    if protocol.name != 'cuhk' or protocol.gallery_size is None:
        raise ValueError('load_cuhk_subset needs a CUHK-SYSU protocol of '
                         f'load_cuhk_protocol, got {protocol.name!r} with '
                         f'gallery size {protocol.gallery_size}')
    tpath = testg_path(data_root, protocol.gallery_size)
    test_entries = _parse_testg(tpath, protocol.gallery_size)
    if len(test_entries) != len(protocol.queries):
        raise ValueError(f'the protocol has {len(protocol.queries)} queries '
                         f'but {tpath} lists {len(test_entries)}')
    index: Dict[Tuple[str, Tuple[int, ...]], int] = {}
    for i, t in enumerate(test_entries):
        index.setdefault((t.imname, _box_key(t.xywh)), i)

    entries = _parse_testg(path, None, var)
    if not entries:
        raise ValueError(f'{path}: {var} holds no query; expected the '
                         f'released {name} subset')
    if gallery_size is None:
        p = _paths(data_root)
        pool = _parse_pool(p['pool'])
        labeller = _Labeller(
            _parse_images(p['images']), pool, p['images'],
            'test (pool.mat) gallery')
    elif gallery_size == protocol.gallery_size:
        other = protocol
    else:
        other = load_cuhk_protocol(data_root, gallery_size)
    queries: List[Query] = []
    found: Dict[int, int] = {}
    for k, e in enumerate(entries):
        who = f'{var}({k + 1}) ({e.idname})'
        i = index.get((e.imname, _box_key(e.xywh)))
        if i is None:
            raise ValueError(
                f'{path}: the query {who}, box [x, y, w, h] = '
                f'{e.xywh.tolist()} in {e.imname!r}, is not a query of '
                f'{tpath}; expected the subset to select TestG queries')
        if i in found:
            raise ValueError(
                f'{path}: {who} repeats the query {var}({found[i] + 1}) '
                f'(query {i + 1} of {tpath})')
        found[i] = k
        if gallery_size is None:
            gallery = labeller.mark_query(e, i, path, who, 'pool.mat')
        else:
            gallery = [(n, None if b is None else b.copy())
                       for n, b in other.queries[i].gallery]
        queries.append(Query(e.imname, _xyxy(e.xywh), i, -1, gallery))
    sub = SearchProtocol('cuhk', protocol.gallery, queries, gallery_size)
    return QuerySubset(name, sub, np.fromiter(found, np.int64, len(found)),
                       path)


def load_cuhk_subsets(data_root: str,
                      names: Sequence[str],
                      protocol: Optional[SearchProtocol] = None,
                      gallery_size: Optional[int] = None) -> List[QuerySubset]:
    """:func:`load_cuhk_subset` for each name (``resolve_subsets`` first for
    ``'auto'``)."""
    return [
        load_cuhk_subset(data_root, n, protocol, gallery_size) for n in names
    ]


__all__ = [
    'CUHK_SUBSETS', 'SUBSET_DIR', 'SUBSET_FILES', 'check_subset_name',
    'subset_path', 'available_subsets', 'resolve_subsets', 'load_cuhk_subset',
    'load_cuhk_subsets'
]
