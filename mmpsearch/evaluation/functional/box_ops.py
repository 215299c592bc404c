# Copyright (c) mmpsearch contributors. All rights reserved.
"""Box arithmetic of the person-search protocol."""
import numpy as np


def paired_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` for every ``i``, in float64.

    The protocol's formula: no ``+1`` on widths, intersection clipped at 0,
    ``union = area1 + area2 - inter``. A pair whose union is not positive
    (two degenerate boxes) gets IoU 0 rather than NaN. Written here because
    mmdet's ``bbox_overlaps`` computes whole matrices and clamps the union
    with an eps, while we need element-wise pairs with the exact formula.

    Args:
        boxes1 (np.ndarray): (n, 4) x1y1x2y2.
        boxes2 (np.ndarray): (n, 4) x1y1x2y2.

    Returns:
        np.ndarray: float64 (n,).
    """
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(
        np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0)
    ih = np.maximum(
        np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + \
        (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(n, m) IoU of every box of ``boxes1`` with every box of ``boxes2``,
    by :func:`paired_iou`'s formula."""
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m))
    return paired_iou(np.repeat(a, m, axis=0), np.tile(b,
                                                       (n, 1))).reshape(n, m)


def search_iou_threshold(gt_boxes: np.ndarray) -> np.ndarray:
    """The size-adaptive IoU threshold of a search ground truth.

    ``min(0.5, w*h / ((w+10)*(h+10)))`` (the CUHK-SYSU / PRW protocol), so
    that a small person is matched with a looser threshold.

    Args:
        gt_boxes (np.ndarray): (n, 4) x1y1x2y2.

    Returns:
        np.ndarray: float64 (n,).
    """
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    w = g[:, 2] - g[:, 0]
    h = g[:, 3] - g[:, 1]
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))
