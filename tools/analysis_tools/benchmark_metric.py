# Copyright (c) mmpsearch contributors. All rights reserved.
"""Time the person-search protocol on results of full size.

Synthetic protocols and results of the size of the real test sets are built
in memory (no dataset needed):

- CUHK-SYSU: 6,978 gallery images (~5 persons and ~5 detections each),
  2,900 queries with a gallery of 100 images, embeddings of width 256;
- PRW: 6,112 frames from 6 cameras (~7 persons and ~7 detections each),
  450 test ids, 2,057 queries searched in every other frame.

    python tools/analysis_tools/benchmark_metric.py [--dim 256] [--repeat 1]

prints the time of scoring each (validation, search mAP / top-k and
detection AP / recall included) and a breakdown, then the time of the same
scoring with CBGM re-ranking (SeqNet's k1 / k2: 10 / 3 on CUHK-SYSU, 30 / 4
on PRW, whose standard and cross-camera searches are both re-ranked) and
its ratio to the plain one.
"""
import argparse
import time
import warnings

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument(
        '--repeat',
        type=int,
        default=1,
        help='report the best of this many runs')
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.datasets.protocol import GalleryImage  # noqa: E402
from mmpsearch.datasets.protocol import Query, SearchProtocol  # noqa: E402
from mmpsearch.evaluation.functional import eval_detection  # noqa: E402
from mmpsearch.evaluation.functional import eval_search_cuhk  # noqa: E402
from mmpsearch.evaluation.functional import eval_search_prw  # noqa: E402
from mmpsearch.evaluation.functional import evaluate_person_search  # noqa
from mmpsearch.evaluation.functional import pack_gallery_detections  # noqa


def _boxes(rng, n):
    x1 = rng.uniform(0, 1500, n)
    y1 = rng.uniform(0, 600, n)
    w = rng.uniform(20, 200, n)
    h = w * rng.uniform(1.8, 3.0, n)
    return np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)


def _detections(rng, gt_boxes, gt_pids, protos, dim, n_extra):
    """Jittered detections of the persons plus a few false alarms, with
    embeddings near the identity's prototype."""
    n = gt_boxes.shape[0]
    found = rng.random(n) < 0.92
    wh = np.concatenate([gt_boxes[:, 2:] - gt_boxes[:, :2]] * 2, 1)
    boxes = gt_boxes + (rng.normal(0, 0.06, (n, 4)) * wh).astype(np.float32)
    boxes = np.concatenate([boxes[found], _boxes(rng, n_extra)])
    pids = np.concatenate([gt_pids[found], np.full(n_extra, -1)])
    scores = np.concatenate([
        rng.uniform(0.55, 1.0, int(found.sum())),
        rng.uniform(0.05, 0.8, n_extra)
    ]).astype(np.float32)
    emb = rng.standard_normal((pids.size, dim)).astype(np.float32)
    lab = pids >= 0
    emb[lab] = emb[lab] * 0.08 + protos[pids[lab]]
    return dict(bboxes=boxes, scores=scores, embeddings=emb)


def make_cuhk(seed=0, n_img=6978, n_query=2900, gallery_size=100, dim=256):
    rng = np.random.default_rng(seed)
    n_person = 1 + rng.poisson(4.0, n_img)
    protos = rng.standard_normal((n_query, dim)).astype(np.float32) / 16
    img_ids = [f's{i}.jpg' for i in range(n_img)]
    pids = [np.full(k, -1, np.int64) for k in n_person]
    # Each test identity: its query image and 1-4 more images.
    appear = [[] for _ in range(n_query)]
    for p in range(n_query):
        k = int(rng.integers(2, 6))
        for i in rng.choice(n_img, k, replace=False):
            free = np.flatnonzero(pids[i] < 0)
            if free.size:
                pids[i][free[0]] = p
                appear[p].append(int(i))
    gallery, results_gallery = {}, {}
    for i, img_id in enumerate(img_ids):
        boxes = _boxes(rng, n_person[i])
        gallery[img_id] = GalleryImage(img_id, boxes, pids[i])
        results_gallery[img_id] = _detections(rng, boxes, pids[i], protos, dim,
                                              int(rng.integers(0, 3)))
    queries, results_query = [], []
    for p in range(n_query):
        if len(appear[p]) < 2:  # make sure it appears twice
            extra = int(rng.integers(n_img))
            while extra in appear[p]:
                extra = int(rng.integers(n_img))
            g = gallery[img_ids[extra]]
            g.person_ids = np.append(g.person_ids, p)
            g.boxes = np.concatenate([g.boxes, _boxes(rng, 1)])
            appear[p].append(extra)
        q_img = appear[p][0]
        q_box = gallery[img_ids[q_img]].boxes[list(
            gallery[img_ids[q_img]].person_ids).index(p)]
        listed = []
        for i in appear[p][1:]:
            g = gallery[img_ids[i]]
            listed.append((img_ids[i], g.boxes[list(g.person_ids).index(p)]))
        holders = set(appear[p])
        negatives = []
        while len(negatives) < gallery_size - len(listed):
            i = int(rng.integers(n_img))
            if i not in holders:
                holders.add(i)
                negatives.append((img_ids[i], None))
        queries.append(
            Query(img_ids[q_img], q_box.copy(), p, -1, listed + negatives))
        results_query.append(
            dict(
                img_id=img_ids[q_img],
                bbox=q_box.copy(),
                embedding=(protos[p] + 0.08 * rng.standard_normal(dim)).astype(
                    np.float32)))
    protocol = SearchProtocol('cuhk', gallery, queries, gallery_size)
    return dict(gallery=results_gallery, query=results_query), protocol


def make_prw(seed=0, n_img=6112, n_query=2057, n_id=450, n_cam=6, dim=256):
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((n_id, dim)).astype(np.float32) / 16
    gallery, results_gallery = {}, {}
    for i in range(n_img):
        cam = int(rng.integers(1, n_cam + 1))
        img_id = f'c{cam}s1_{i:06d}.jpg'
        n = 1 + int(rng.poisson(6.0))
        pids = np.full(n, -1, np.int64)
        n_lab = int(rng.binomial(n, 0.6))
        pids[:n_lab] = rng.choice(n_id, n_lab, replace=False)
        boxes = _boxes(rng, n)
        gallery[img_id] = GalleryImage(img_id, boxes, pids, cam)
        results_gallery[img_id] = _detections(rng, boxes, pids, protos, dim,
                                              int(rng.integers(0, 3)))
    labeled = [(img_id, j, int(p)) for img_id, g in gallery.items()
               for j, p in enumerate(g.person_ids) if p >= 0]
    queries, results_query = [], []
    for k in rng.choice(len(labeled), n_query, replace=False):
        img_id, j, p = labeled[int(k)]
        g = gallery[img_id]
        queries.append(Query(img_id, g.boxes[j].copy(), p, g.cam_id))
        results_query.append(
            dict(
                img_id=img_id,
                bbox=g.boxes[j].copy(),
                embedding=(protos[p] + 0.08 * rng.standard_normal(dim)).astype(
                    np.float32)))
    protocol = SearchProtocol('prw', gallery, queries)
    return dict(gallery=results_gallery, query=results_query), protocol


def _time(fn, repeat):
    best, out = float('inf'), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    args = parse_args()
    warnings.simplefilter('ignore')

    for name, make in (('CUHK-SYSU (gallery 100)', make_cuhk), ('PRW',
                                                                make_prw)):
        t = time.perf_counter()
        results, protocol = make(dim=args.dim)
        n_det = sum(v['scores'].size for v in results['gallery'].values())
        print(f'{name}: {len(protocol.queries)} queries, '
              f'{len(protocol.gallery)} gallery images, {n_det} detections '
              f'(built in {time.perf_counter() - t:.1f} s)')
        total, metrics = _time(
            lambda: evaluate_person_search(
                results, protocol, cross_camera=protocol.name == 'prw'),
            args.repeat)
        t_pack, pack = _time(
            lambda: pack_gallery_detections(results['gallery'],
                                            list(protocol.gallery)),
            args.repeat)
        q = np.stack([x['embedding'] for x in results['query']])
        if protocol.name == 'cuhk':
            t_search, _ = _time(lambda: eval_search_cuhk(pack, q, protocol),
                                args.repeat)
            t_cross = None
        else:
            t_search, _ = _time(lambda: eval_search_prw(pack, q, protocol),
                                args.repeat)
            t_cross, _ = _time(
                lambda: eval_search_prw(pack, q, protocol, True), args.repeat)
        t_det, _ = _time(lambda: eval_detection(pack, protocol), args.repeat)
        print(f'  full protocol: {total:.2f} s   (pack {t_pack:.2f} s, '
              f'search {t_search:.2f} s' +
              (f', cross-camera search {t_cross:.2f} s' if t_cross is not None
               else '') + f', detection x2 {2 * t_det:.2f} s)')
        print('  ' + '  '.join(f'{k}={100 * v:.2f}'
                               for k, v in metrics.items()))
        t_cbgm, m_cbgm = _time(
            lambda: evaluate_person_search(
                results,
                protocol,
                cross_camera=protocol.name == 'prw',
                cbgm=True), args.repeat)
        print(f'  with CBGM: {t_cbgm:.2f} s   without: {total:.2f} s   '
              f'ratio {t_cbgm / total:.2f}x')
        print('  +CBGM ' + '  '.join(f'{k}={100 * m_cbgm[k]:.2f}'
                                     for k in ('mAP', 'top1', 'top5')))


if __name__ == '__main__':
    main()
