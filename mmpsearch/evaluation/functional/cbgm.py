# Copyright (c) mmpsearch contributors. All rights reserved.
"""Context Bipartite Graph Matching (CBGM), the "+CBGM" re-ranking of
person-search tables.

Li, Zhengjia and Miao, Duoqian. "Sequential End-to-end Network for
Efficient Person Search." AAAI 2021 (SeqNet), Sec. "Context Bipartite Graph
Matching"; the rule below is the one of SeqNet's ``eval_func.py``
(``eval_search_cuhk`` / ``eval_search_prw`` with ``cbgm=True``), re-written
here with the ranking vectorised and only the assignment problems solved one
by one (``scipy.optimize.linear_sum_assignment``).

For a query:

1. **Gallery images re-scored.** Among the query's candidate detections
   (those the plain protocol ranks), take the ``k1`` most similar to the
   query; the gallery images holding one of them are re-scored, the others
   keep their similarities. A tie at the ``k1``-th similarity takes every
   tied detection's image (SeqNet leaves ties to ``np.argsort``).
2. **Query context.** The query box first, then up to ``k2 - 1`` persons
   detected in the query's own image: its kept detections (score
   ``>= score_thr``) whose IoU with the query box is at most
   ``iou_thr = 0.4`` (SeqNet adds the query box with score 1 to the
   detections of the query image and runs its test NMS, IoU 0.4, so the
   query person's own detections drop out), by decreasing score (file order
   on ties). The query image's detections are looked up in
   ``results['gallery']`` by name: both datasets' query images are test
   images.
3. **Bipartite graph.** Between the ``m <= k2`` context persons and the
   ``n`` kept detections of a re-scored gallery image, the weight of an edge
   is the similarity of their L2-normalised embeddings (the query's edges
   are exactly its plain similarities). A maximum-weight matching of
   ``min(m, n)`` edges is found (``linear_sum_assignment(...,
   maximize=True)``; SeqNet runs its own Kuhn-Munkres on the same problem).
4. **New score.** When the query is matched to detection ``j``, the
   similarity of ``j`` becomes the *largest* weight among the matched edges
   (SeqNet's ``get_max_value_result``), so a candidate standing next to a
   good match of the query's companion is lifted to that match's weight.
   The other detections of the image are unchanged, and nothing changes
   when the query is left unmatched (``n < m``). With ``m == 1`` or
   ``n == 1`` the new score is the old one, so these pairs are skipped.

Then the protocol goes on as without CBGM with the new similarities (the
true positive of an image is its most similar matching detection, AP and
top-k over all candidates).

SeqNet's defaults: ``k1 = 10, k2 = 3`` on CUHK-SYSU, ``k1 = 30, k2 = 4`` on
PRW (``CBGM_DEFAULTS``).
"""
import numbers
from typing import Dict, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .box_ops import paired_iou
from .gallery import (GalleryDetections, PlainKeyError, expand_ranges,
                      l2_normalize, pack_gallery_detections)

#: ``dataset name -> (k1, k2)``, SeqNet's values.
CBGM_DEFAULTS: Dict[str, Tuple[int, int]] = {'cuhk': (10, 3), 'prw': (30, 4)}
#: A detection of the query image overlapping the query box by more is the
#: query person itself (SeqNet's test NMS threshold).
CONTEXT_IOU_THR = 0.4
# Entries of one gathered (rows, D) block of the context similarities.
_BLOCK_ELEMS = 1 << 22


def check_cbgm_k(value: object, option: str) -> int:
    """``value`` as a CBGM ``k`` (an int >= 1); a ``ValueError`` naming
    ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f'{option} must be an int >= 1, got {value!r} '
                         f'({type(value).__name__})')
    if value < 1:
        raise ValueError(f'{option} must be an int >= 1, got {value}')
    return int(value)


def resolve_cbgm_k(dataset: str,
                   k1: Optional[int] = None,
                   k2: Optional[int] = None,
                   prefix: str = '') -> Tuple[int, int]:
    """``(k1, k2)``: the given values, checked, or the dataset's defaults.

    Args:
        dataset (str): ``'cuhk'`` or ``'prw'``.
        k1, k2 (int, optional): ``None`` for the default.
        prefix (str): Put before the option names in messages (e.g.
            ``'PersonSearchMetric: '``).
    """
    if dataset not in CBGM_DEFAULTS:
        raise ValueError(f'{prefix}CBGM: unknown dataset {dataset!r}, '
                         f'expected one of {sorted(CBGM_DEFAULTS)}')
    d1, d2 = CBGM_DEFAULTS[dataset]
    k1 = d1 if k1 is None else check_cbgm_k(k1, f'{prefix}cbgm_k1')
    k2 = d2 if k2 is None else check_cbgm_k(k2, f'{prefix}cbgm_k2')
    return k1, k2


def check_cbgm_k_bounds(results: dict,
                        dataset: str,
                        k1: int,
                        k2: int,
                        score_thr: float = 0.5,
                        names: Tuple[str, str] = ('cbgm_k1', 'cbgm_k2'),
                        source: str = 'the results') -> None:
    """Refuse a ``k1`` / ``k2`` larger than what ``results`` can hold.

    ``k1`` counts detections of the gallery, ``k2`` the query and the
    persons detected in its image; a larger value changes nothing but the
    memory (``k2 = 100000`` allocated a (Q, k2, D) context, 7 GB), so it is
    a typo or a misunderstanding. SeqNet's values (:data:`CBGM_DEFAULTS`)
    are always accepted: on a gallery too small for them CBGM takes what
    there is, as SeqNet does.

    Args:
        results (dict): The (validated) results format.
        dataset (str): ``'cuhk'`` or ``'prw'``, for the defaults.
        k1, k2 (int): The resolved values (:func:`resolve_cbgm_k`).
        score_thr (float): Detections below it are not counted.
        names (tuple[str, str]): The option names, for messages.
        source (str): The results' name, for messages.
    """
    d1, d2 = CBGM_DEFAULTS.get(dataset, (None, None))
    kept = {
        img_id: int(np.count_nonzero(item['scores'] >= score_thr))
        for img_id, item in results['gallery'].items()
    }
    total = sum(kept.values())
    if k1 != d1 and k1 > max(total, 1):
        raise ValueError(
            f'{names[0]} {k1}: CBGM re-scores the gallery images of the '
            f'query\'s k1 most similar detections, but the gallery of '
            f'{source} holds {total} detections scoring >= {score_thr}; '
            f'expected {names[0]} <= {max(total, 1)} (SeqNet: '
            f'{CBGM_DEFAULTS})')
    most = max((kept.get(q['img_id'], 0) for q in results['query']), default=0)
    if k2 != d2 and k2 > most + 1:
        raise ValueError(
            f'{names[1]} {k2}: a query\'s context is the query and the '
            'persons detected in its image, and no query image of '
            f'{source} holds more than {most} detections scoring >= '
            f'{score_thr}; expected {names[1]} <= {most + 1} (SeqNet: '
            f'{CBGM_DEFAULTS})')


class CBGM:
    """The CBGM re-scoring of one results set, handed to
    ``eval_search_cuhk`` / ``eval_search_prw`` (``cbgm=``).

    Attributes:
        k1 (int): Detections that choose the gallery images re-scored.
        k2 (int): Context persons of a query, the query included.
        context (np.ndarray): float32 (Q, k2, D) L2-normalised embeddings of
            each query's context persons, the query first (rows past
            ``length`` are zero).
        length (np.ndarray): int64 (Q,) context persons of each query,
            in ``1..k2``.
    """

    def __init__(self, context: np.ndarray, length: np.ndarray,
                 k1: int) -> None:
        self.k1 = check_cbgm_k(k1, 'cbgm_k1')
        self.context = np.asarray(context, np.float32)
        self.length = np.asarray(length, np.int64)
        self.k2 = int(self.context.shape[1])

    @classmethod
    def from_results(cls,
                     results: dict,
                     k1: int,
                     k2: int,
                     score_thr: float = 0.5,
                     iou_thr: float = CONTEXT_IOU_THR) -> 'CBGM':
        """Build the query contexts from a results-format dict.

        Args:
            results (dict): The results format (``results_io``); the
                detections of each query's image are
                ``results['gallery'][query['img_id']]``.
            k1, k2 (int): See the class.
            score_thr (float): Detections of the query image scoring below
                it are no context (as in the gallery).
            iou_thr (float): Detections of the query image overlapping the
                query box by more are the query person, no context.
        """
        k1 = check_cbgm_k(k1, 'cbgm_k1')
        k2 = check_cbgm_k(k2, 'cbgm_k2')
        queries, gallery = results['query'], results['gallery']
        for qi, q in enumerate(queries):
            if q['img_id'] not in gallery:
                raise PlainKeyError(
                    f'CBGM needs the detections of every query image, but '
                    f'the results have no gallery entry for image '
                    f'{q["img_id"]!r} of query {qi}')
        num_q = len(queries)
        dim = int(queries[0]['embedding'].shape[0]) if queries else 0
        context = np.zeros((num_q, k2, dim), np.float32)
        if num_q == 0:
            return cls(context, np.zeros(0, np.int64), k1)
        context[:,
                0] = l2_normalize(np.stack([q['embedding'] for q in queries]))
        names = list(dict.fromkeys(q['img_id'] for q in queries))
        pack = pack_gallery_detections(gallery, names, score_thr, dim)
        index = {name: i for i, name in enumerate(names)}
        q_img = np.fromiter((index[q['img_id']] for q in queries), np.int64,
                            num_q)
        q_box = np.stack([np.asarray(q['bbox'], np.float64) for q in queries])
        lens = pack.counts[q_img]
        det = expand_ranges(pack.offsets[q_img], lens)
        owner = np.repeat(np.arange(num_q, dtype=np.int64), lens)
        keep = paired_iou(pack.bboxes[det], q_box[owner]) <= iou_thr
        det, owner = det[keep], owner[keep]
        # By query, then decreasing score, then file order.
        order = np.lexsort((det, -pack.scores[det], owner))
        det, owner = det[order], owner[order]
        first = np.searchsorted(owner, owner, side='left')
        rank = np.arange(owner.size) - first
        sel = rank < k2 - 1
        context[owner[sel], 1 + rank[sel]] = \
            pack.embeddings[pack.embed_index[det[sel]]]
        length = 1 + np.bincount(owner[sel], minlength=num_q)
        return cls(context, length, k1)

    # ------------------------------------------------------------ ranking

    def _images_to_rescore(self, sims: np.ndarray, rows: np.ndarray,
                           pack: GalleryDetections, task,
                           cand_ptr: Optional[np.ndarray],
                           cand_det: Optional[np.ndarray]):
        """``(local row, gallery image)`` pairs, sorted by row, where the
        image holds one of the ``k1`` most similar candidate detections of
        the row's query (all of them on a tie at the ``k1``-th).

        Two stages, so that only a few detections per query are looked at
        twice: the ``k1``-th largest candidate similarity ``t`` is at least
        the ``k1``-th largest image maximum ``u`` (the ``k1`` images reaching
        ``u`` hold ``k1`` detections >= ``u``), so every image reaching ``t``
        is among those reaching ``u``, and ``t`` is found among their
        detections.
        """
        k1 = self.k1
        nrows = rows.size
        if cand_ptr is not None:  # CUHK-SYSU: per-query image lists
            starts = cand_ptr[rows]
            lens = cand_ptr[rows + 1] - starts
            r = np.repeat(np.arange(nrows, dtype=np.int64), lens)
            det = cand_det[expand_ranges(starts, lens)]
            if det.size == 0:
                return r, det
            vals = sims[r, det]
            img = pack.img_index[det]
            seg = np.flatnonzero(
                np.diff(r * pack.num_images + img, prepend=-1) != 0)
            best = np.maximum.reduceat(vals, seg)
            r, img = r[seg], img[seg]
        else:  # PRW: every frame but the query's own (and its camera's)
            nonempty = np.flatnonzero(pack.counts > 0)
            if nonempty.size == 0:
                z = np.zeros(0, np.int64)
                return z, z
            dense = np.maximum.reduceat(sims, pack.offsets[nonempty], axis=1)
            own = task.query_img[rows]
            at = np.minimum(np.searchsorted(nonempty, own), nonempty.size - 1)
            mine = (own >= 0) & (nonempty[at] == own)
            dense[np.flatnonzero(mine), at[mine]] = -np.inf
            if task.query_cam is not None:
                dense[task.img_cam[nonempty][None, :] == task.query_cam[rows]
                      [:, None]] = -np.inf
            u = _kth_largest_dense(dense, k1)
            r, col = np.nonzero((dense >= u[:, None]) & (dense > -np.inf))
            r = r.astype(np.int64)
            img, best = nonempty[col], dense[r, col]
        # Stage 1: the images reaching the k1-th largest image maximum.
        u = _kth_largest(r, best, nrows, k1)
        top = best >= u[r]
        r, img, best = r[top], img[top], best[top]
        # Stage 2: the k1-th largest similarity among their detections.
        lens = pack.counts[img]
        r_det = np.repeat(r, lens)
        vals = sims[r_det, expand_ranges(pack.offsets[img], lens)]
        t = _kth_largest(r_det, vals, nrows, k1)
        keep = best >= t[r]
        return r[keep], img[keep]

    def rescore(self,
                sims: np.ndarray,
                rows: np.ndarray,
                pack: GalleryDetections,
                task,
                cand_ptr: Optional[np.ndarray] = None,
                cand_det: Optional[np.ndarray] = None) -> int:
        """Apply CBGM to a block of the similarity matrix, in place.

        Args:
            sims (np.ndarray): float32 (B, n_det) plain similarities of the
                queries ``rows`` with every kept gallery detection.
            rows (np.ndarray): (B,) query indices.
            pack (GalleryDetections): The kept gallery detections.
            task: The search task of ``search.py`` (its ``query_img``,
                ``query_cam``, ``img_cam`` when there are no image lists).
            cand_ptr, cand_det (np.ndarray, optional): CUHK-SYSU: each
                query's candidate detections ``cand_det[cand_ptr[q]:
                cand_ptr[q + 1]]``; ``None``: PRW's rule.

        Returns:
            int: How many similarities were changed.
        """
        if rows.size == 0 or pack.offsets[-1] == 0:
            return 0
        if self.context.shape[0] <= int(rows.max()):
            raise ValueError(f'CBGM has the context of '
                             f'{self.context.shape[0]} queries, but query '
                             f'{int(rows.max())} is searched')
        if pack.embeddings.shape[1] != self.context.shape[2]:
            raise ValueError(f'CBGM: context embeddings of width '
                             f'{self.context.shape[2]}, gallery '
                             f'{pack.embeddings.shape[1]}')
        r, img = self._images_to_rescore(sims, rows, pack, task, cand_ptr,
                                         cand_det)
        n = pack.counts[img]
        m = self.length[rows[r]]
        useful = (n > 1) & (m > 1)
        r, img, n, m = r[useful], img[useful], n[useful], m[useful]
        if r.size == 0:
            return 0
        # Edge weights, one row per (pair, detection): column 0 the query's
        # plain similarity, column k its k-th context person's.
        det = expand_ranges(pack.offsets[img], n)
        pair = np.repeat(np.arange(r.size, dtype=np.int64), n)
        q = rows[r][pair]
        weights = np.empty((det.size, self.k2), np.float32)
        weights[:, 0] = sims[r[pair], det]
        step = max(1, _BLOCK_ELEMS // max(self.context.shape[2], 1))
        for c0 in range(0, det.size, step):
            c1 = min(c0 + step, det.size)
            weights[c0:c1, 1:] = np.einsum(
                'ckd,cd->ck', self.context[q[c0:c1], 1:],
                pack.embeddings[pack.embed_index[det[c0:c1]]])
        # One assignment problem per pair (detections x context persons);
        # only this loop is not vectorised.
        ends = np.cumsum(n)
        starts = ends - n
        got_det, got_ctx = [], []
        lsa = linear_sum_assignment
        for s, e, k in zip(starts.tolist(), ends.tolist(), m.tolist()):
            det_i, ctx_i = lsa(weights[s:e, :k], maximize=True)
            got_det.append(det_i)
            got_ctx.append(ctx_i)
        size = np.minimum(n, m)  # edges matched per pair
        m_row = np.concatenate(got_det) + np.repeat(starts, size)
        m_ctx = np.concatenate(got_ctx)
        best = np.maximum.reduceat(weights[m_row, m_ctx], ends_to_starts(size))
        hit = m_ctx == 0  # the query's edge, when it is matched
        m_pair = np.repeat(np.arange(r.size, dtype=np.int64), size)[hit]
        sims[r[m_pair], det[m_row[hit]]] = best[m_pair]
        return int(hit.sum())


def ends_to_starts(lengths: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive segments of ``lengths`` (all > 0)."""
    return np.cumsum(lengths) - lengths


def _kth_largest_dense(values: np.ndarray, k: int) -> np.ndarray:
    """Per row the ``k``-th largest entry; ``-inf`` for fewer than k."""
    n = values.shape[1]
    if n < k:
        return np.full(values.shape[0], -np.inf, values.dtype)
    return np.partition(values, n - k, axis=1)[:, n - k]


def _kth_largest(row: np.ndarray, values: np.ndarray, nrows: int,
                 k: int) -> np.ndarray:
    """The ``k``-th largest of ``values`` grouped by ``row`` (sorted), per
    row of ``0..nrows-1``; ``-inf`` where a row has fewer than k."""
    out = np.full(nrows, -np.inf, values.dtype)
    if values.size == 0:
        return out
    col = np.arange(row.size) - np.searchsorted(row, row, side='left')
    width = int(col.max()) + 1
    if width < k:
        return out
    dense = np.full((nrows, width), np.inf, values.dtype)
    dense[row, col] = -values
    return -np.partition(dense, k - 1, axis=1)[:, k - 1]
