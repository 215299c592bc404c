# Copyright (c) mmpsearch contributors. All rights reserved.
"""A plain, loop-by-loop implementation of the person-search protocol, the
yardstick of the vectorised code (written the straightforward way on
purpose: one query, one gallery image, one detection at a time)."""
import numpy as np


def ref_iou(a, b):
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) \
        - inter
    return inter / union if union > 0 else 0.0


def ref_ap(y_true, y_score):
    """Average precision with tied scores as one threshold (the definition
    of scikit-learn's average_precision_score), 0 without positives."""
    y_true = [bool(t) for t in y_true]
    n_pos = sum(y_true)
    if n_pos == 0:
        return 0.0
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(float(s) for s in y_score), reverse=True):
        sel = [t for t, s in zip(y_true, y_score) if float(s) >= thr]
        tp = sum(sel)
        precision = tp / len(sel)
        recall = tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def _normalize(x):
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def ref_gallery_entries(protocol, query, cross_camera=False):
    """(img_id, ground-truth box or None) of every gallery image of a query:
    its TestG list on CUHK-SYSU; on PRW every other frame (of another camera
    with ``cross_camera``), the box with the query's id as ground truth."""
    if protocol.name == 'cuhk':
        return list(query.gallery)
    entries = []
    for img_id, g in protocol.gallery.items():
        if img_id == query.img_id:
            continue
        if cross_camera and g.cam_id == query.cam_id:
            continue
        gt = None
        for box, pid in zip(g.boxes, g.person_ids):
            if pid == query.person_id:
                gt = box
                break
        entries.append((img_id, gt))
    return entries


def ref_search(results,
               protocol,
               score_thr=0.5,
               cross_camera=False,
               topk=(1, 5, 10)):
    """Per-query AP (times recall), top-k hits and number of gallery images
    holding the query."""
    kept = {}
    for img_id, item in results['gallery'].items():
        keep = item['scores'] >= score_thr
        kept[img_id] = (item['bboxes'][keep],
                        _normalize(item['embeddings'][keep]))
    aps, hits, num_gts = [], [], []
    for qi, query in enumerate(protocol.queries):
        q_feat = _normalize(results['query'][qi]['embedding'])
        entries = ref_gallery_entries(protocol, query, cross_camera)
        images, count_gt = [], 0
        seen = set()
        for img_id, gt in entries:
            if gt is not None:
                count_gt += 1
            if img_id in seen:
                continue
            seen.add(img_id)
            boxes, feats = kept[img_id]
            images.append(
                ([float(np.dot(f, q_feat)) for f in feats], boxes, gt))
        num_gts.append(count_gt)
        ap, hit = ref_query_scores(images, count_gt, topk)
        aps.append(ap)
        hits.append(hit)
    return np.array(aps), np.array(hits, bool), np.array(num_gts)


def ref_labels(sims, boxes, gt):
    """1 for the detection of one gallery image that matches ``gt`` (None:
    the query person is not in the image): the most similar one with IoU
    >= min(0.5, wh / ((w + 10)(h + 10))); 0 for the others."""
    labels = [0] * len(sims)
    if gt is not None:
        w, h = float(gt[2]) - float(gt[0]), float(gt[3]) - float(gt[1])
        thr = min(0.5, w * h / ((w + 10) * (h + 10)))
        order = sorted(range(len(sims)), key=lambda j: -sims[j])
        for j in order:
            if ref_iou(boxes[j], gt) >= thr:
                labels[j] = 1
                break
    return labels


def ref_query_scores(images, count_gt, topk):
    """AP (times recall) and top-k hits of one query, from ``(sims, boxes,
    gt)`` of each gallery image searched (see :func:`ref_labels`) and the
    number of them that hold the query person."""
    y_true, y_score, count_tp = [], [], 0
    for sims, boxes, gt in images:
        labels = ref_labels(sims, boxes, gt)
        count_tp += sum(labels)
        y_true += labels
        y_score += sims
    if count_gt == 0 or count_tp == 0:
        ap = 0.0
    else:
        ap = ref_ap(y_true, y_score) * count_tp / count_gt
    # Top-k: descending similarity; on a tie the non-matching detection
    # comes first (ties are broken against the query).
    ranked = sorted(zip(y_score, y_true), key=lambda t: (-t[0], t[1]))
    return ap, [any(t for _, t in ranked[:k]) for k in topk]


def ref_detection(results,
                  protocol,
                  score_thr=0.5,
                  iou_thr=0.5,
                  labeled_only=False):
    y_true, y_score = [], []
    count_gt, count_tp = 0, 0
    for img_id, g in protocol.gallery.items():
        gt_boxes = np.asarray(g.boxes).reshape(-1, 4)
        if labeled_only:
            gt_boxes = gt_boxes[np.asarray(g.person_ids) >= 0]
            if len(gt_boxes) == 0:
                continue
        item = results['gallery'][img_id]
        keep = item['scores'] >= score_thr
        det, scores = item['bboxes'][keep], item['scores'][keep]
        num_gt, num_det = len(gt_boxes), len(det)
        count_gt += num_gt
        if num_det == 0:
            continue
        if num_gt == 0:
            y_true += [False] * num_det
            y_score += list(scores)
            continue
        ious = np.zeros((num_gt, num_det), dtype=np.float32)
        for i in range(num_gt):
            for j in range(num_det):
                ious[i, j] = ref_iou(gt_boxes[i], det[j])
        tf = ious >= iou_thr
        for j in range(num_det):
            best = np.argmax(ious[:, j])
            for i in range(num_gt):
                if i != best:
                    tf[i, j] = False
        for i in range(num_gt):
            best = np.argmax(ious[i, :])
            for j in range(num_det):
                if j != best:
                    tf[i, j] = False
        for j in range(num_det):
            y_true.append(bool(tf[:, j].any()))
            y_score.append(scores[j])
        count_tp += int(tf.sum())
    recall = count_tp / count_gt
    return recall, ref_ap(y_true, y_score) * recall
