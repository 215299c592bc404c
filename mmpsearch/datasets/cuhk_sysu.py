# Copyright (c) mmpsearch contributors. All rights reserved.
"""CUHK-SYSU (Xiao et al., "Joint Detection and Identification Feature
Learning for Person Search", CVPR 2017), read from its released files.

Layout (as released)::

    data_root/
      Image/SSM/*.jpg
      annotation/Images.mat      Img: 1xN struct (imname, nAppear, box);
                                 box: 1xn struct with idlocate = [x, y, w, h]
      annotation/pool.mat        pool: cell of the test (gallery) image names
      annotation/Person.mat      (not needed here)
      annotation/test/train_test/Train.mat
                                 Train: cell of 1x1 structs (idname, nAppear,
                                 scene); scene: 1xn struct (imname, idlocate,
                                 ishard)
      annotation/test/train_test/TestG{50,100,500,1000,2000,4000}.mat
                                 TestG{N}: 1x2900 struct (Query, Gallery);
                                 Query: 1x1 struct (imname, idlocate, ishard,
                                 idname); Gallery: 1xN struct (imname,
                                 idlocate, ishard), idlocate empty when the
                                 image does not hold the query

The same parsing code serves :class:`CUHKSYSUDataset` (data infos for the
train / gallery / query splits) and :func:`load_cuhk_protocol` (the
evaluation protocol as plain data).
"""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.datasets import BaseDetDataset

from mmpsearch.registry import DATASETS
from mmpsearch.utils.paths import require_file
from .file_checks import (cached, check_data_root, filter_data_infos,
                          image_data_info, join_inside)
from .mat_utils import (cell_items, get_var, load_mat, struct_array,
                        struct_scalar, to_str, to_xywh)
from .protocol import SPLITS, GalleryImage, Query, SearchProtocol

CUHK_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)

# The release's folders, files and .mat variables, defined once here: the
# synthetic writer (``synthetic/cuhk_writer.py``) imports them, so what it
# writes is what this reader looks for.
IMAGE_DIR = osp.join('Image', 'SSM')
ANNO_DIR = 'annotation'
PROTOCOL_DIR = osp.join(ANNO_DIR, 'test', 'train_test')
IMAGES_FILE, IMAGES_VAR = 'Images.mat', 'Img'
POOL_FILE, POOL_VAR = 'pool.mat', 'pool'
TRAIN_FILE, TRAIN_VAR = 'Train.mat', 'Train'
# released beside the others, not read here
PERSON_FILE, PERSON_VAR = 'Person.mat', 'Person'


def testg_var(gallery_size: int) -> str:
    """The variable of the protocol file of a gallery size:
    ``TestG{gallery_size}``."""
    return f'TestG{gallery_size}'


def testg_file(gallery_size: int) -> str:
    """The protocol file of a gallery size: ``TestG{gallery_size}.mat``
    (under ``PROTOCOL_DIR``)."""
    return f'{testg_var(gallery_size)}.mat'


# --------------------------------------------------------------------------
# Parsing of the individual files (cached per file version).
# --------------------------------------------------------------------------
def _box_key(xywh: np.ndarray) -> Tuple[int, ...]:
    # The public loaders compare boxes after an int32 cast; doing the same
    # keeps float noise between the files from breaking a match.
    return tuple(int(v) for v in np.trunc(xywh))


def _parse_images(path: str) -> Dict[str, np.ndarray]:
    """Images.mat -> {imname: kept boxes (n, 4) [x, y, w, h]} in file order.

    Boxes with w or h <= 0 exist in the release and are dropped here.
    """

    def parse() -> Dict[str, np.ndarray]:
        mat = load_mat(
            path, f"the variable '{IMAGES_VAR}' (1xN struct of "
            'images)')
        imgs = struct_array(
            get_var(mat, IMAGES_VAR, path), ('imname', 'box'), path,
            IMAGES_VAR)
        out: Dict[str, np.ndarray] = {}
        for i, rec in enumerate(imgs):
            name = to_str(rec['imname'], path, f'Img({i + 1}).imname')
            join_inside(image_dir, name, f'{path}: Img({i + 1}).imname')
            if name in out:
                raise ValueError(f'{path}: image {name!r} is listed twice '
                                 f'in Img (again at entry {i + 1})')
            what = f'Img({i + 1}).box ({name})'
            box_field = rec['box']
            if isinstance(box_field, np.ndarray) and box_field.size == 0:
                boxes = np.zeros((0, 4))
            else:
                recs = struct_array(box_field, ('idlocate', ), path, what)
                boxes = np.stack([
                    to_xywh(b['idlocate'], path, f'{what}({j + 1}).idlocate')
                    for j, b in enumerate(recs)
                ]) if len(recs) else np.zeros((0, 4))
            keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
            out[name] = boxes[keep]
        return out

    # path = data_root/annotation/Images.mat
    image_dir = osp.join(osp.dirname(osp.dirname(path)), IMAGE_DIR)
    require_file(
        path, 'the CUHK-SYSU annotation Images.mat (is data_root '
        'the dataset folder holding Image/ and annotation/?)')
    return cached('cuhk_images', path, parse)


def _parse_pool(path: str) -> List[str]:
    """pool.mat -> the test (gallery) image names, in file order."""

    def parse() -> List[str]:
        mat = load_mat(
            path, f"the variable '{POOL_VAR}' (cell of test "
            'image names)')
        items = cell_items(get_var(mat, POOL_VAR, path), path, POOL_VAR)
        names = [
            to_str(v, path, f'pool{{{i + 1}}}') for i, v in enumerate(items)
        ]
        if len(set(names)) != len(names):
            raise ValueError(f'{path}: pool lists some images twice')
        return names

    require_file(
        path, "the CUHK-SYSU test image list pool.mat (variable "
        "'pool', a cell of image names), as released")
    return cached('cuhk_pool', path, parse)


def _parse_train(path: str) -> List[Tuple[str, List[Tuple[str, np.ndarray]]]]:
    """Train.mat -> [(idname, [(imname, [x, y, w, h]), ...]), ...] in cell
    order."""

    def parse():
        mat = load_mat(
            path, f"the variable '{TRAIN_VAR}' (cell of 1x1 "
            'structs idname, nAppear, scene)')
        cells = cell_items(get_var(mat, TRAIN_VAR, path), path, TRAIN_VAR)
        out = []
        for k, cell in enumerate(cells):
            what = f'Train{{{k + 1}}}'
            person = struct_scalar(cell, ('idname', 'scene'), path, what)
            idname = to_str(person['idname'], path, f'{what}.idname')
            scenes = struct_array(person['scene'], ('imname', 'idlocate'),
                                  path, f'{what}.scene ({idname})')
            out.append((idname, [(to_str(s['imname'], path,
                                         f'{what}.scene({j + 1}).imname'),
                                  to_xywh(s['idlocate'], path,
                                          f'{what}.scene({j + 1}).idlocate'))
                                 for j, s in enumerate(scenes)]))
        return out

    require_file(
        path, "the CUHK-SYSU training persons Train.mat (variable "
        "'Train'), as released")
    return cached('cuhk_train', path, parse)


@dataclass
class _TestEntry:
    """One query of TestG{N}.mat and its gallery list."""
    imname: str
    xywh: np.ndarray
    idname: str
    gallery: List[Tuple[str, Optional[np.ndarray]]]


def _parse_testg(path: str,
                 size: Optional[int],
                 var: Optional[str] = None) -> List[_TestEntry]:
    """TestG{size}.mat -> the queries with their gallery lists, in order.

    ``var`` reads another file of the same nesting (the variable ``var``, a
    struct with ``Query`` and ``Gallery``): the occlusion and
    low-resolution subsets, see ``cuhk_subsets.py``.
    """
    var = var or testg_var(size)

    def parse() -> List[_TestEntry]:
        mat = load_mat(
            path, f"the variable '{var}' (1xQ struct of Query, "
            'Gallery)')
        entries = struct_array(
            get_var(mat, var, path), ('Query', 'Gallery'), path, var)
        out = []
        for i, rec in enumerate(entries):
            what = f'{var}({i + 1})'
            q = struct_scalar(rec['Query'], ('imname', 'idlocate', 'idname'),
                              path, f'{what}.Query')
            imname = to_str(q['imname'], path, f'{what}.Query.imname')
            qbox = to_xywh(q['idlocate'], path, f'{what}.Query.idlocate')
            idname = to_str(q['idname'], path, f'{what}.Query.idname')
            gal = struct_array(rec['Gallery'], ('imname', 'idlocate'), path,
                               f'{what}.Gallery')
            names = gal['imname']
            locs = gal['idlocate']
            gallery = []
            for j in range(len(gal)):
                n, loc = names[j], locs[j]
                # Fast path for the usual nesting (TestG4000 has 11.6M
                # entries); anything else goes through the checked helpers.
                if type(n) is np.ndarray and n.shape == (1, ) \
                        and n.dtype.kind == 'U':
                    name = str(n[0])
                else:
                    name = to_str(n, path, f'{what}.Gallery({j + 1}).imname')
                if type(loc) is np.ndarray and loc.size == 0:
                    box = None
                else:
                    box = to_xywh(loc, path,
                                  f'{what}.Gallery({j + 1}).idlocate')
                gallery.append((name, box))
            out.append(_TestEntry(imname, qbox, idname, gallery))
        return out

    require_file(
        path, f"the CUHK-SYSU test protocol (variable '{var}', a "
        'struct of Query, Gallery), as released')
    return cached('cuhk_testg', path, parse)


# --------------------------------------------------------------------------
# Assembling the splits.
# --------------------------------------------------------------------------
def _check_gallery_size(gallery_size: int) -> None:
    if gallery_size not in CUHK_GALLERY_SIZES:
        raise ValueError(
            f'gallery_size={gallery_size!r} is not a CUHK-SYSU gallery size; '
            f'expected one of {CUHK_GALLERY_SIZES}')


def testg_path(data_root: str, gallery_size: int) -> str:
    """Path of ``TestG{gallery_size}.mat``, with a clear error when the
    size is unknown or its file is absent."""
    _check_gallery_size(gallery_size)
    check_cuhk_root(data_root)
    path = osp.join(data_root, PROTOCOL_DIR, testg_file(gallery_size))
    if not osp.isfile(path):
        present = [
            n for n in CUHK_GALLERY_SIZES
            if osp.isfile(osp.join(data_root, PROTOCOL_DIR, testg_file(n)))
        ]
        raise FileNotFoundError(
            f'{path} does not exist: gallery size {gallery_size} is not '
            f'available under {data_root} (the TestG files present give '
            f'gallery sizes {present}); expected the released '
            f'{testg_file(gallery_size)}')
    return path


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    x, y, w, h = xywh
    return np.array([x, y, x + w, y + h], dtype=np.float32)


class _Labeller:
    """Marks the boxes of Images.mat with person ids, by exact box match."""

    def __init__(self, images: Dict[str, np.ndarray], names: Sequence[str],
                 images_path: str, split_desc: str) -> None:
        self.images = images
        self.images_path = images_path
        self.split_desc = split_desc
        self.names = set(names)
        self.ids = {n: np.full(len(images[n]), -1, np.int64) for n in names}
        self.index: Dict[str, Dict[Tuple[int, ...], int]] = {}

    def _box_index(self, name: str) -> Dict[Tuple[int, ...], int]:
        if name not in self.index:
            idx: Dict[Tuple[int, ...], int] = {}
            for i, b in enumerate(self.images[name]):
                idx.setdefault(_box_key(b), i)
            self.index[name] = idx
        return self.index[name]

    def mark(self, name: str, xywh: np.ndarray, pid: int, source: str,
             who: str) -> None:
        if name not in self.names:
            raise ValueError(
                f'{source}: {who} is in image {name!r}, which is not a '
                f'{self.split_desc} image')
        i = self._box_index(name).get(_box_key(xywh))
        if i is None:
            raise ValueError(
                f'{source}: the box [x, y, w, h] = {xywh.tolist()} of {who} '
                f'in {name!r} matches no box of that image in '
                f'{self.images_path} (boxes with w or h <= 0 are dropped); '
                f'the image has {self.images[name].tolist()}')
        old = self.ids[name][i]
        if old not in (-1, pid):
            raise ValueError(
                f'{source}: the box {xywh.tolist()} in {name!r} is labelled '
                f'as two persons (ids {old} and {pid}; {who})')
        self.ids[name][i] = pid

    def mark_query(self, entry, pid: int, source: str, who: str,
                   pool_desc: str) -> List[Tuple[str, Optional[np.ndarray]]]:
        """Mark a TestG-style entry (its query box and the boxes of its
        gallery list) with ``pid``; returns the gallery list with x1y1x2y2
        boxes (None where the image does not show the query)."""
        self.mark(entry.imname, entry.xywh, pid, source, f'the query {who}')
        gallery = []
        for imname, xywh in entry.gallery:
            if xywh is not None:
                self.mark(imname, xywh, pid, source,
                          f'the gallery person of {who}')
            elif imname not in self.names:
                raise ValueError(
                    f'{source}: the gallery of {who} lists {imname!r}, which '
                    f'is not a test image of {pool_desc}')
            gallery.append((imname, None if xywh is None else _xyxy(xywh)))
        return gallery


@dataclass
class _ImageAnn:
    img_id: str
    boxes: np.ndarray  # float32 (n, 4) x1y1x2y2
    person_ids: np.ndarray  # int64 (n,)


@dataclass
class _QueryAnn:
    img_id: str
    box: np.ndarray  # float32 (4,) x1y1x2y2
    person_id: int
    gallery: List[Tuple[str, Optional[np.ndarray]]]


def check_cuhk_root(data_root: str) -> None:
    """Refuse a missing data root, or one that holds PRW."""
    check_data_root(
        data_root,
        'CUHK-SYSU',
        'Image/SSM/ and annotation/',
        own=(ANNO_DIR, 'Image'),
        others={
            'PRW': ('prw', ('frame_test.mat', 'frame_train.mat', 'annotations',
                            'frames'))
        })


def _paths(data_root: str) -> Dict[str, str]:
    check_cuhk_root(data_root)
    return dict(
        images=osp.join(data_root, ANNO_DIR, IMAGES_FILE),
        pool=osp.join(data_root, ANNO_DIR, POOL_FILE),
        train=osp.join(data_root, PROTOCOL_DIR, TRAIN_FILE))


def cuhk_train_annotations(data_root: str) -> List[_ImageAnn]:
    """Train images (Images.mat minus pool.mat, Images.mat order), ids
    0..K-1 in the cell order of Train.mat, -1 for unlabeled persons."""
    p = _paths(data_root)
    images = _parse_images(p['images'])
    pool = set(_parse_pool(p['pool']))
    missing = pool - set(images)
    if missing:
        raise ValueError(f'{p["pool"]} lists images that {p["images"]} does '
                         f'not have, e.g. {sorted(missing)[:3]}')
    names = [n for n in images if n not in pool]
    labeller = _Labeller(images, names, p['images'],
                         'training (Images.mat minus pool.mat)')
    for k, (idname, scenes) in enumerate(_parse_train(p['train'])):
        for imname, xywh in scenes:
            labeller.mark(imname, xywh, k, p['train'],
                          f'Train{{{k + 1}}} ({idname})')
    return [_ImageAnn(n, _xyxy_all(images[n]), labeller.ids[n]) for n in names]


def _xyxy_all(xywh: np.ndarray) -> np.ndarray:
    out = np.asarray(xywh, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 2:] += out[:, :2]
    return out


def cuhk_test_annotations(
        data_root: str,
        gallery_size: int = 100) -> Tuple[List[_ImageAnn], List[_QueryAnn]]:
    """Gallery images (pool.mat order) and queries (TestG order).

    Query i gets person id i; the boxes of its gallery list (and the query
    box in its own image) are marked with that id; every other gallery box
    is unlabeled (-1).
    """
    p = _paths(data_root)
    tpath = testg_path(data_root, gallery_size)
    images = _parse_images(p['images'])
    pool = _parse_pool(p['pool'])
    missing = [n for n in pool if n not in images]
    if missing:
        raise ValueError(f'{p["pool"]} lists images that {p["images"]} does '
                         f'not have, e.g. {missing[:3]}')
    labeller = _Labeller(images, pool, p['images'], 'test (pool.mat) gallery')
    queries = []
    for i, entry in enumerate(_parse_testg(tpath, gallery_size)):
        who = f'TestG{gallery_size}({i + 1}) ({entry.idname})'
        gallery = labeller.mark_query(entry, i, tpath, who, p['pool'])
        queries.append(_QueryAnn(entry.imname, _xyxy(entry.xywh), i, gallery))
    gallery_anns = [
        _ImageAnn(n, _xyxy_all(images[n]), labeller.ids[n]) for n in pool
    ]
    return gallery_anns, queries


def load_cuhk_protocol(data_root: str,
                       gallery_size: int = 100) -> SearchProtocol:
    """The CUHK-SYSU evaluation protocol at one gallery size.

    Args:
        data_root (str): The dataset folder (holding ``Image/`` and
            ``annotation/``).
        gallery_size (int): One of 50, 100, 500, 1000, 2000, 4000.

    Returns:
        SearchProtocol: ``gallery`` holds every image of ``pool.mat`` with
        all its boxes and ids; ``queries[i]`` is entry i of
        ``TestG{gallery_size}.mat`` with person id i and its gallery list
        ``(img_id, gt box x1y1x2y2 or None)`` in file order.
    """
    gallery_anns, query_anns = cuhk_test_annotations(data_root, gallery_size)
    gallery = {
        a.img_id: GalleryImage(a.img_id, a.boxes.copy(), a.person_ids.copy())
        for a in gallery_anns
    }
    queries = [
        Query(q.img_id, q.box.copy(), q.person_id, -1,
              [(n, None if b is None else b.copy()) for n, b in q.gallery])
        for q in query_anns
    ]
    return SearchProtocol('cuhk', gallery, queries, gallery_size)


@DATASETS.register_module()
class CUHKSYSUDataset(BaseDetDataset):
    """CUHK-SYSU person search dataset, read from its released .mat files.

    Xiao et al., "Joint Detection and Identification Feature Learning for
    Person Search", CVPR 2017 (the file formats of the release).

    Every data info holds ``img_path``, ``img_id`` (e.g. ``'s22.jpg'``),
    ``height``, ``width`` (read from the image header), ``split`` and
    ``instances`` (``bbox`` x1y1x2y2, ``bbox_label`` 0, ``person_id``,
    ``ignore_flag`` 0).

    - ``train``: Images.mat minus pool.mat; ids 0..5531 in the cell order of
      Train.mat, -1 for unlabeled persons.
    - ``gallery``: the images of pool.mat; the boxes listed for query i in
      ``TestG{gallery_size}.mat`` have id i, all others -1.
    - ``query``: one info per TestG entry holding exactly the query box with
      id i (so the same person has the same id in the query and gallery
      splits) and ``query_index`` i.

    Boxes with w or h <= 0 in Images.mat are dropped.

    Args:
        data_root (str): The dataset folder (holding ``Image/SSM`` and
            ``annotation``).
        split (str): ``'train'``, ``'gallery'`` or ``'query'``.
        gallery_size (int): Which ``TestG{N}.mat`` defines the test ids, one
            of 50, 100, 500, 1000, 2000, 4000. Default 100.
        **kwargs: mmdet ``BaseDetDataset`` options (``pipeline``,
            ``test_mode``, ``filter_cfg`` with ``filter_empty_gt`` /
            ``min_size``, ``serialize_data``, ``lazy_init`` ...).
    """
    METAINFO = {'classes': ('person', ), 'palette': [(220, 20, 60)]}

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 gallery_size: int = 100,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split={split!r} is not a CUHK-SYSU split; '
                             f'expected one of {SPLITS}')
        _check_gallery_size(gallery_size)
        self.split = split
        self.gallery_size = gallery_size
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root
        check_cuhk_root(root)
        require_file(
            osp.join(root, ANNO_DIR, IMAGES_FILE),
            'the CUHK-SYSU annotation Images.mat (is data_root the '
            'dataset folder holding Image/ and annotation/?)')
        if self.split == 'train':
            anns = cuhk_train_annotations(root)
            queries = None
        else:
            anns, queries = cuhk_test_annotations(root, self.gallery_size)
        src = osp.join(root, ANNO_DIR, IMAGES_FILE)
        data_list = []
        if self.split in ('train', 'gallery'):
            for a in anns:
                data_list.append(
                    image_data_info(
                        osp.join(root, IMAGE_DIR, a.img_id), a.img_id,
                        self.split, a.boxes, a.person_ids, src))
        else:
            src = osp.join(root, PROTOCOL_DIR, testg_file(self.gallery_size))
            for i, q in enumerate(queries):
                data_list.append(
                    image_data_info(
                        osp.join(root, IMAGE_DIR, q.img_id),
                        q.img_id,
                        'query',
                        q.box[None], [q.person_id],
                        f'{src} query {i + 1}',
                        query_index=i))
        return data_list

    def filter_data(self) -> List[dict]:
        return filter_data_infos(self.data_list, self.filter_cfg,
                                 self.test_mode)
