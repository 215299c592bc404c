# Copyright (c) mmpsearch contributors. All rights reserved.
"""The PRW release writer of the synthetic scenes.

Folder, file and variable names come from the reader
(:mod:`mmpsearch.datasets.prw`), so what is written here is what it reads.
"""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..mat_utils import mat_cell, mat_num
from ..prw import (ANNOTATION_SUFFIX, ANNOTATIONS_DIR, BOX_KEYS, FRAME_LISTS,
                   FRAMES_DIR, ID_TEST_FILE, ID_TEST_VAR, ID_TRAIN_FILE,
                   ID_TRAIN_VAR, QUERY_FILE, UNLABELED_ID)
from .render import (assign_ids, identity_looks, render_background,
                     render_scene, scene_people, split_identities, write_image,
                     write_mat)


def make_prw(out_dir: str, num_images: int, num_ids: int, seed: int,
             image_size: Tuple[int, int]) -> dict:
    """Render ``num_images`` frames of six cameras showing ``num_ids``
    identities and write them in the PRW release layout; see
    :func:`make_synthetic`.

    Returns:
        dict: Counts of what was written.
    """
    W, H = image_size
    cams = 6
    if num_images < 4 * cams:
        raise ValueError(f'num_images={num_images} is too small for 6 '
                         'cameras; use num_images >= 24')
    n_train_ids, _ = split_identities(num_ids)
    rng = np.random.default_rng([seed, 2])
    looks_list = identity_looks(rng, num_ids)
    # original ids 1..K, train and test ids interleaved (as in the release)
    idnums = [int(v) for v in rng.permutation(num_ids) + 1]
    looks = {pid: looks_list[k] for k, pid in enumerate(idnums)}
    train_ids, test_ids = sorted(idnums[:n_train_ids]), sorted(
        idnums[n_train_ids:])
    visits = {
        pid:
        sorted(
            int(c) + 1 for c in rng.choice(
                cams, size=int(rng.integers(2, 5)), replace=False))
        for pid in idnums
    }
    # frames: camera, sequence, frame number; then a train / test split
    frames: List[Tuple[str, int]] = []
    for c in range(1, cams + 1):
        n_c = num_images // cams + (c <= num_images % cams)
        num = int(rng.integers(100, 400))
        for j in range(n_c):
            num += int(rng.integers(20, 150))
            frames.append((f'c{c}s{1 + j // 40}_{num:06d}', c))
    is_test = {}
    for c in range(1, cams + 1):
        fc = [f for f, cc in frames if cc == c]
        flags = np.zeros(len(fc), bool)
        flags[rng.permutation(len(fc))[:len(fc) // 2]] = True
        is_test.update(zip(fc, flags.tolist()))

    content: Dict[str, List[int]] = {}
    for split_ids, test in ((train_ids, False), (test_ids, True)):
        for c in range(1, cams + 1):
            here = [p for p in split_ids if c in visits[p]]
            fc = [f for f, cc in frames if cc == c and is_test[f] == test]
            content.update(zip(fc, assign_ids(rng, len(fc), here, 8)))

    bg_cam = {
        c: render_background(np.random.default_rng([seed, 3, c]), W, H)
        for c in range(1, cams + 1)
    }
    records: Dict[str, List[Tuple[List[int], Optional[int]]]] = {}
    for k, (frame, c) in enumerate(frames):
        irng = np.random.default_rng([seed, 4, k])
        bg = bg_cam[c].astype(np.int16) + int(irng.integers(-12, 13))
        bg = np.clip(bg, 0, 255).astype(np.uint8)
        img, placed = render_scene(
            irng, bg, scene_people(irng, looks, content[frame]), cut_left=0.06)
        write_image(osp.join(out_dir, FRAMES_DIR, f'{frame}.jpg'), img)
        records[frame] = [(list(p.box), p.key) for p in placed]

    # As in the release, the boxes are under one of the reader's BOX_KEYS,
    # some frames also holding an older round under another key.
    box_new, anno_file, anno_previous = BOX_KEYS
    names = sorted(f for f, _ in frames)
    for k, frame in enumerate(names):
        arr = np.array([[UNLABELED_ID if pid is None else pid] + box
                        for box, pid in records[frame]], np.float64)
        stale = arr.copy()
        stale[:, 1:3] += 7  # an older, shifted annotation round
        if k % 10 == 3:
            mdict = {anno_file: arr}
        elif k % 10 == 6:
            mdict = {anno_previous: arr}
        elif k % 10 == 8:
            mdict = {anno_file: arr, anno_previous: stale}
        elif k % 20 == 11:
            mdict = {box_new: arr, anno_file: stale}
        else:
            mdict = {box_new: arr}
        write_mat(
            osp.join(out_dir, ANNOTATIONS_DIR, f'{frame}{ANNOTATION_SUFFIX}'),
            mdict)
    train_frames = [f for f in names if not is_test[f]]
    test_frames = [f for f in names if is_test[f]]
    for split, split_frames in (('train', train_frames), ('test',
                                                          test_frames)):
        fname, var = FRAME_LISTS[split]
        write_mat(osp.join(out_dir, fname), {var: mat_cell(split_frames)})
    present_train = sorted({
        pid
        for f in train_frames
        for _, pid in records[f] if pid is not None
    })
    write_mat(
        osp.join(out_dir, ID_TRAIN_FILE),
        {ID_TRAIN_VAR: mat_num(present_train)})
    write_mat(
        osp.join(out_dir, ID_TEST_FILE), {ID_TEST_VAR: mat_num(test_ids)})

    # queries: per test id, its first appearance in up to two cameras
    lines = []
    for pid in test_ids:
        where = [(f, box) for f in test_frames for box, p in records[f]
                 if p == pid]
        cams_seen = sorted({int(f[1]) for f, _ in where})
        if len(where) < 2:
            raise ValueError(
                f'num_ids={num_ids} is too many for num_images={num_images}: '
                f'test identity {pid} appears in {len(where)} test frame(s); '
                'a query needs at least one more')
        for c in cams_seen[:2]:
            f, (x, y, w, h) = next((f, b) for f, b in where if int(f[1]) == c)
            lines.append(f'{pid} {x:.4f} {y:.4f} {w:.4f} {h:.4f} {f}\r\n')
    with open(osp.join(out_dir, QUERY_FILE), 'w', newline='') as fh:
        fh.write(''.join(lines))
    return dict(
        format='prw',
        out_dir=out_dir,
        num_images=len(frames),
        num_train_images=len(train_frames),
        num_gallery_images=len(test_frames),
        num_train_ids=len(present_train),
        num_queries=len(lines),
        num_boxes=sum(len(r) for r in records.values()))
