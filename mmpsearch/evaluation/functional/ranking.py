# Copyright (c) mmpsearch contributors. All rights reserved.
"""Tie-grouped average precision and ranking counts, vectorised.

``average_precision`` gives the same number as scikit-learn's
``average_precision_score`` (tied scores form one threshold); it is written
here so that scoring needs no scikit-learn at run time.
"""
from typing import Sequence, Tuple

import numpy as np


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision of one ranking, tied scores grouped.

    ``AP = sum_v (R(v) - R(v_prev)) * P(v)`` over the distinct score values
    ``v`` in decreasing order, where ``P(v)`` and ``R(v)`` are the precision
    and recall of "score >= v" -- exactly scikit-learn's
    ``average_precision_score``. Returns 0 when there is no positive (where
    scikit-learn would warn and return a meaningless value).

    Args:
        y_true (np.ndarray): (n,) bool-like labels.
        y_score (np.ndarray): (n,) finite scores.

    Returns:
        float: AP in [0, 1].
    """
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_score = np.asarray(y_score).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f'average_precision: {y_true.shape[0]} labels but '
                         f'{y_score.shape[0]} scores')
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(y_score, kind='stable')[::-1]
    s = y_score[order]
    # Last position of every run of equal scores: one threshold per run.
    last = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)
    tps = np.cumsum(y_true[order])[last]
    gained = np.diff(tps, prepend=0)
    return float(np.sum(gained * (tps / (last + 1.0))) / n_pos)


def count_at_least(sorted_rows: np.ndarray, rows: np.ndarray,
                   values: np.ndarray) -> np.ndarray:
    """For each ``(rows[i], values[i])``, how many entries of
    ``sorted_rows[rows[i]]`` are ``>= values[i]``.

    A binary search run for all pairs at once (``np.searchsorted`` takes one
    row at a time).

    Args:
        sorted_rows (np.ndarray): (B, M), every row sorted ascending
            (``-inf`` marks entries that are not candidates).
        rows (np.ndarray): (T,) int row indices.
        values (np.ndarray): (T,) finite values.

    Returns:
        np.ndarray: int64 (T,).
    """
    num_cols = sorted_rows.shape[1]
    lo = np.zeros(rows.shape, dtype=np.int64)
    hi = np.full(rows.shape, num_cols, dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        probe = sorted_rows[rows, np.minimum(mid, num_cols - 1)]
        below = probe < values
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return num_cols - lo


def ranking_metrics_from_hits(
        num_queries: int, tp_query: np.ndarray, tp_score: np.ndarray,
        tp_num_at_least: np.ndarray, num_gt: np.ndarray,
        topk: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query AP (times the recall rate) and top-k hits from the true
    positives alone.

    A query's candidates are all its kept detections; only the true
    positives (TPs) and, for each, the number of candidates whose similarity
    is ``>=`` its own are needed:

    - AP: ``sum_TP  TP(>= s) / N(>= s)  / num_gt``, which is the tie-grouped
      AP over the candidates times ``#TP / num_gt``.
    - top-k: ties are broken against the query -- a non-matching detection
      with the same similarity as the best TP ranks ahead of it -- so the
      query hits at k iff fewer than k non-matching candidates have a
      similarity ``>=`` the best TP's. The rule does not depend on the order
      of images or detections.

    Args:
        num_queries (int): Q.
        tp_query (np.ndarray): (T,) query of each TP.
        tp_score (np.ndarray): (T,) similarity of each TP.
        tp_num_at_least (np.ndarray): (T,) candidates of that query with a
            similarity ``>=`` the TP's, the TP and its ties included.
        num_gt (np.ndarray): (Q,) gallery images that hold the query.
        topk (Sequence[int]): The k of top-k.

    Returns:
        tuple: ``ap`` float64 (Q,) (0 where ``num_gt`` is 0) and ``hits``
        bool (Q, len(topk)).
    """
    ap = np.zeros(num_queries, dtype=np.float64)
    hits = np.zeros((num_queries, len(topk)), dtype=bool)
    if tp_query.size == 0:
        return ap, hits
    order = np.lexsort((-tp_score, tp_query))
    q = tp_query[order]
    s = tp_score[order]
    n_ge = tp_num_at_least[order]
    n = q.size
    pos = np.arange(n)
    new_query = np.ones(n, dtype=bool)
    new_query[1:] = q[1:] != q[:-1]
    new_group = new_query.copy()
    new_group[1:] |= s[1:] != s[:-1]
    query_start = np.maximum.accumulate(np.where(new_query, pos, 0))
    group_id = np.cumsum(new_group) - 1
    group_last = np.append(np.flatnonzero(new_group)[1:] - 1, n - 1)
    tp_at_least = group_last[group_id] - query_start + 1
    if np.any(n_ge < tp_at_least):
        raise RuntimeError('internal error: a true positive is missing from '
                           'its query\'s candidates')
    per_query = np.bincount(
        q, weights=tp_at_least / n_ge, minlength=num_queries)
    valid = num_gt > 0
    ap[valid] = per_query[valid] / num_gt[valid]
    first = np.flatnonzero(new_query)
    misses_ahead = n_ge[first] - tp_at_least[first]
    for j, k in enumerate(topk):
        hits[q[first], j] = misses_ahead < k
    return ap, hits
