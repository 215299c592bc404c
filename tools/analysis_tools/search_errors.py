# Copyright (c) mmpsearch contributors. All rights reserved.
"""Where a model's search mAP is lost: the false matches that rank above
true ones, by kind, and what each kind costs.

Reads a saved ``results.pkl`` (``tools/test.py --out``) and, for every
query, ranks its candidate gallery detections (score >= ``--score-thr``,
the protocol's 0.5) by cosine similarity as the protocol does. The true
match in a gallery image holding the query is its most similar detection
whose IoU with the query's box reaches ``min(0.5, wh / ((w+10)(h+10)))``;
every other candidate is a false match of one kind (first that applies):

- ``query_person``: IoU >= 0.1 with the query's own box in that image -- a
  second, worse-placed box of the searched person (localisation);
- ``other_person``: IoU >= 0.5 with another person, labeled or not (a
  re-identification confusion);
- ``other_person_poor_box``: IoU 0.1-0.5 with another person;
- ``background``: IoU < 0.1 with every person.

For each kind it reports how many of them outrank at least one true match
of their query, and the mAP gained if that kind alone were removed from
every ranking (what fixing it would be worth). ``missed`` is the mAP
gained if every true match that no detection covers were found at rank
one (the recall ceiling). The per-query APs are the protocol's (tie-grouped
AP times the found fraction); their mean equals ``eval_search.py``'s mAP::

    python tools/analysis_tools/search_errors.py results.pkl \\
        --dataset cuhk --data-root data/synthetic_cuhk
"""
import argparse
from typing import Dict, List, Optional

import numpy as np

from mmpsearch.utils.cli_args import (add_json_args, add_results_args,
                                      add_score_thr_arg)

KINDS = ('query_person', 'other_person', 'other_person_poor_box', 'background')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='False matches that rank above true ones, by kind')
    add_results_args(parser)
    parser.add_argument(
        '--gallery-size',
        type=int,
        default=100,
        help='CUHK-SYSU gallery size (default 100, the protocol\'s)')
    add_score_thr_arg(parser)
    add_json_args(parser)
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.evaluation.functional.box_ops import pairwise_iou  # noqa
from mmpsearch.evaluation.functional.box_ops import \
    search_iou_threshold  # noqa: E402
from mmpsearch.evaluation.functional.gallery import l2_normalize  # noqa
from mmpsearch.evaluation.functional.ranking import \
    average_precision  # noqa: E402
from mmpsearch.evaluation.metrics.person_search_metric import \
    load_results_and_protocol  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.cli import refuse_existing_json  # noqa: E402
from mmpsearch.utils.cli import write_json  # noqa: E402


def _candidates(protocol, dataset: str) -> List[List[tuple]]:
    """Per query its candidate gallery images as ``(img_id, gt box or
    None)``: CUHK-SYSU its TestG list, PRW every other frame (the first box
    of the query's id as its ground truth)."""
    if dataset == 'cuhk':
        return [list(q.gallery) for q in protocol.queries]
    out = []
    for q in protocol.queries:
        cands = []
        for img_id, g in protocol.gallery.items():
            if img_id == q.img_id:
                continue
            hit = np.flatnonzero(np.asarray(g.person_ids) == q.person_id)
            cands.append((img_id, g.boxes[hit[0]] if hit.size else None))
        out.append(cands)
    return out


def search_errors(results: dict,
                  protocol,
                  dataset: str = 'cuhk',
                  score_thr: float = 0.5) -> Dict[str, object]:
    """The figures of the module docstring.

    Args:
        results: A loaded results file: ``gallery`` (per image ``bboxes``,
            ``scores``, ``embeddings``) and ``query`` (``embedding`` each,
            in the protocol's query order).
        protocol: The ``SearchProtocol`` the results were made for.
        dataset: ``'cuhk'`` or ``'prw'`` (same-camera frames included).
        score_thr: Gallery detections below it are dropped.
    """
    kept = {}
    for img_id, det in results['gallery'].items():
        scores = np.asarray(det['scores'], np.float64).reshape(-1)
        keep = scores >= score_thr
        kept[img_id] = (np.asarray(det['bboxes'], np.float64).reshape(-1,
                                                                      4)[keep],
                        l2_normalize(
                            np.asarray(det['embeddings'], np.float64)[keep]))
    gt = {
        i: (np.asarray(g.boxes, np.float64).reshape(-1, 4))
        for i, g in protocol.gallery.items()
    }
    aps = {k: [] for k in ('all', 'missed') + KINDS}
    outranking = {k: 0 for k in KINDS}
    found_frac = []
    for q, (query, cands) in enumerate(
            zip(results['query'], _candidates(protocol, dataset))):
        emb = l2_normalize(
            np.asarray(query['embedding'], np.float64).reshape(1, -1))[0]
        sims, labels, kinds = [], [], []
        num_gt, num_found = 0, 0
        seen = set()
        for img_id, qbox in cands:
            if img_id in seen:  # listed twice: scored once (public code)
                num_gt += qbox is not None
                continue
            seen.add(img_id)
            boxes, embs = kept.get(img_id, (np.zeros((0, 4)), ) * 2)
            s = embs @ emb if len(boxes) else np.zeros(0)
            kind = np.full(len(boxes), 'background', dtype=object)
            others = gt[img_id]
            if qbox is not None:
                qbox = np.asarray(qbox, np.float64).reshape(1, 4)
                others = others[pairwise_iou(others, qbox)[:, 0] < 0.99]
            iou_o = pairwise_iou(boxes, others).max(axis=1, initial=0.0)
            kind[iou_o >= 0.1] = 'other_person_poor_box'
            kind[iou_o >= 0.5] = 'other_person'
            label = np.zeros(len(boxes), bool)
            if qbox is not None:
                num_gt += 1
                iou_q = pairwise_iou(boxes, qbox)[:, 0]
                kind[iou_q >= 0.1] = 'query_person'
                ok = np.flatnonzero(iou_q >= search_iou_threshold(qbox)[0])
                if ok.size:
                    label[ok[np.argmax(s[ok])]] = True
                    num_found += 1
            sims.append(s)
            labels.append(label)
            kinds.append(kind)
        if num_gt == 0:
            continue  # left out of mAP, as the protocol does
        sims = np.concatenate(sims) if sims else np.zeros(0)
        labels = np.concatenate(labels) if labels else np.zeros(0, bool)
        kinds = np.concatenate(kinds) if kinds else np.zeros(0, object)

        def ap(drop: Optional[np.ndarray] = None, found: int = num_found):
            keep = np.ones(len(sims), bool) if drop is None else ~drop
            return average_precision(labels[keep], sims[keep]) * \
                found / num_gt

        aps['all'].append(ap())
        # the recall ceiling: the missing true matches found at rank one
        if num_found < num_gt:
            top = sims.max(initial=0.0) + 1.0
            extra = num_gt - num_found
            full = average_precision(
                np.concatenate([labels, np.ones(extra, bool)]),
                np.concatenate([sims, np.full(extra, top)]))
            aps['missed'].append(full)
        else:
            aps['missed'].append(aps['all'][-1])
        worst_tp = sims[labels].min(initial=np.inf)
        for k in KINDS:
            mask = kinds == k
            aps[k].append(ap(mask & ~labels))
            outranking[k] += int((mask & ~labels & (sims >= worst_tp)).sum())
        found_frac.append(num_found / num_gt)
    if not aps['all']:
        raise ValueError('no query has a gallery image that holds it')
    m = {k: float(np.mean(v)) for k, v in aps.items()}
    return dict(
        num_queries=len(aps['all']),
        mAP=m['all'],
        found=float(np.mean(found_frac)),
        gain_if_removed={k: m[k] - m['all']
                         for k in ('missed', ) + KINDS},
        outranking_per_query={
            k: outranking[k] / len(aps['all'])
            for k in KINDS
        })


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    with exit_on_refusal(FileNotFoundError):
        refuse_existing_json(args)
        results, protocol = load_results_and_protocol(args.results,
                                                      args.dataset,
                                                      args.data_root,
                                                      args.gallery_size)
    out = search_errors(results, protocol, args.dataset, args.score_thr)
    print(f'{out["num_queries"]} queries, detections scoring >= '
          f'{args.score_thr}: mAP {100 * out["mAP"]:.1f}, true matches '
          f'found {100 * out["found"]:.1f} %')
    print(f'{"kind":<24}{"outranking a true match / query":>34}'
          f'{"mAP if removed":>16}')
    for k in KINDS:
        print(f'{k:<24}{out["outranking_per_query"][k]:>34.2f}'
              f'{100 * (out["mAP"] + out["gain_if_removed"][k]):>16.1f}')
    print(f'{"missed (found at rank 1)":<58}'
          f'{100 * (out["mAP"] + out["gain_if_removed"]["missed"]):>16.1f}')
    if args.json:
        write_json(out, args.json, args.force)
    return out


if __name__ == '__main__':
    main()
