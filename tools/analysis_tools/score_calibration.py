# Copyright (c) mmpsearch contributors. All rights reserved.
"""How a model's detection scores sit against the protocol's 0.5 threshold.

Reads a saved ``results.pkl`` (best written by ``tools/test.py`` with a low
``model.test_cfg.score_thr``, e.g. 0.05, so that what the threshold drops
is still there) and, over every person of the gallery images, reports:

- the score quantiles of the *true* detections: detections and persons
  matched one-to-one at IoU >= 0.5 by descending score (VOC style), and
  the fraction of persons whose true detection passes 0.5;
- duplicates: detections with IoU >= 0.5 only to persons already taken
  (after the model's NMS), per person, and how many of them pass 0.5;
- false detections (IoU < 0.5 with every person) passing 0.5 per image.

No threshold is chosen here; the protocol's stays 0.5::

    python tools/test.py CONFIG CKPT --out results.pkl \\
        --cfg-options model.test_cfg.score_thr=0.05
    python tools/analysis_tools/score_calibration.py results.pkl \\
        --dataset cuhk --data-root data/synthetic_cuhk --json calib.json
"""
import argparse
from typing import Dict, List, Optional

import numpy as np

from mmpsearch.utils.cli_args import (add_json_args, add_results_args,
                                      add_score_thr_arg)

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Scores of true, duplicate and false detections')
    add_results_args(parser)
    add_score_thr_arg(
        parser,
        '--thr',
        help='the score threshold to report against '
        '(default 0.5, the protocol\'s)')
    add_json_args(parser)
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.evaluation.functional.box_ops import pairwise_iou  # noqa
from mmpsearch.evaluation.metrics.person_search_metric import \
    load_results_and_protocol  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.cli import refuse_existing_json  # noqa: E402
from mmpsearch.utils.cli import write_json  # noqa: E402


def calibration(gallery: Dict[str, dict],
                gt: Dict[str, np.ndarray],
                thr: float = 0.5,
                gt_ids: Optional[Dict[str, np.ndarray]] = None) -> dict:
    """The figures of the module docstring.

    Args:
        gallery: ``results['gallery']``: per image ``bboxes`` (n, 4) and
            ``scores`` (n,).
        gt: Per gallery image its persons' boxes (m, 4), x1y1x2y2.
        thr: The score threshold.
        gt_ids: Per gallery image its persons' ids (m,), -1 unlabeled;
            adds the passing fractions of labeled and unlabeled persons.
    """
    true_scores, covered, dup_counts, labeled = [], [], [], []
    dup_pass, false_pass = 0, 0
    for img_id, boxes_gt in gt.items():
        det = gallery.get(img_id, {})
        boxes = np.asarray(det.get('bboxes', np.zeros((0, 4))),
                           np.float64).reshape(-1, 4)
        scores = np.asarray(det.get('scores', np.zeros(0)),
                            np.float64).reshape(-1)
        boxes_gt = np.asarray(boxes_gt, np.float64).reshape(-1, 4)
        m = len(boxes_gt)
        if m == 0:
            false_pass += int((scores >= thr).sum())
            continue
        iou = pairwise_iou(boxes_gt, boxes)  # (m, n)
        # VOC-style one-to-one matching by descending score: a detection
        # takes the free person it overlaps most (IoU >= 0.5); one that
        # only overlaps taken persons is a duplicate of its best one.
        taken = np.full(m, -1)
        dups = np.zeros(m, np.int64)
        for d in np.argsort(-scores, kind='stable'):
            ok = iou[:, d] >= 0.5
            if not ok.any():
                false_pass += int(scores[d] >= thr)
                continue
            free = ok & (taken < 0)
            if free.any():
                taken[np.argmax(np.where(free, iou[:, d], -1))] = d
            else:
                dups[np.argmax(iou[:, d])] += 1
                dup_pass += int(scores[d] >= thr)
        ids = np.zeros(m) if gt_ids is None else np.asarray(
            gt_ids[img_id]).reshape(-1)
        for g in range(m):
            labeled.append(ids[g] >= 0)
            covered.append(taken[g] >= 0)
            true_scores.append(
                float(scores[taken[g]]) if taken[g] >= 0 else 0.0)
            dup_counts.append(int(dups[g]))
    true_scores = np.asarray(true_scores)
    found = np.asarray(covered, dtype=bool)
    num_persons = int(true_scores.size)
    if num_persons == 0:
        raise ValueError('score calibration: the gallery has no persons')
    labeled = np.asarray(labeled, dtype=bool)
    passing = true_scores >= thr
    by_kind = {}
    if gt_ids is not None:
        for name, mask in (('labeled', labeled), ('unlabeled', ~labeled)):
            by_kind[f'{name}_persons'] = int(mask.sum())
            by_kind[f'{name}_covered'] = float(found[mask].mean()) \
                if mask.any() else 0.0
            by_kind[f'{name}_passing'] = float(passing[mask].mean()) \
                if mask.any() else 0.0
    return dict(
        **by_kind,
        score_thr=thr,
        num_persons=num_persons,
        covered=float(found.mean()),
        true_passing=float((true_scores >= thr).mean()),
        true_score_quantiles={
            str(q):
            float(np.quantile(true_scores[found], q)) if found.any() else 0.0
            for q in QUANTILES
        },
        duplicates_per_person=float(np.mean(dup_counts)),
        duplicates_passing_per_person=dup_pass / num_persons,
        false_passing_per_image=false_pass / max(len(gt), 1))


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    with exit_on_refusal(FileNotFoundError):
        refuse_existing_json(args)
        # the gallery's ground truth is the same at every CUHK-SYSU size
        results, protocol = load_results_and_protocol(args.results,
                                                      args.dataset,
                                                      args.data_root)
    gt = {img_id: g.boxes for img_id, g in protocol.gallery.items()}
    ids = {img_id: g.person_ids for img_id, g in protocol.gallery.items()}
    out = calibration(results['gallery'], gt, args.thr, ids)
    q = out['true_score_quantiles']
    print(f'{out["num_persons"]} gallery persons; a box with IoU >= 0.5 '
          f'for {100 * out["covered"]:.1f} %, passing {args.thr}: '
          f'{100 * out["true_passing"]:.1f} %')
    print(f'labeled persons ({out["labeled_persons"]}): covered '
          f'{100 * out["labeled_covered"]:.1f} %, passing '
          f'{100 * out["labeled_passing"]:.1f} %; unlabeled '
          f'({out["unlabeled_persons"]}): covered '
          f'{100 * out["unlabeled_covered"]:.1f} %, passing '
          f'{100 * out["unlabeled_passing"]:.1f} %')
    print('true-detection scores, quantiles 10/25/50/75/90 %: ' +
          ' / '.join(f'{q[str(k)]:.3f}' for k in QUANTILES))
    print(f'duplicates (IoU >= 0.5, after NMS) per person: '
          f'{out["duplicates_per_person"]:.2f}, passing: '
          f'{out["duplicates_passing_per_person"]:.2f}; false detections '
          f'passing per image: {out["false_passing_per_image"]:.2f}')
    if args.json:
        write_json(out, args.json, args.force)
    return out


if __name__ == '__main__':
    main()
