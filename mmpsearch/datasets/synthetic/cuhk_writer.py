# Copyright (c) mmpsearch contributors. All rights reserved.
"""The CUHK-SYSU release writer of the synthetic scenes.

Folder, file and variable names come from the readers
(:mod:`mmpsearch.datasets.cuhk_sysu`, :mod:`mmpsearch.datasets.cuhk_subsets`),
so what is written here is what they read.
"""
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cuhk_subsets import SUBSET_DIR, SUBSET_FILES
from ..cuhk_sysu import (ANNO_DIR, CUHK_GALLERY_SIZES, IMAGE_DIR, IMAGES_FILE,
                         IMAGES_VAR, PERSON_FILE, PERSON_VAR, POOL_FILE,
                         POOL_VAR, PROTOCOL_DIR, TRAIN_FILE, TRAIN_VAR,
                         testg_file, testg_var)
from ..mat_utils import MAT_EMPTY, mat_cell, mat_num, mat_struct
from .captions import SCENES_FILE, describe_look, grey_name
from .render import (assign_ids, identity_looks, render_background,
                     render_scene, scene_people, split_identities, write_image,
                     write_mat)

# The query subsets of CUHK-SYSU (annotation/test/subset): a query is
# "occluded" when the box of a person nearer the camera covers at least this
# share of its box, "low resolution" when its box is lower than this share
# of the image height.
OCCLUSION_MIN_SHARE = 0.15
LOW_RES_MAX_HEIGHT = 0.28
# The released subsets list this many gallery images per query.
SUBSET_GALLERY_SIZE = 100

# The struct fields written (as released; the readers read some of them).
IMAGE_FIELDS = ('imname', 'nAppear', 'box')  # Images.mat: Img
BOX_FIELDS = ('idlocate', 'ishard')  # Img(i).box
PERSON_FIELDS = ('idname', 'nAppear', 'scene')  # Person.mat, Train.mat
SCENE_FIELDS = ('imname', 'idlocate', 'ishard')  # a person's scenes
ENTRY_FIELDS = ('Query', 'Gallery')  # TestG{N}, the subsets
QUERY_FIELDS = ('imname', 'idlocate', 'ishard', 'idname')
GALLERY_FIELDS = ('imname', 'idlocate', 'ishard')

#: A query's record while writing: (image, box, ishard, the other
#: appearances [(image, box, ishard)], the other gallery images shuffled).
QueryLists = Tuple[str, List[int], int, List[Tuple[str, List[int], int]],
                   List[str]]


def make_cuhk(out_dir: str,
              num_images: int,
              num_ids: int,
              seed: int,
              image_size: Tuple[int, int],
              describe: bool = False) -> dict:
    """Render ``num_images`` scenes of ``num_ids`` identities and write them
    in the CUHK-SYSU release layout; see :func:`make_synthetic`.

    With ``describe``, also ``scenes.json``: what the renderer drew in each
    image (see :func:`_scene_record`); every other file is the same.

    Returns:
        dict: Counts of what was written.
    """
    W, H = image_size
    n_test = num_images // 2
    if n_test < 101:
        raise ValueError(
            f'num_images={num_images} gives a gallery of {n_test} images; '
            'TestG100 needs at least 101 (the query image plus 100), so use '
            'num_images >= 202')
    n_train_ids, _ = split_identities(num_ids)
    rng = np.random.default_rng([seed, 0])
    looks_list = identity_looks(rng, num_ids)
    idnums = [int(v) for v in rng.permutation(num_ids) + 1]  # p1..pK
    looks = {pid: looks_list[k] for k, pid in enumerate(idnums)}
    train_ids, test_ids = idnums[:n_train_ids], idnums[n_train_ids:]
    names = [f's{i + 1}.jpg' for i in range(num_images)]
    order = rng.permutation(num_images)
    pool = [names[i] for i in order[:n_test]]
    pool_set = set(pool)
    train_names = [n for n in names if n not in pool_set]
    content = dict(
        zip(train_names, assign_ids(rng, len(train_names), train_ids, 20)))
    content.update(zip(pool, assign_ids(rng, len(pool), test_ids, 10)))
    seen = {i: 0 for i in test_ids}
    for n in pool:
        for i in content[n]:
            seen[i] += 1
    if min(seen.values()) < 2:
        raise ValueError(
            f'num_ids={num_ids} is too many for num_images={num_images}: '
            'some test identity appears in fewer than 2 gallery images')

    # Render every image; records: name -> [(xywh, pid or None, ishard)].
    records: Dict[str, List[Tuple[List[int], Optional[int], int]]] = {}
    scenes: List[dict] = []
    for k, name in enumerate(names):
        irng = np.random.default_rng([seed, 1, k])
        bg_info: dict = {}
        background = render_background(irng, W, H, bg_info)
        people = scene_people(irng, looks, content[name])
        img, placed = render_scene(irng, background, people)
        if describe:
            scenes.append(
                _scene_record(name, name in pool_set, bg_info, people, placed))
        write_image(osp.join(out_dir, IMAGE_DIR, name), img)
        recs = [(list(p.box), p.key, int(irng.random() < 0.1)) for p in placed]
        if irng.random() < 0.05:  # the release holds a few w or h = 0 boxes
            x, y = int(irng.integers(0, W - 10)), int(irng.integers(0, H - 10))
            recs.append(([x, y, 0, int(irng.integers(5, 40))], None, 0))
        records[name] = recs

    appear: Dict[int, List[Tuple[str, List[int], int]]] = {}
    for name in train_names + pool:  # Train / TestG orders follow these
        for xywh, pid, hard in records[name]:
            if pid is not None:
                appear.setdefault(pid, []).append((name, xywh, hard))

    anno = osp.join(out_dir, ANNO_DIR)
    proto = osp.join(out_dir, PROTOCOL_DIR)
    write_mat(
        osp.join(anno, IMAGES_FILE), {
            IMAGES_VAR:
            mat_struct(IMAGE_FIELDS,
                       [(n, mat_num(len(records[n])),
                         mat_struct(BOX_FIELDS, [(mat_num(b), mat_num(hd))
                                                 for b, _, hd in records[n]]))
                        for n in names])
        })
    write_mat(osp.join(anno, POOL_FILE), {POOL_VAR: mat_cell(pool)})

    def person(pid: int) -> np.ndarray:
        sc = appear[pid]
        return mat_struct(
            PERSON_FIELDS,
            [(f'p{pid}', mat_num(len(sc)),
              mat_struct(SCENE_FIELDS, [(n, mat_num(b), mat_num(hd))
                                        for n, b, hd in sc]))])

    all_ids = sorted(appear)
    write_mat(
        osp.join(anno, PERSON_FILE),
        {PERSON_VAR: np.concatenate([person(p) for p in all_ids], axis=1)})
    train_present = [p for p in train_ids if p in appear]
    write_mat(
        osp.join(proto, TRAIN_FILE),
        {TRAIN_VAR: mat_cell([person(p) for p in train_present])})

    # Gallery lists: the images holding the query, then distractors.
    query_order = [test_ids[k] for k in rng.permutation(len(test_ids))]
    sizes = [g for g in CUHK_GALLERY_SIZES if g <= n_test - 1]
    lists: Dict[int, QueryLists] = {}
    for pid in query_order:
        (qn, qb, qh), *pos = appear[pid]
        holders = {qn} | {n for n, _, _ in pos}
        others = [n for n in pool if n not in holders]
        others = [others[k] for k in rng.permutation(len(others))]
        lists[pid] = (qn, qb, qh, pos, others)
    for g in sizes:
        rows = [_test_entry(pid, lists[pid], g) for pid in query_order]
        write_mat(
            osp.join(proto, testg_file(g)),
            {testg_var(g): mat_struct(ENTRY_FIELDS, rows)})
    subsets = write_cuhk_subsets(out_dir, query_order, lists, records, H)
    if describe:
        with open(osp.join(out_dir, SCENES_FILE), 'w') as f:
            json.dump(dict(format='cuhk', images=scenes), f, indent=1)
    return dict(
        format='cuhk',
        out_dir=out_dir,
        num_images=num_images,
        num_train_images=len(train_names),
        num_gallery_images=len(pool),
        num_train_ids=len(train_present),
        num_queries=len(query_order),
        num_boxes=sum(len(r) for r in records.values()),
        gallery_sizes=sizes,
        subsets=subsets)


def _scene_record(name: str, in_pool: bool, bg_info: dict, people: list,
                  placed: list) -> dict:
    """One image of ``scenes.json``: its name, ``split`` ('train' or
    'gallery', i.e. in pool.mat), the ``wall`` and ``ground`` colour names,
    and per drawn person (annotation order) its ``box`` [x, y, w, h] as in
    Images.mat, ``pid`` (the number of ``p{pid}``, None for a passer-by)
    and its clothing words (:func:`.captions.describe_look`)."""
    persons = []
    for (look, key), p in zip(people, placed):
        persons.append(
            dict(
                box=[int(v) for v in p.box],
                pid=key,
                **describe_look(look, labeled=key is not None)))
    return dict(
        imname=name,
        split='gallery' if in_pool else 'train',
        wall=grey_name(bg_info['wall']),
        ground=grey_name(bg_info['ground']),
        persons=persons)


def _test_entry(pid: int, lists: QueryLists,
                size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The (Query, Gallery) structs of one query with a gallery list of
    ``size`` images: those that hold the query, then distractors."""
    qn, qb, qh, pos, others = lists
    query = mat_struct(QUERY_FIELDS,
                       [(qn, mat_num(qb), mat_num(qh), f'p{pid}')])
    gal = [(n, mat_num(b), mat_num(hd)) for n, b, hd in pos]
    gal += [(n, MAT_EMPTY, MAT_EMPTY) for n in others[:size - len(pos)]]
    return query, mat_struct(GALLERY_FIELDS, gal)


def occlusion_share(box: Sequence[float],
                    others: Sequence[Sequence[float]]) -> float:
    """The largest share of ``box`` [x, y, w, h] covered by one of the
    boxes ``others`` whose bottom edge is lower in the image (a person
    nearer the camera, drawn over it: scenes are painted far to near)."""
    x, y, w, h = (float(v) for v in box)
    best = 0.0
    for ox, oy, ow, oh in others:
        if ow <= 0 or oh <= 0 or oy + oh <= y + h:
            continue
        ix = min(x + w, ox + ow) - max(x, ox)
        iy = min(y + h, oy + oh) - max(y, oy)
        if ix > 0 and iy > 0:
            best = max(best, ix * iy / (w * h))
    return best


def write_cuhk_subsets(out_dir: str, query_order: Sequence[int],
                       lists: Dict[int, QueryLists], records: dict,
                       height: int) -> Dict[str, int]:
    """``annotation/test/subset/{Occlusion,Resolution}.mat`` in the
    released nesting (``Occlusion1``: Query, Gallery, occlusion;
    ``Test_Size``: Query, Gallery), their entries in TestG order, each with
    the query's TestG100 gallery list (the released subsets list 100 images
    per query). Occlusion: queries whose :func:`occlusion_share` reaches
    ``OCCLUSION_MIN_SHARE`` (the share is the ``occlusion`` field);
    resolution: queries whose box is lower than ``LOW_RES_MAX_HEIGHT`` times
    the image height. A subset without any query is not written. Draws no
    random numbers, so the other files do not change."""
    occ, low = [], []
    for pid in query_order:
        qn, qb = lists[pid][:2]
        query, gallery = _test_entry(pid, lists[pid], SUBSET_GALLERY_SIZE)
        share = occlusion_share(qb, [b for b, p, _ in records[qn] if p != pid])
        if share >= OCCLUSION_MIN_SHARE:
            occ.append((query, gallery, mat_num(share)))
        if qb[3] < LOW_RES_MAX_HEIGHT * height:
            low.append((query, gallery))
    # Occlusion1 has a third field: the share of the query covered
    for name, entries, fields in (('occlusion', occ,
                                   ENTRY_FIELDS + ('occlusion', )),
                                  ('resolution', low, ENTRY_FIELDS)):
        if entries:
            fname, var = SUBSET_FILES[name]
            write_mat(
                osp.join(out_dir, SUBSET_DIR, fname),
                {var: mat_struct(fields, entries)})
    return dict(occlusion=len(occ), resolution=len(low))
