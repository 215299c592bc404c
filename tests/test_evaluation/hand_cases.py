# Copyright (c) mmpsearch contributors. All rights reserved.
"""Tiny hand-made protocols whose numbers are worked out in the tests.

Queries have the embedding (1, 0); a detection's embedding is a
Pythagorean pair, so its similarity is e.g. (3, 4) -> 0.6, (4, 3) -> 0.8,
(12, 5) -> 12/13, (24, 7) -> 0.96, (0, 1) -> 0.
"""
import numpy as np

from mmpsearch.datasets.protocol import GalleryImage, Query, SearchProtocol

SIM = {
    1.0: (1, 0),
    0.96: (24, 7),
    12 / 13: (12, 5),
    0.8: (4, 3),
    0.6: (3, 4),
    0.0: (0, 1),
}


def _f32(x):
    return np.asarray(x, np.float32)


def dets(*items):
    """``(box, similarity, score)`` triples -> a gallery results entry."""
    n = len(items)
    return dict(
        bboxes=_f32([b for b, _, _ in items]).reshape(n, 4),
        embeddings=_f32([SIM[s] for _, s, _ in items]).reshape(n, 2),
        scores=_f32([c for _, _, c in items]).reshape(n))


def image(img_id, boxes=(), pids=(), cam=-1):
    return GalleryImage(img_id,
                        _f32(boxes).reshape(-1, 4),
                        np.asarray(pids, np.int64).reshape(-1), cam)


BIG = [0, 0, 100, 200]
QBOX = [0, 0, 50, 100]


def cuhk_case():
    """Seven CUHK-SYSU-style queries; expected values in EXPECTED_CUHK."""
    gallery = {
        'q.jpg': image('q.jpg', [QBOX], [0]),
        'a.jpg': image('a.jpg', [BIG], [0]),
        'b.jpg': image('b.jpg', [BIG], [0]),
        'c.jpg': image('c.jpg', [[0, 0, 50, 50]], [-1]),
        'd.jpg': image('d.jpg', [[10, 10, 60, 110]], [0]),
        'e.jpg': image('e.jpg', [BIG], [2]),
        'f.jpg': image('f.jpg', [[0, 0, 10, 20]], [3]),
        'g.jpg': image('g.jpg', [BIG], [5]),
        'h.jpg': image('h.jpg', [BIG], [4]),
    }
    res = {
        # The query's own image is not in its gallery list: never scored.
        'q.jpg':
        dets((QBOX, 1.0, 0.99)),
        # The person (sim 0.6) and a false alarm ranked above it.
        'a.jpg':
        dets((BIG, 0.6, 0.9), ([300, 300, 400, 500], 0.96, 0.9)),
        # A miss: the only detection does not overlap the person.
        'b.jpg':
        dets(([300, 0, 400, 200], 12 / 13, 0.8)),
        # No query person; the sim-1 detection scores < 0.5 and is dropped.
        'c.jpg':
        dets(([0, 0, 50, 50], 0.8, 0.7), ([100, 100, 150, 150], 0.0, 0.6),
             ([0, 0, 10, 10], 1.0, 0.4)),
        # Holds the person, but nothing was detected.
        'd.jpg':
        dets(),
        # Two matching detections with the same similarity (a tie).
        'e.jpg':
        dets((BIG, 0.8, 0.9), ([0, 0, 100, 190], 0.8, 0.9)),
        # IoU 0.4 with a 10x20 person: threshold 200/(20*30) = 1/3 -> hit.
        'f.jpg':
        dets(([0, 0, 10, 8], 0.6, 0.9)),
        # IoU 0.4 with a 100x200 person: threshold 0.5 -> miss.
        'g.jpg':
        dets(([0, 0, 100, 80], 0.6, 0.9)),
        # The most similar matching detection is the TP, not the best IoU.
        'h.jpg':
        dets((BIG, 0.6, 0.9), ([0, 0, 100, 180], 0.8, 0.9),
             ([200, 0, 300, 200], 0.96, 0.9)),
    }
    g = {k: v.boxes[0] for k, v in gallery.items()}
    lists = [
        [('a.jpg', g['a.jpg']), ('b.jpg', g['b.jpg']), ('c.jpg', None),
         ('d.jpg', g['d.jpg'])],
        [('c.jpg', None), ('e.jpg', g['e.jpg'])],
        [('b.jpg', g['b.jpg'])],
        [('f.jpg', g['f.jpg'])],
        [('g.jpg', g['g.jpg'])],
        [('f.jpg', g['f.jpg']), ('d.jpg', g['d.jpg'])],
        [('h.jpg', g['h.jpg'])],
    ]
    queries = [
        Query('q.jpg', _f32(QBOX), i, -1, lst) for i, lst in enumerate(lists)
    ]
    results = dict(
        gallery=res,
        query=[
            dict(img_id='q.jpg', bbox=_f32(QBOX), embedding=_f32([1, 0]))
            for _ in queries
        ])
    return results, SearchProtocol('cuhk', gallery, queries, 100)


# (AP, top1, top5, top10) per query of cuhk_case().
EXPECTED_CUHK = [
    (1 / 4 * 1 / 3, 0, 1, 1),  # ranks .96 .923 .8 [.6] 0; 1 of 3 found
    (1 / 3, 0, 1, 1),  # tie group {.8 TP, .8, .8}: precision 1/3
    (0.0, 0, 0, 0),  # never detected
    (1.0, 1, 1, 1),  # small box, adaptive IoU threshold
    (0.0, 0, 0, 0),  # large box, IoU 0.4 < 0.5
    (0.5, 1, 1, 1),  # found in 1 of 2 images (d.jpg: no detection)
    (0.5, 0, 1, 1),  # .96 F, .8 TP, .6 F
]


def prw_case():
    """PRW-style frames over three cameras; expected values in the tests."""
    gallery = {
        'c1s1_0.jpg': image('c1s1_0.jpg', [QBOX], [7], 1),
        'c1s1_1.jpg': image('c1s1_1.jpg', [BIG], [7], 1),
        'c2s1_0.jpg': image('c2s1_0.jpg', [BIG, [200, 0, 300, 200]], [7, -1],
                            2),
        'c2s1_1.jpg': image('c2s1_1.jpg', [BIG], [8], 2),
        'c3s1_0.jpg': image('c3s1_0.jpg', [BIG], [7], 3),
    }
    res = {
        'c1s1_0.jpg': dets((QBOX, 1.0, 0.9)),  # own frame: not scored
        'c1s1_1.jpg': dets((BIG, 0.8, 0.9)),
        'c2s1_0.jpg': dets((BIG, 0.6, 0.9), ([200, 0, 300, 200], 0.96, 0.9)),
        'c2s1_1.jpg': dets((BIG, 12 / 13, 0.9)),
        'c3s1_0.jpg': dets(),
    }
    queries = [
        Query('c1s1_0.jpg', _f32(QBOX), 7, 1),
        # Id 8 is only in its own frame: no gallery image holds it.
        Query('c2s1_1.jpg', _f32(BIG), 8, 2),
    ]
    results = dict(
        gallery=res,
        query=[
            dict(img_id='c1s1_0.jpg', bbox=_f32(QBOX), embedding=_f32([1, 0])),
            dict(img_id='c2s1_1.jpg', bbox=_f32(BIG), embedding=_f32([0, 1]))
        ])
    return results, SearchProtocol('prw', gallery, queries)


def detection_case():
    """Gallery detection: expected values in the tests."""
    gallery = {
        'i1.jpg': image('i1.jpg', [[0, 0, 10, 10], [20, 0, 30, 10]], [0, -1]),
        'i2.jpg': image('i2.jpg', [[0, 0, 10, 10]], [1]),
        'i3.jpg': image('i3.jpg'),
    }
    res = {
        'i1.jpg':
        dets(([0, 0, 10, 10], 0.0, 0.9), ([0, 0, 10, 12], 0.0, 0.8),
             ([20, 0, 30, 10], 0.0, 0.7), ([50, 50, 60, 60], 0.0, 0.6),
             ([0, 0, 10, 10], 0.0, 0.4)),
        'i2.jpg':
        dets(),
        'i3.jpg':
        dets(([0, 0, 10, 10], 0.0, 0.95)),
    }
    queries = [
        Query('i2.jpg', _f32([0, 0, 10, 10]), 1, -1, [('i1.jpg', None)])
    ]
    results = dict(
        gallery=res,
        query=[
            dict(
                img_id='i2.jpg',
                bbox=_f32([0, 0, 10, 10]),
                embedding=_f32([1, 0]))
        ])
    return results, SearchProtocol('cuhk', gallery, queries, 50)
