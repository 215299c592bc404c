# Copyright (c) mmpsearch contributors. All rights reserved.
"""Hand-built CUHK-SYSU and PRW trees in the released nesting.

Written with ``scipy.io.savemat`` so that ``loadmat`` gives back what it gives
for the real files: struct arrays of shape (1, N) (numpy record arrays with
object fields), cells of shape (N, 1) or (1, N) (object arrays), strings as
char rows, numbers as 2-D doubles and an empty ``[]`` (0x0) ``idlocate`` for
gallery images that do not hold the query. Kept independent of
``mmpsearch.datasets.synthetic`` so that the loaders are not tested against
the writer's own idea of the format.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy.io import savemat

Box = Sequence[float]


def struct(fields: Sequence[str],
           rows: Sequence[Sequence],
           shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A MATLAB struct array, (1, N) unless ``shape`` is given."""
    shape = shape or (1, len(rows))
    arr = np.empty(shape, dtype=[(f, object) for f in fields])
    flat = arr.reshape(-1)
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            flat[f][i] = v
    return arr


def cell(items: Sequence, column: bool = True) -> np.ndarray:
    arr = np.empty((len(items), 1) if column else (1, len(items)), object)
    for i, v in enumerate(items):
        arr.reshape(-1)[i] = v
    return arr


def num(v) -> np.ndarray:
    return np.atleast_2d(np.asarray(v, dtype=np.float64))


EMPTY = np.zeros((0, 0))


def write_image(path: str, width: int, height: int) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new('RGB', (width, height), (90, 120, 150)).save(path)


# --------------------------------------------------------------------------
# CUHK-SYSU
# --------------------------------------------------------------------------
# image -> (width, height, boxes [x, y, w, h])
CUHK_IMAGES: Dict[str, Tuple[int, int, List[Box]]] = {
    's1.jpg': (120, 90, [[10, 10, 20, 50], [40, 12, 0, 40], [60, 20, 25, 60]]),
    's2.jpg': (120, 90, [[5, 5, 30, 70], [50, 10, 20, -3]]),
    's3.jpg': (100, 80, [[10, 10, 20, 50], [50, 15, 22, 55]]),
    's4.jpg': (100, 80, [[3, 4, 30, 70], [60, 5, 25, 60], [35, 20, 15, 40]]),
    's5.jpg': (100, 80, [[12, 8, 26, 66]]),
    's6.jpg': (110, 85, [[30, 10, 30, 70]]),
}
CUHK_POOL = ['s4.jpg', 's3.jpg', 's5.jpg', 's6.jpg']
# Train.mat: identity cell order p88, p5 -> ids 0, 1
CUHK_TRAIN = [('p88', [('s2.jpg', [5, 5, 30, 70]), ('s1.jpg', [60, 20, 25,
                                                               60])]),
              ('p5', [('s1.jpg', [10, 10, 20, 50])])]
# TestG: (query image, query box, idname, gallery [(image, box or None)])
CUHK_TESTG = [
    ('s3.jpg', [50, 15, 22, 55], 'p300', [('s4.jpg', [60, 5, 25, 60]),
                                          ('s5.jpg', None), ('s6.jpg', None)]),
    ('s4.jpg', [3, 4, 30, 70], 'p301', [('s5.jpg', [12, 8, 26, 66]),
                                        ('s6.jpg', [30, 10, 30, 70]),
                                        ('s3.jpg', None)]),
]


def write_cuhk(root: str,
               images=None,
               pool=None,
               train=None,
               testg=None,
               sizes: Sequence[int] = (50, ),
               pool_column: bool = True,
               train_column: bool = True,
               skip: Sequence[str] = (),
               drop_field: Optional[Tuple[str, str]] = None) -> str:
    """Write a CUHK-SYSU tree; returns ``root``.

    ``skip`` names files not to write (e.g. ``'Images.mat'``);
    ``drop_field=(file, field)`` writes that file without one struct field.
    """
    images = CUHK_IMAGES if images is None else images
    pool = CUHK_POOL if pool is None else pool
    train = CUHK_TRAIN if train is None else train
    testg = CUHK_TESTG if testg is None else testg
    anno = osp.join(root, 'annotation')
    proto = osp.join(anno, 'test', 'train_test')
    os.makedirs(proto, exist_ok=True)
    for name, (w, h, _) in images.items():
        write_image(osp.join(root, 'Image', 'SSM', name), w, h)

    def fields(file: str, names: Sequence[str]) -> List[str]:
        if drop_field and drop_field[0] == file:
            return [f for f in names if f != drop_field[1]]
        return list(names)

    def rows(file: str, names: Sequence[str], values: Sequence) -> list:
        keep = fields(file, names)
        return [[v for f, v in zip(names, row) if f in keep] for row in values]

    if 'Images.mat' not in skip:
        box_fields = ('idlocate', 'ishard')
        img_fields = ('imname', 'nAppear', 'box')
        img_rows = []
        for name, (_, _, boxes) in images.items():
            box_struct = struct(
                fields('box', box_fields),
                rows('box', box_fields, [(num(b), num(0)) for b in boxes]))
            img_rows.append((name, num(len(boxes)), box_struct))
        savemat(
            osp.join(anno, 'Images.mat'), {
                'Img':
                struct(
                    fields('Images.mat', img_fields),
                    rows('Images.mat', img_fields, img_rows))
            })
    if 'pool.mat' not in skip:
        savemat(osp.join(anno, 'pool.mat'), {'pool': cell(pool, pool_column)})
    if 'Train.mat' not in skip:
        p_fields = ('idname', 'nAppear', 'scene')
        cells = []
        for idname, scenes in train:
            scene = struct(('imname', 'idlocate', 'ishard'),
                           [(im, num(b), num(0)) for im, b in scenes])
            cells.append(
                struct(
                    fields('Train.mat', p_fields),
                    rows('Train.mat', p_fields,
                         [(idname, num(len(scenes)), scene)])))
        savemat(
            osp.join(proto, 'Train.mat'), {'Train': cell(cells, train_column)})
    for size in sizes:
        fname = f'TestG{size}.mat'
        if fname in skip:
            continue
        q_fields = ('imname', 'idlocate', 'ishard', 'idname')
        entries = []
        for qim, qbox, idname, gallery in testg:
            query = struct(
                fields(fname, q_fields),
                rows(fname, q_fields, [(qim, num(qbox), num(0), idname)]))
            gal = struct(('imname', 'idlocate', 'ishard'),
                         [(im, EMPTY if b is None else num(b),
                           EMPTY if b is None else num(1))
                          for im, b in gallery])
            entries.append((query, gal))
        savemat(
            osp.join(proto, fname),
            {f'TestG{size}': struct(('Query', 'Gallery'), entries)})
    return root


# CUHK-SYSU query subsets (annotation/test/subset), entries as CUHK_TESTG.
# name -> (file, variable, struct fields); the third field of Occlusion1 is
# not read by the loaders (its content here is made up).
CUHK_SUBSET_FILES = {
    'occlusion':
    ('Occlusion.mat', 'Occlusion1', ('Query', 'Gallery', 'occlusion')),
    'resolution': ('Resolution.mat', 'Test_Size', ('Query', 'Gallery')),
}
# the second TestG query, with another gallery list than its TestG one
CUHK_OCCLUSION = [
    ('s4.jpg', [3, 4, 30, 70], 'p301', [('s6.jpg', [30, 10, 30, 70]),
                                        ('s3.jpg', None)]),
]
# both queries, the second TestG query first
CUHK_RESOLUTION = [
    ('s4.jpg', [3, 4, 30, 70], 'p301', [('s5.jpg', [12, 8, 26, 66]),
                                        ('s3.jpg', None)]),
    ('s3.jpg', [50, 15, 22, 55], 'p300', [('s4.jpg', [60, 5, 25, 60]),
                                          ('s6.jpg', None), ('s5.jpg', None)]),
]


def write_cuhk_subset(root: str,
                      name: str,
                      entries=None,
                      var: Optional[str] = None,
                      drop_field: Optional[str] = None) -> str:
    """Write ``annotation/test/subset/{Occlusion,Resolution}.mat`` of a
    CUHK-SYSU tree; returns the file's path. ``var`` renames the variable,
    ``drop_field`` leaves one field of the entry struct out."""
    fname, default_var, fields = CUHK_SUBSET_FILES[name]
    if entries is None:
        entries = CUHK_OCCLUSION if name == 'occlusion' else CUHK_RESOLUTION
    rows = []
    for k, (qim, qbox, idname, gallery) in enumerate(entries):
        query = struct(('imname', 'idlocate', 'ishard', 'idname'),
                       [(qim, num(qbox), num(0), idname)])
        gal = struct(('imname', 'idlocate', 'ishard'),
                     [(im, EMPTY if b is None else num(b),
                       EMPTY if b is None else num(0)) for im, b in gallery])
        rows.append((query, gal, num(k % 2))[:len(fields)])
    keep = [f for f in fields if f != drop_field]
    rows = [[v for f, v in zip(fields, row) if f in keep] for row in rows]
    path = osp.join(root, 'annotation', 'test', 'subset', fname)
    os.makedirs(osp.dirname(path), exist_ok=True)
    savemat(path, {var or default_var: struct(keep, rows)})
    return path


# --------------------------------------------------------------------------
# PRW
# --------------------------------------------------------------------------
# frame -> (width, height, {key: rows [id, x, y, w, h]})
PRW_FRAMES: Dict[str, Tuple[int, int, Dict[str, List[Box]]]] = {
    'c1s1_000010': (160, 120, {
        'box_new': [[12, 10, 10, 30, 80], [-2, 60, 20, 20, 60],
                    [7, 100, 15, 25, 70]]
    }),
    'c2s1_000020': (160, 120, {
        'anno_file': [[3, -4.5, 12, 30, 80], [12, 90, -2, 20, 50]]
    }),
    'c3s2_000030': (160, 120, {
        'anno_previous': [[40, 20, 10, 30, 90], [-2, 80, 30, 20, 50]]
    }),
    'c4s1_000040': (
        160,
        120,
        {
            # box_new wins over the older rounds
            'box_new': [[40, 5, 5, 40, 100], [41, 70, 20, 30, 90]],
            'anno_file': [[40, 0, 0, 10, 10]],
        }),
    'c6s3_000050': (
        160,
        120,
        {
            # anno_file wins over anno_previous
            'anno_file': [[41, -3, 10, 35, 95], [-2, 100, 40, 20, 40]],
            'anno_previous': [[41, 50, 50, 5, 5]],
        }),
}
PRW_TRAIN = ['c1s1_000010', 'c2s1_000020']
PRW_TEST = ['c3s2_000030', 'c4s1_000040', 'c6s3_000050']
PRW_QUERIES = [
    '40 20.0000 10.0000 30.0000 90.0000 c3s2_000030',
    '41 -3.0000 10.0000 35.0000 95.0000 c6s3_000050',
]


def write_prw(root: str,
              frames=None,
              train=None,
              test=None,
              query_lines=None,
              line_end: str = '\r\n',
              skip: Sequence[str] = ()) -> str:
    """Write a PRW tree; returns ``root``."""
    frames = PRW_FRAMES if frames is None else frames
    train = PRW_TRAIN if train is None else train
    test = PRW_TEST if test is None else test
    query_lines = PRW_QUERIES if query_lines is None else query_lines
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for name, (w, h, keys) in frames.items():
        write_image(osp.join(root, 'frames', f'{name}.jpg'), w, h)
        if f'{name}.jpg.mat' in skip:
            continue
        savemat(
            osp.join(root, 'annotations', f'{name}.jpg.mat'), {
                k: np.asarray(v, np.float64)
                for k, v in keys.items()
            })
    if 'frame_train.mat' not in skip:
        savemat(
            osp.join(root, 'frame_train.mat'),
            {'img_index_train': cell(train)})
    if 'frame_test.mat' not in skip:
        savemat(
            osp.join(root, 'frame_test.mat'), {'img_index_test': cell(test)})
    if 'query_info.txt' not in skip:
        with open(osp.join(root, 'query_info.txt'), 'w', newline='') as f:
            f.write(''.join(line + line_end for line in query_lines))
    return root
