# Copyright (c) mmpsearch contributors. All rights reserved.
"""Detection recall and AP of the gallery, vectorised.

The rule of the public ``eval_detection`` (OIM / NAE / SeqNet / COAT): per
image, with IoUs stored in float32, a (ground truth, detection) pair is a
true positive iff its IoU is >= 0.5, the ground truth is the detection's
best (first ``argmax``) and the detection is the ground truth's best -- so
each detection matches at most one person and vice versa. AP is the
tie-grouped AP of all kept detections by score, times the recall.
"""
from typing import Dict

import numpy as np

from mmpsearch.datasets.protocol import SearchProtocol
from .box_ops import paired_iou
from .gallery import GalleryDetections, expand_ranges
from .ranking import average_precision


def _first_argmax(group: np.ndarray, other: np.ndarray, iou: np.ndarray,
                  size: int) -> np.ndarray:
    """For every group, the ``other`` index of its largest IoU, the
    smallest such index on ties (``np.argmax``'s rule); -1 for groups
    without pairs."""
    order = np.lexsort((other, -iou, group))
    g = group[order]
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    best = np.full(size, -1, dtype=np.int64)
    best[g[first]] = other[order][first]
    return best


def eval_detection(pack: GalleryDetections,
                   protocol: SearchProtocol,
                   iou_thr: float = 0.5,
                   labeled_only: bool = False) -> Dict[str, float]:
    """Detection recall and AP (scaled by the recall) on the gallery.

    Args:
        pack (GalleryDetections): Kept gallery detections (in the order of
            ``protocol.gallery``).
        protocol (SearchProtocol): Ground truth of the gallery images.
        iou_thr (float): IoU of a match.
        labeled_only (bool): Count only persons with an id (>= 0); as in the
            public code, images without any labeled person are then left
            out entirely (their detections are no false positives). With
            all persons, the detections of an image without any person are
            false positives.

    Returns:
        dict: ``recall`` and ``ap``, fractions.
    """
    images = [protocol.gallery[i] for i in pack.img_ids]
    n_img = len(images)
    gt_boxes = [np.asarray(g.boxes, np.float64).reshape(-1, 4) for g in images]
    gt_pids = [np.asarray(g.person_ids).reshape(-1) for g in images]
    if labeled_only:
        gt_boxes = [b[p >= 0] for b, p in zip(gt_boxes, gt_pids)]
    n_gt = np.fromiter((b.shape[0] for b in gt_boxes), np.int64, n_img)
    counted = n_gt > 0 if labeled_only else np.ones(n_img, dtype=bool)
    total_gt = int(n_gt.sum())
    what = 'labeled persons' if labeled_only else 'persons'
    if total_gt == 0:
        raise ValueError(f'detection evaluation: the gallery has no {what}')
    gt_off = np.zeros(n_img + 1, np.int64)
    np.cumsum(n_gt, out=gt_off[1:])
    all_gt = np.concatenate(gt_boxes) if n_img else np.zeros((0, 4))

    n_det = pack.counts
    pairs_per_img = n_gt * n_det
    pair_img = np.repeat(np.arange(n_img), pairs_per_img)
    k = expand_ranges(np.zeros(n_img, np.int64), pairs_per_img)
    nd = n_det[pair_img]
    g = gt_off[pair_img] + k // np.maximum(nd, 1)
    d = pack.offsets[pair_img] + k % np.maximum(nd, 1)
    # float32 as the public code stores IoUs; argmax ties follow from it.
    iou = paired_iou(all_gt[g], pack.bboxes[d]).astype(np.float32)
    best_gt_of_det = _first_argmax(d, g, iou, pack.bboxes.shape[0])
    best_det_of_gt = _first_argmax(g, d, iou, total_gt)
    tp = (iou >= iou_thr) & (best_gt_of_det[d] == g) & \
        (best_det_of_gt[g] == d)
    det_tp = np.zeros(pack.bboxes.shape[0], dtype=bool)
    det_tp[d[tp]] = True
    recall = float(tp.sum()) / total_gt
    keep = counted[pack.img_index]
    ap = average_precision(det_tp[keep], pack.scores[keep]) * recall
    return dict(recall=recall, ap=ap)
