# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search evaluation of CUHK-SYSU and PRW, vectorised.

The protocol is the one of the public
``eval_search_cuhk`` / ``eval_search_prw`` functions that OIM, NAE, SeqNet
and COAT publish with, re-written without a Python loop over gallery
images:

- similarities of a block of queries with all kept detections come from one
  matrix product of L2-normalised embeddings;
- the true positive (TP) of a (query, gallery image holding the query) pair
  is the most similar detection whose IoU with the ground truth reaches
  ``min(0.5, w*h/((w+10)*(h+10)))`` (a segment maximum);
- the tie-grouped AP and top-k need, per TP, only the number of candidates
  at least as similar, found by binary search in the sorted rows.

Tie rules (the public code leaves them to an unstable sort): within a
gallery image the TP is one of the most similar matching detections (which
one does not change any number); for top-k a non-matching detection that
ties with the best TP ranks ahead of it (ties are broken against the
query), so the result does not depend on image or detection order.
"""
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from mmpsearch.datasets.protocol import SearchProtocol
from .box_ops import paired_iou, search_iou_threshold
from .gallery import (GalleryDetections, PlainKeyError, expand_ranges,
                      l2_normalize)
from .ranking import count_at_least, ranking_metrics_from_hits

DEFAULT_TOPK = (1, 5, 10)


@dataclass
class _SearchTask:
    """Who is searched where, as index arrays over the packed gallery.

    Attributes:
        num_gt (np.ndarray): (Q,) gallery images holding each query.
        pos_query, pos_img (np.ndarray): (P,) the (query, gallery image)
            pairs where the image holds the query, sorted by query.
        pos_box (np.ndarray): float64 (P, 4) the ground truth of each pair.
        cand_query, cand_img (np.ndarray, optional): per-query candidate
            gallery images (CUHK-SYSU), sorted by query.
        query_img (np.ndarray, optional): (Q,) the query's own image, -1
            when not in the gallery (PRW: every other image is a candidate).
        query_cam, img_cam (np.ndarray, optional): cameras; when given,
            images of the query's camera are no candidates (cross-camera).
    """
    num_gt: np.ndarray
    pos_query: np.ndarray
    pos_img: np.ndarray
    pos_box: np.ndarray
    cand_query: Optional[np.ndarray] = None
    cand_img: Optional[np.ndarray] = None
    query_img: Optional[np.ndarray] = None
    query_cam: Optional[np.ndarray] = None
    img_cam: Optional[np.ndarray] = None


def _is_not_none(x: object) -> bool:
    return x is not None


def _image_index(pack: GalleryDetections) -> Dict[str, int]:
    return {img_id: i for i, img_id in enumerate(pack.img_ids)}


def _cuhk_task(pack: GalleryDetections,
               protocol: SearchProtocol) -> _SearchTask:
    """Index arrays of the CUHK-SYSU protocol (per-query TestG galleries).

    As in the public code, a gallery image listed twice for one query is
    scored once (with its first ground truth) but counted twice in the
    number of images holding the query.
    """
    index = _image_index(pack)
    queries = protocol.queries
    for qi, query in enumerate(queries):
        if query.gallery is None:
            raise ValueError(f'CUHK-SYSU protocol: query {qi} '
                             f'({query.img_id}) has no gallery list')
    lens = np.fromiter((len(q.gallery) for q in queries), np.int64,
                       len(queries))
    names = [name for q in queries for name, _ in q.gallery]
    gts = [gt for q in queries for _, gt in q.gallery]
    try:
        img = np.fromiter(map(index.__getitem__, names), np.int64, len(names))
    except KeyError as e:
        bad = names.index(e.args[0])
        qi = int(np.searchsorted(np.cumsum(lens), bad, side='right'))
        raise PlainKeyError(
            f'CUHK-SYSU protocol: gallery image {names[bad]!r} of '
            f'query {qi} is not among the protocol\'s gallery '
            'images') from None
    has_gt = np.fromiter(map(_is_not_none, gts), bool, len(gts))
    boxes = np.asarray([g for g in gts if g is not None],
                       dtype=np.float64).reshape(-1, 4)
    entry_query = np.repeat(np.arange(len(queries), dtype=np.int64), lens)
    num_gt = np.bincount(entry_query[has_gt], minlength=len(queries))
    key = entry_query * max(pack.num_images, 1) + img
    _, first = np.unique(key, return_index=True)
    box_of_entry = np.cumsum(has_gt) - 1
    first_pos = first[has_gt[first]]
    return _SearchTask(
        num_gt=num_gt,
        pos_query=entry_query[first_pos],
        pos_img=img[first_pos],
        pos_box=boxes[box_of_entry[first_pos]],
        cand_query=entry_query[first],
        cand_img=img[first])


def _prw_task(pack: GalleryDetections, protocol: SearchProtocol,
              cross_camera: bool) -> _SearchTask:
    """Index arrays of the PRW protocol: every gallery frame but the query's
    own (cross-camera: only frames of other cameras); the ground truth is
    the (first) box with the query's id."""
    index = _image_index(pack)
    images = [protocol.gallery[i] for i in pack.img_ids]
    queries = protocol.queries
    n_box = np.fromiter((len(g.person_ids) for g in images), np.int64,
                        len(images))
    box_img = np.repeat(np.arange(len(images), dtype=np.int64), n_box)
    if len(images) and n_box.sum() > 0:
        box_pid = np.concatenate(
            [np.asarray(g.person_ids, np.int64).reshape(-1) for g in images])
        boxes = np.concatenate(
            [np.asarray(g.boxes, np.float64).reshape(-1, 4) for g in images])
    else:
        box_pid = np.zeros(0, np.int64)
        boxes = np.zeros((0, 4), np.float64)
    labeled = box_pid >= 0
    box_img, box_pid, boxes = box_img[labeled], box_pid[labeled], \
        boxes[labeled]
    # One ground truth per (frame, id): the first, as the public code uses.
    key = box_img * (int(box_pid.max(initial=0)) + 1) + box_pid
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    box_img, box_pid, boxes = box_img[first], box_pid[first], boxes[first]
    by_pid = np.argsort(box_pid, kind='stable')
    pid_sorted = box_pid[by_pid]

    q_pid = np.fromiter((q.person_id for q in queries), np.int64, len(queries))
    if np.any(q_pid < 0):
        bad = int(np.flatnonzero(q_pid < 0)[0])
        raise ValueError(f'PRW protocol: query {bad} ({queries[bad].img_id})'
                         f' has person_id {q_pid[bad]}, expected an id >= 0')
    q_img = np.fromiter((index.get(q.img_id, -1) for q in queries), np.int64,
                        len(queries))
    lo = np.searchsorted(pid_sorted, q_pid, side='left')
    hi = np.searchsorted(pid_sorted, q_pid, side='right')
    sel = by_pid[expand_ranges(lo, hi - lo)]
    pos_query = np.repeat(np.arange(len(queries), dtype=np.int64), hi - lo)
    pos_img = box_img[sel]
    keep = pos_img != q_img[pos_query]
    task = _SearchTask(
        num_gt=np.zeros(len(queries), np.int64),
        pos_query=pos_query,
        pos_img=pos_img,
        pos_box=boxes[sel],
        query_img=q_img)
    if cross_camera:
        img_cam = np.fromiter((g.cam_id for g in images), np.int64,
                              len(images))
        q_cam = np.fromiter((q.cam_id for q in queries), np.int64,
                            len(queries))
        if np.any(q_cam < 0) or np.any(img_cam < 0):
            raise ValueError('cross-camera evaluation needs the camera of '
                             'every query and gallery frame; the protocol '
                             'has cam_id -1')
        keep &= img_cam[pos_img] != q_cam[pos_query]
        task.query_cam, task.img_cam = q_cam, img_cam
    task.pos_query, task.pos_img, task.pos_box = \
        pos_query[keep], pos_img[keep], task.pos_box[keep]
    task.num_gt = np.bincount(task.pos_query, minlength=len(queries))
    return task


def _candidate_rows(sims: np.ndarray, rows: np.ndarray,
                    pack: GalleryDetections, task: _SearchTask,
                    cand_ptr: Optional[np.ndarray],
                    cand_det: Optional[np.ndarray]) -> np.ndarray:
    """Similarities of queries ``rows`` with their candidates; ``-inf``
    pads the rows / marks detections that are no candidates. May reuse
    ``sims``'s memory."""
    if cand_ptr is not None:
        starts, lens = cand_ptr[rows], cand_ptr[rows + 1] - cand_ptr[rows]
        out = np.full((rows.size, max(int(lens.max(initial=0)), 1)),
                      -np.inf,
                      dtype=sims.dtype)
        r = np.repeat(np.arange(rows.size), lens)
        flat = expand_ranges(starts, lens)
        col = flat - np.repeat(starts, lens)
        out[r, col] = sims[r, cand_det[flat]]
        return out
    # PRW: every detection is a candidate except those of the own frame and,
    # cross-camera, of the query's camera.
    own = task.query_img[rows]
    lens = np.where(own >= 0, pack.counts[np.maximum(own, 0)], 0)
    r = np.repeat(np.arange(rows.size), lens)
    sims[r, expand_ranges(pack.offsets[np.maximum(own, 0)], lens)] = -np.inf
    if task.query_cam is not None:
        det_cam = task.img_cam[pack.img_index]
        sims[det_cam[None, :] == task.query_cam[rows][:, None]] = -np.inf
    return sims


def _rank(pack: GalleryDetections,
          query_embeddings: np.ndarray,
          task: _SearchTask,
          topk: Sequence[int],
          block_elems: int,
          cbgm=None) -> Dict[str, object]:
    num_queries = int(task.num_gt.shape[0])
    q_emb = l2_normalize(query_embeddings)
    if q_emb.shape != (num_queries, pack.embeddings.shape[1]) and \
            pack.embeddings.shape[0] > 0:
        raise ValueError(f'query embeddings have shape {q_emb.shape}, '
                         f'expected ({num_queries}, '
                         f'{pack.embeddings.shape[1]})')

    # Detections that may be the TP of a pair: those in its image whose IoU
    # with the ground truth reaches the size-adaptive threshold. This does
    # not depend on the embeddings, so it is done once for all queries.
    counts = pack.counts
    lens = counts[task.pos_img]
    ent_det = expand_ranges(pack.offsets[task.pos_img], lens)
    ent_pair = np.repeat(np.arange(task.pos_img.size), lens)
    thr = search_iou_threshold(task.pos_box)
    ok = paired_iou(pack.bboxes[ent_det], task.pos_box[ent_pair]) >= \
        thr[ent_pair]
    ent_det, ent_pair = ent_det[ok], ent_pair[ok]
    ent_query = task.pos_query[ent_pair]

    cand_ptr = cand_det = None
    if task.cand_img is not None:
        c_lens = counts[task.cand_img]
        cand_det = expand_ranges(pack.offsets[task.cand_img], c_lens)
        cand_ptr = np.zeros(num_queries + 1, np.int64)
        np.cumsum(
            np.bincount(
                task.cand_query, weights=c_lens,
                minlength=num_queries).astype(np.int64),
            out=cand_ptr[1:])

    # Only queries with a detection that may be a TP need similarities; the
    # others score AP 0 and miss at every k.
    hit_queries = np.unique(ent_query)
    block = max(1, block_elems // max(pack.embed_index.shape[0], 1))
    tp_q, tp_s, tp_n = [], [], []
    for b0 in range(0, hit_queries.size, block):
        rows = hit_queries[b0:b0 + block]
        e0, e1 = np.searchsorted(ent_query, [rows[0], rows[-1] + 1])
        sims = q_emb[rows] @ pack.embeddings.T
        if not pack.all_distinct:
            sims = sims[:, pack.embed_index]
        if cbgm is not None:  # re-rank in place (see cbgm.py)
            cbgm.rescore(sims, rows, pack, task, cand_ptr, cand_det)
        e_row = np.searchsorted(rows, ent_query[e0:e1])
        vals = sims[e_row, ent_det[e0:e1]]
        pairs = ent_pair[e0:e1]
        starts = np.flatnonzero(np.diff(pairs, prepend=-1) != 0)
        best = np.maximum.reduceat(vals, starts)
        best_row = e_row[starts]
        cand = _candidate_rows(sims, rows, pack, task, cand_ptr, cand_det)
        cand.sort(axis=1)
        tp_q.append(rows[best_row])
        tp_s.append(best)
        tp_n.append(count_at_least(cand, best_row, best))
    if tp_q:
        tp_query = np.concatenate(tp_q)
        tp_score = np.concatenate(tp_s)
        tp_num = np.concatenate(tp_n)
    else:
        tp_query = np.zeros(0, np.int64)
        tp_score = np.zeros(0, np.float32)
        tp_num = np.zeros(0, np.int64)
    ap, hits = ranking_metrics_from_hits(num_queries, tp_query, tp_score,
                                         tp_num, task.num_gt, topk)
    valid = task.num_gt > 0
    if not valid.any():
        raise ValueError('no query has a gallery image that holds it; '
                         'nothing can be scored')
    if not valid.all():
        warnings.warn(f'{int((~valid).sum())} of {num_queries} queries have '
                      'no gallery image that holds them and are left out of'
                      ' mAP and top-k')
    out: Dict[str, object] = dict(mAP=float(ap[valid].mean()))
    for j, k in enumerate(topk):
        out[f'top{k}'] = float(hits[valid, j].mean())
    out.update(
        ap=ap,
        hits=hits,
        num_gt=task.num_gt,
        valid=valid,
        num_tp=np.bincount(tp_query, minlength=num_queries))
    return out


def eval_search_cuhk(pack: GalleryDetections,
                     query_embeddings: np.ndarray,
                     protocol: SearchProtocol,
                     topk: Sequence[int] = DEFAULT_TOPK,
                     block_elems: int = 1 << 24,
                     cbgm=None) -> Dict[str, object]:
    """Search mAP and top-k under the CUHK-SYSU protocol.

    Each query is searched in its own ``TestG{N}`` gallery
    (``protocol.queries[i].gallery``).

    Args:
        pack (GalleryDetections): Kept gallery detections.
        query_embeddings (np.ndarray): (Q, D) in query order.
        protocol (SearchProtocol): From ``load_cuhk_protocol``.
        topk (Sequence[int]): The k of top-k.
        block_elems (int): Similarity entries computed at once (memory).
        cbgm (CBGM, optional): Re-rank with Context Bipartite Graph
            Matching (``cbgm.CBGM``, built from the same results).

    Returns:
        dict: ``mAP`` and ``top{k}`` (fractions, means over the queries that
        have a gallery image holding them), and per query ``ap`` (Q,),
        ``hits`` (Q, len(topk)), ``num_gt``, ``num_tp``, ``valid``.
    """
    return _rank(pack, query_embeddings, _cuhk_task(pack, protocol), topk,
                 block_elems, cbgm)


def eval_search_prw(pack: GalleryDetections,
                    query_embeddings: np.ndarray,
                    protocol: SearchProtocol,
                    cross_camera: bool = False,
                    topk: Sequence[int] = DEFAULT_TOPK,
                    block_elems: int = 1 << 24,
                    cbgm=None) -> Dict[str, object]:
    """Search mAP and top-k under the PRW protocol.

    The gallery of a query is every gallery frame but its own; with
    ``cross_camera`` only the frames of other cameras. The ground truth in a
    frame is the box with the query's id.

    Args and returns as :func:`eval_search_cuhk`, plus ``cross_camera``.
    """
    return _rank(pack, query_embeddings, _prw_task(pack, protocol,
                                                   cross_camera), topk,
                 block_elems, cbgm)
