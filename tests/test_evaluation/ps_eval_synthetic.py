# Copyright (c) mmpsearch contributors. All rights reserved.
"""Small random person-search protocols and results for the tests.

Embeddings are chosen so that similarities are exact in floating point
(k entries +-1, the rest 0, with k a power of 4 times a power-of-two scale:
the normalised entries are +-2^-j and every dot product is exact), which
gives many exact ties and makes the comparison with the plain reference
independent of the summation order. ``exact=False`` draws Gaussian
embeddings instead.
"""
import numpy as np

from mmpsearch.datasets.protocol import GalleryImage, Query, SearchProtocol


def _embedding(rng, dim, nnz, exact):
    if not exact:
        return rng.standard_normal(dim).astype(np.float32)
    v = np.zeros(dim, np.float32)
    idx = rng.choice(dim, nnz, replace=False)
    v[idx] = rng.choice([-1.0, 1.0], nnz)
    return v * np.float32(2.0**rng.integers(-2, 3))


def split_query_gallery(gallery, query_img, pid):
    """A CUHK-SYSU query's gallery candidates, in gallery order: the other
    images that hold person ``pid`` (with its box) and the other images that
    do not (box None)."""
    pos, neg = [], []
    for gid, g in gallery.items():
        if gid == query_img:
            continue
        hit = np.flatnonzero(g.person_ids == pid)
        if hit.size:
            pos.append((gid, g.boxes[hit[0]].copy()))
        else:
            neg.append((gid, None))
    return pos, neg


def make_case(seed,
              kind='cuhk',
              n_img=14,
              gallery_size=8,
              n_query=10,
              dim=8,
              nnz=4,
              exact=True,
              n_cam=3):
    rng = np.random.default_rng(seed)
    n_pid = 6
    protos = [_embedding(rng, dim, nnz, exact) for _ in range(n_pid)]
    gallery, results_gallery = {}, {}
    persons = []  # (img_id, box, pid)
    for i in range(n_img):
        img_id = f'img{i:03d}.jpg'
        n_gt = int(rng.integers(0, 5))
        boxes, pids = [], []
        for _ in range(n_gt):
            x1, y1 = rng.integers(0, 150, 2).astype(float)
            w = float(rng.choice([4, 8, 12, 30, 60]))
            h = float(rng.choice([6, 10, 20, 50, 120]))
            boxes.append([x1, y1, x1 + w, y1 + h])
            pid = int(rng.integers(0, n_pid)) if rng.random() < 0.8 else -1
            pids.append(pid)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        pids = np.asarray(pids, np.int64)
        cam = int(rng.integers(1, n_cam + 1)) if kind == 'prw' else -1
        gallery[img_id] = GalleryImage(img_id, boxes, pids, cam)
        for b, p in zip(boxes, pids):
            if p >= 0:
                persons.append((img_id, b, int(p), cam))
        dets, feats = [], []
        for b, p in zip(boxes, pids):
            if rng.random() < 0.75:
                w, h = b[2] - b[0], b[3] - b[1]
                jit = rng.uniform(-0.35, 0.35, 4) * np.array([w, h, w, h])
                jit = np.round(jit * 4) / 4
                dets.append(b + jit.astype(np.float32))
                if p >= 0 and rng.random() < 0.6:
                    feats.append(protos[p].copy())
                else:
                    feats.append(_embedding(rng, dim, nnz, exact))
                if rng.random() < 0.25:  # duplicate (same box / embedding)
                    dets.append(dets[-1].copy())
                    feats.append(feats[-1].copy())
                if rng.random() < 0.3:  # a second match, other embedding
                    jit = rng.uniform(-0.1, 0.1, 4) * np.array([w, h, w, h])
                    dets.append(b + jit.astype(np.float32))
                    feats.append(_embedding(rng, dim, nnz, exact))
        for _ in range(int(rng.integers(0, 3))):
            x1, y1 = rng.integers(0, 150, 2).astype(float)
            dets.append(np.array([x1, y1, x1 + 20, y1 + 40], np.float32))
            feats.append(_embedding(rng, dim, nnz, exact))
        n = len(dets)
        results_gallery[img_id] = dict(
            bboxes=np.asarray(dets, np.float32).reshape(n, 4),
            scores=rng.choice([0.2, 0.5, 0.5, 0.6, 0.8, 0.8, 0.95],
                              n).astype(np.float32),
            embeddings=np.asarray(feats, np.float32).reshape(n, dim))
    queries, results_query = [], []
    if not persons:
        raise RuntimeError('no labeled person; use another seed')
    for _ in range(n_query):
        img_id, box, pid, cam = persons[int(rng.integers(len(persons)))]
        q_gallery = None
        if kind == 'cuhk':
            pos, neg = split_query_gallery(gallery, img_id, pid)
            rng.shuffle(neg)
            q_gallery = pos + neg[:max(0, gallery_size - len(pos))]
            if rng.random() < 0.15 and q_gallery:  # a listed-twice image
                q_gallery.append(q_gallery[int(rng.integers(len(q_gallery)))])
            order = rng.permutation(len(q_gallery))
            q_gallery = [q_gallery[j] for j in order]
        queries.append(Query(img_id, box.copy(), pid, cam, q_gallery))
        emb = protos[pid].copy() if rng.random() < 0.8 else \
            _embedding(rng, dim, nnz, exact)
        results_query.append(
            dict(img_id=img_id, bbox=box.copy(), embedding=emb))
    protocol = SearchProtocol(kind, gallery, queries,
                              gallery_size if kind == 'cuhk' else None)
    return dict(gallery=results_gallery, query=results_query), protocol
