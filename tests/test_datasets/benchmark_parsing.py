# Copyright (c) mmpsearch contributors. All rights reserved.
"""Benchmark (not a test): parse annotation files of the real datasets' size.

Writes CUHK-SYSU-sized (18,184 images, 5 boxes each, 6,978 gallery images,
5,532 training identities, 2,900 queries x gallery size) and PRW-sized
(11,816 annotation files) trees without images, in the released nesting,
then prints how long the parsers and protocol loaders take, from scratch and
from the in-process cache::

    python -m tests.test_datasets.benchmark_parsing /tmp/bench \
        --gallery-size 100
"""
import argparse
import os
import os.path as osp
import time

import numpy as np
from scipy.io import savemat

from mmpsearch.datasets import (clear_cache, cuhk_sysu, load_cuhk_protocol,
                                load_prw_protocol, prw)
from mmpsearch.testing.released_trees import EMPTY, cell, num, struct


def write_cuhk(root: str, gallery_size: int) -> None:
    rng = np.random.default_rng(0)
    n_img, n_pool, n_query = 18184, 6978, 2900
    names = [f's{i + 1}.jpg' for i in range(n_img)]
    boxes = {
        n: [[150 * j + int(x), 10, 30, 80]
            for j, x in enumerate(rng.integers(0, 100, 5))]
        for n in names
    }
    anno = osp.join(root, 'annotation')
    proto = osp.join(anno, 'test', 'train_test')
    os.makedirs(proto, exist_ok=True)
    savemat(
        osp.join(anno, 'Images.mat'), {
            'Img':
            struct(('imname', 'nAppear', 'box'),
                   [(n, num(5),
                     struct(('idlocate', 'ishard'), [(num(b), num(0))
                                                     for b in boxes[n]]))
                    for n in names])
        })
    pool, train = names[-n_pool:], names[:-n_pool]
    savemat(osp.join(anno, 'pool.mat'), {'pool': cell(pool)})
    savemat(
        osp.join(proto, 'Train.mat'), {
            'Train':
            cell([
                struct(
                    ('idname', 'nAppear', 'scene'),
                    [(f'p{k}', num(2),
                      struct(
                          ('imname', 'idlocate', 'ishard'),
                          [(train[(2 * k + j) % len(train)],
                            num(boxes[train[(2 * k + j) % len(train)]][j]),
                            num(0))
                           for j in range(2)]))]) for k in range(5532)
            ])
        })
    rows = []
    for q in range(n_query):
        qn, pos = pool[q], pool[q + 1]
        gal = [(pos, num(boxes[pos][3]), num(0))]
        gal += [(pool[(q + 2 + j) % n_pool], EMPTY, EMPTY)
                for j in range(gallery_size - 1)]
        rows.append((struct(('imname', 'idlocate', 'ishard', 'idname'),
                            [(qn, num(boxes[qn][2]), num(0), f'p{q}')]),
                     struct(('imname', 'idlocate', 'ishard'), gal)))
    savemat(
        osp.join(proto, f'TestG{gallery_size}.mat'),
        {f'TestG{gallery_size}': struct(('Query', 'Gallery'), rows)})


def write_prw(root: str) -> None:
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    frames = [f'c{1 + i % 6}s1_{i:06d}' for i in range(11816)]
    for i, f in enumerate(frames):
        rows = [[1 + (i + j) % 932 if j < 3 else -2, 100 * j, 10, 40, 100]
                for j in range(4)]
        savemat(
            osp.join(root, 'annotations', f'{f}.jpg.mat'),
            {'box_new': np.asarray(rows, np.float64)})
    savemat(
        osp.join(root, 'frame_train.mat'),
        {'img_index_train': cell(frames[:5704])})
    savemat(
        osp.join(root, 'frame_test.mat'),
        {'img_index_test': cell(frames[5704:])})
    with open(osp.join(root, 'query_info.txt'), 'w', newline='') as fh:
        fh.write(''.join(f'{1 + (i % 932)} 0 10 40 100 {f}\r\n'
                         for i, f in enumerate(frames[5704:7761])))


def timed(what: str, fn) -> None:
    start = time.perf_counter()
    fn()
    print(f'{what:<48s} {time.perf_counter() - start:7.2f} s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('out', help='scratch folder')
    parser.add_argument('--gallery-size', type=int, default=100)
    args = parser.parse_args()
    g = args.gallery_size
    cuhk_root, prw_root = osp.join(args.out, 'cuhk'), osp.join(args.out, 'prw')
    timed('write CUHK-SYSU-sized annotations',
          lambda: write_cuhk(cuhk_root, g))
    timed('write PRW-sized annotations', lambda: write_prw(prw_root))
    clear_cache()
    timed(f'CUHK load_cuhk_protocol({g}), from scratch',
          lambda: load_cuhk_protocol(cuhk_root, g))
    timed(f'CUHK load_cuhk_protocol({g}), cached .mat',
          lambda: load_cuhk_protocol(cuhk_root, g))
    timed('CUHK train annotations (Images.mat cached)',
          lambda: cuhk_sysu.cuhk_train_annotations(cuhk_root))
    clear_cache()
    timed('PRW load_prw_protocol, from scratch',
          lambda: load_prw_protocol(prw_root))
    timed('PRW train annotations', lambda: prw.prw_train_annotations(prw_root))
    timed('PRW load_prw_protocol, cached', lambda: load_prw_protocol(prw_root))


if __name__ == '__main__':
    main()
