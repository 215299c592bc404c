# Copyright (c) mmpsearch contributors. All rights reserved.
"""PRW (Zheng et al., "Person Re-identification in the Wild", CVPR 2017),
read from its released files.

Layout (as released)::

    data_root/
      frames/*.jpg                       c{cam}s{seq}_{frame}.jpg, cam 1..6
      annotations/<frame>.jpg.mat        one N x 5 array [id, x, y, w, h]
                                         under box_new, else anno_file, else
                                         anno_previous; id -2 = unlabeled
      frame_train.mat                    img_index_train: cell of names
      frame_test.mat                     img_index_test: cell of names
      query_info.txt                     "id x y w h frame" lines (CRLF)
      ID_train.mat, ID_test.mat          (not needed here)

Some coordinates are negative; they are clipped at 0 before w, h are added
(as every public loader does). The same parsing code serves
:class:`PRWDataset` and :func:`load_prw_protocol`.
"""
import logging
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmengine.logging import print_log

from mmpsearch.registry import DATASETS
from mmpsearch.utils.paths import require_file
from .file_checks import (cached, check_data_root, filter_data_infos,
                          image_data_info)
from .mat_utils import cell_items, get_var, load_mat, to_str
from .protocol import SPLITS, GalleryImage, Query, SearchProtocol

BOX_KEYS = ('box_new', 'anno_file', 'anno_previous')
FRAME_RE = re.compile(r'^c(\d)s(\d+)_(\d+)$')
UNLABELED_ID = -2

# The release's folders, files and .mat variables, defined once here: the
# synthetic writer (``synthetic/prw_writer.py``) imports them, so what it
# writes is what this reader looks for.
FRAMES_DIR = 'frames'
ANNOTATIONS_DIR = 'annotations'
#: ``annotations/<frame>`` + this: the frame's boxes
ANNOTATION_SUFFIX = '.jpg.mat'
#: split -> (file, variable) of the frame lists
FRAME_LISTS: Dict[str, Tuple[str, str]] = {
    'train': ('frame_train.mat', 'img_index_train'),
    'test': ('frame_test.mat', 'img_index_test'),
}
QUERY_FILE = 'query_info.txt'
# released beside the others, not read here
ID_TRAIN_FILE, ID_TRAIN_VAR = 'ID_train.mat', 'ID_train'
ID_TEST_FILE, ID_TEST_VAR = 'ID_test.mat', 'ID_test2'


def prw_cam_id(frame: str, source: str = 'frame name') -> int:
    """Camera of a frame: the digit after ``c`` in ``c1s1_000151``."""
    m = FRAME_RE.match(frame[:-4] if frame.endswith('.jpg') else frame)
    if m is None:
        raise ValueError(f'{source}: frame name {frame!r} does not look like '
                         "'c<cam>s<seq>_<frame>' (e.g. 'c1s1_000151')")
    return int(m.group(1))


def _parse_frame_list(path: str, var: str) -> List[str]:
    """frame_{train,test}.mat -> frame names without ``.jpg``, in order."""

    def parse() -> List[str]:
        mat = load_mat(path, f"the variable '{var}' (cell of frame names)")
        items = cell_items(get_var(mat, var, path), path, var)
        names = []
        for i, v in enumerate(items):
            name = to_str(v, path, f'{var}{{{i + 1}}}')
            if name.endswith('.jpg'):
                name = name[:-4]
            prw_cam_id(name, f'{path}: {var}{{{i + 1}}}')
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError(f'{path}: {var} lists some frames twice')
        return names

    require_file(
        path, f"the PRW frame list (variable '{var}', a cell of "
        'frame names), as released')
    return cached('prw_frames', path, parse)


def _parse_annotation(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """annotations/<frame>.jpg.mat -> (ids int64 (n,), [x, y, w, h] float64
    (n, 4)) exactly as stored."""

    def parse() -> Tuple[np.ndarray, np.ndarray]:
        mat = load_mat(
            path, 'an N x 5 array [id, x, y, w, h] under one of '
            f'{BOX_KEYS}')
        key = next((k for k in BOX_KEYS if k in mat), None)
        if key is None:
            found = sorted(k for k in mat if not k.startswith('__'))
            raise KeyError(f'{path} has none of the box variables '
                           f'{BOX_KEYS} (found {found})')
        arr = mat[key]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in 'iuf':
            raise ValueError(f'{path}: {key} should be a numeric N x 5 array '
                             f'[id, x, y, w, h], got {type(arr).__name__} '
                             f'{getattr(arr, "dtype", "")}')
        if arr.size == 0:
            return np.zeros(0, np.int64), np.zeros((0, 4))
        if arr.ndim != 2 or arr.shape[1] != 5:
            raise ValueError(f'{path}: {key} should be N x 5 [id, x, y, w, '
                             f'h], got shape {arr.shape}')
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f'{path}: {key} holds non-finite numbers')
        ids = arr[:, 0]
        if np.any(ids != np.round(ids)):
            raise ValueError(f'{path}: {key} has non-integer person ids '
                             f'{ids[ids != np.round(ids)].tolist()}')
        ids = ids.astype(np.int64)
        bad = (ids < 0) & (ids != UNLABELED_ID)
        if np.any(bad):
            raise ValueError(f'{path}: {key} has person ids '
                             f'{ids[bad].tolist()}; expected ids >= 0 or '
                             f'{UNLABELED_ID} (unlabeled)')
        return ids, arr[:, 1:].copy()

    require_file(
        path, 'the annotation of a frame listed in frame_train.mat '
        '/ frame_test.mat (an N x 5 array [id, x, y, w, h] under '
        f'one of {BOX_KEYS})')
    return cached('prw_annotation', path, parse)


def _parse_query_info(path: str) -> List[Tuple[int, np.ndarray, str]]:
    """query_info.txt -> [(id, [x, y, w, h], frame name), ...] in order."""

    def parse():
        with open(path, 'rb') as f:
            data = f.read()
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError as e:
            n = data[:e.start].count(b'\n') + 1
            raise ValueError(
                f'{path} line {n}: byte {data[e.start:e.start + 1]!r} at '
                f'offset {e.start} is not '
                "UTF-8 text; expected 'id x y w h frame_name' lines as "
                'released (ASCII)') from None
        # Lines end in CRLF in the release; a final line end is optional.
        lines = text.rstrip('\r\n').replace('\r\n', '\n').split('\n')
        out = []
        for n, line in enumerate(lines, start=1):
            parts = line.strip().split()
            what = f'it has {len(parts)} fields'
            try:
                if len(parts) != 6:
                    raise ValueError
                what = f'id = {parts[0]!r} is not an integer'
                pid = int(parts[0])
                xywh = []
                for field, v in zip('xywh', parts[1:5]):
                    what = f'{field} = {v!r} is not a number'
                    xywh.append(float(v))
                xywh = np.array(xywh)
            except ValueError:
                raise ValueError(
                    f'{path} line {n}: {line!r} is malformed ({what}); '
                    "expected 'id x y w h frame_name' (6 fields, integer "
                    'id, numbers x y w h)') from None
            if pid < 0 or not np.all(np.isfinite(xywh)):
                raise ValueError(f'{path} line {n}: {line!r} has id {pid} or '
                                 'a non-finite box; expected a labeled id '
                                 '>= 0 and finite x y w h')
            prw_cam_id(parts[5], f'{path} line {n}')
            out.append((pid, xywh, parts[5]))
        return out

    require_file(path, "the PRW queries ('id x y w h frame' lines)")
    return cached('prw_query_info', path, parse)


def _clip_xyxy(xywh: np.ndarray) -> np.ndarray:
    """[x, y, w, h] -> [x1, y1, x2, y2] with negative x, y clipped at 0
    before w, h are added."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    xy = np.clip(xywh[:, :2], 0, None)
    return np.concatenate([xy, xy + xywh[:, 2:]], axis=1).astype(np.float32)


@dataclass
class _FrameAnn:
    img_id: str  # 'c1s1_000151.jpg'
    boxes: np.ndarray  # float32 (n, 4) x1y1x2y2
    person_ids: np.ndarray  # int64 (n,), original ids, -1 unlabeled
    cam_id: int


def check_prw_root(data_root: str) -> None:
    """Refuse a missing data root, or one that holds CUHK-SYSU."""
    check_data_root(
        data_root,
        'PRW', 'frames/, annotations/, frame_train.mat, '
        'frame_test.mat and query_info.txt',
        own=(FRAME_LISTS['test'][0], FRAME_LISTS['train'][0], ANNOTATIONS_DIR,
             FRAMES_DIR, QUERY_FILE),
        others={'CUHK-SYSU': ('cuhk', ('annotation', 'Image'))})


def _split_frames(data_root: str, split: str) -> List[str]:
    """Frame names of frame_train.mat ('train') or frame_test.mat (any
    other split), after checking that no frame is in both lists."""
    check_prw_root(data_root)
    lists = {}
    for s, (fname, var) in FRAME_LISTS.items():
        path = osp.join(data_root, fname)
        if s == ('train' if split == 'train' else 'test') or \
                osp.exists(path):
            lists[s] = _parse_frame_list(path, var)
    if len(lists) == 2:
        both = set(lists['train']).intersection(lists['test'])
        if both:
            raise ValueError(
                f'{osp.join(data_root, FRAME_LISTS["train"][0])} and '
                f'{osp.join(data_root, FRAME_LISTS["test"][0])} both list '
                f'{len(both)} frames, e.g. {sorted(both)[:5]}: test frames '
                'would leak into training; expected disjoint train and test '
                'frames as released')
    return lists['train' if split == 'train' else 'test']


def _frame_annotations(data_root: str, split: str) -> List[_FrameAnn]:
    """Frames of frame_train.mat ('train') or frame_test.mat ('gallery'),
    with original ids (-2 -> -1)."""
    frames = _split_frames(data_root, split)
    out = []
    for frame in frames:
        apath = osp.join(data_root, ANNOTATIONS_DIR,
                         f'{frame}{ANNOTATION_SUFFIX}')
        ids, xywh = _parse_annotation(apath)
        keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        if not np.all(keep):
            # Not expected in the release: say so rather than drop quietly.
            print_log(
                f'{apath}: dropped {int((~keep).sum())} boxes with w or h '
                f'<= 0: {xywh[~keep].tolist()}',
                logger='current',
                level=logging.WARNING)
        ids = np.where(ids[keep] == UNLABELED_ID, -1, ids[keep])
        out.append(
            _FrameAnn(f'{frame}.jpg', _clip_xyxy(xywh[keep]), ids,
                      prw_cam_id(frame, apath)))
    return out


def prw_train_annotations(data_root: str) -> List[_FrameAnn]:
    """Training frames with ids 0..K-1 (the sorted original ids of the
    train split), -1 for unlabeled persons."""
    anns = _frame_annotations(data_root, 'train')
    labeled = sorted({int(i) for a in anns for i in a.person_ids if i >= 0})
    mapping = {pid: k for k, pid in enumerate(labeled)}
    return [
        _FrameAnn(
            a.img_id, a.boxes,
            np.array([mapping.get(int(i), -1) for i in a.person_ids],
                     dtype=np.int64), a.cam_id) for a in anns
    ]


@dataclass
class _PRWQuery:
    img_id: str
    box: np.ndarray  # float32 (4,)
    person_id: int
    cam_id: int


def prw_queries(data_root: str) -> List[_PRWQuery]:
    """The queries of query_info.txt (original ids), after checking their
    frames are test frames."""
    path = osp.join(data_root, QUERY_FILE)
    test_frames = set(_split_frames(data_root, 'query'))
    out = []
    for n, (pid, xywh, frame) in enumerate(_parse_query_info(path), 1):
        name = frame[:-4] if frame.endswith('.jpg') else frame
        if name not in test_frames:
            raise ValueError(f'{path} line {n}: frame {frame!r} is not a '
                             'test frame of frame_test.mat')
        out.append(
            _PRWQuery(f'{name}.jpg',
                      _clip_xyxy(xywh)[0], pid, prw_cam_id(name)))
    return out


def load_prw_protocol(data_root: str) -> SearchProtocol:
    """The PRW evaluation protocol.

    Args:
        data_root (str): The dataset folder (holding ``frames/``,
            ``annotations/``, ``frame_test.mat`` and ``query_info.txt``).

    Returns:
        SearchProtocol: ``gallery`` holds every frame of ``frame_test.mat``
        with all its boxes, original ids (-1 unlabeled) and camera;
        ``queries`` follow ``query_info.txt`` with original person id and
        camera, ``gallery=None`` (the gallery is every test frame but the
        query's own, or only other cameras' frames).
    """
    gallery = {
        a.img_id:
        GalleryImage(a.img_id, a.boxes.copy(), a.person_ids.copy(), a.cam_id)
        for a in _frame_annotations(data_root, 'gallery')
    }
    queries = [
        Query(q.img_id, q.box.copy(), q.person_id, q.cam_id, None)
        for q in prw_queries(data_root)
    ]
    return SearchProtocol('prw', gallery, queries, None)


@DATASETS.register_module()
class PRWDataset(BaseDetDataset):
    """PRW person search dataset, read from its released files.

    Zheng et al., "Person Re-identification in the Wild", CVPR 2017
    (the file formats of the release).

    Every data info holds ``img_path``, ``img_id`` (e.g.
    ``'c1s1_000151.jpg'``), ``height``, ``width`` (from the image header),
    ``split``, ``cam_id`` and ``instances`` (``bbox`` x1y1x2y2 with negative
    coordinates clipped at 0, ``bbox_label`` 0, ``person_id``, ``ignore_flag``
    0).

    - ``train``: frames of frame_train.mat; ids 0..K-1 in the order of the
      sorted original ids of the train split, -1 for unlabeled (-2).
    - ``gallery``: frames of frame_test.mat with their original ids.
    - ``query``: one info per line of query_info.txt holding exactly the
      query box with its original id and ``query_index``.

    Args:
        data_root (str): The dataset folder.
        split (str): ``'train'``, ``'gallery'`` or ``'query'``.
        **kwargs: mmdet ``BaseDetDataset`` options (``pipeline``,
            ``test_mode``, ``filter_cfg``, ``serialize_data`` ...).
    """
    METAINFO = {'classes': ('person', ), 'palette': [(220, 20, 60)]}

    def __init__(self, data_root: str, split: str = 'train', **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split={split!r} is not a PRW split; expected '
                             f'one of {SPLITS}')
        self.split = split
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root
        frames_dir = osp.join(root, FRAMES_DIR)
        data_list = []
        if self.split in ('train', 'gallery'):
            anns = (
                prw_train_annotations(root) if self.split == 'train' else
                _frame_annotations(root, 'gallery'))
            for a in anns:
                data_list.append(
                    image_data_info(
                        osp.join(frames_dir, a.img_id),
                        a.img_id,
                        self.split,
                        a.boxes,
                        a.person_ids,
                        osp.join(root, ANNOTATIONS_DIR, f'{a.img_id}.mat'),
                        cam_id=a.cam_id))
        else:
            src = osp.join(root, QUERY_FILE)
            for i, q in enumerate(prw_queries(root)):
                data_list.append(
                    image_data_info(
                        osp.join(frames_dir, q.img_id),
                        q.img_id,
                        'query',
                        q.box[None], [q.person_id],
                        f'{src} line {i + 1}',
                        cam_id=q.cam_id,
                        query_index=i))
        return data_list

    def filter_data(self) -> List[dict]:
        return filter_data_infos(self.data_list, self.filter_cfg,
                                 self.test_mode)


__all__ = [
    'PRWDataset', 'load_prw_protocol', 'prw_cam_id', 'prw_train_annotations',
    'prw_queries'
]
