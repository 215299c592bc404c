# Copyright (c) mmpsearch contributors. All rights reserved.
"""Score a saved person-search results file offline.

    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset cuhk \
        --data-root data/CUHK-SYSU [--gallery-size 100 50 4000] [--json OUT]
    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset prw \
        --data-root data/PRW [--cross-camera] [--json OUT]

RESULTS is the pickle written by ``tools/test.py --out`` (loaded with a
restricted unpickler: it may only hold dicts, lists, str and numpy arrays).
A table in percent is printed; ``--json`` writes fractions:
``{"mAP", "top1", "top5", "top10", "det_ap", "det_recall",
"labeled_det_ap", "labeled_det_recall"}`` -- for several gallery sizes one
such object per size, keyed by the size (``{"50": {...}, "100": {...}}``);
with ``--cross-camera`` the search numbers of the object are those of the
cross-camera protocol (the table shows both).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmpsearch.evaluation.functional import (CROSS_CAMERA_SUFFIX,
                                             DETECTION_KEYS, SEARCH_KEYS,
                                             evaluate_person_search,
                                             gallery_size_suffix)
from mmpsearch.evaluation.metrics import person_search_metric
from mmpsearch.evaluation.results_io import load_search_results

JSON_KEYS = SEARCH_KEYS + DETECTION_KEYS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Score a person-search results file under the standard '
        'CUHK-SYSU / PRW protocol')
    parser.add_argument('results', help='results .pkl (tools/test.py --out)')
    parser.add_argument('--dataset', required=True, choices=['cuhk', 'prw'])
    parser.add_argument(
        '--data-root', required=True, help='root of the released dataset')
    parser.add_argument(
        '--gallery-size',
        type=int,
        nargs='+',
        default=None,
        help='CUHK-SYSU gallery size(s) among '
        f'{person_search_metric.CUHK_GALLERY_SIZES} (default 100)')
    parser.add_argument(
        '--cross-camera',
        action='store_true',
        help='PRW: score the cross-camera protocol (gallery = frames of the '
        'other cameras)')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.5,
        help='score threshold of gallery detections (protocol: 0.5)')
    parser.add_argument('--json', help='write the metrics to this JSON file')
    return parser.parse_args(argv)


def score(results: dict,
          dataset: str,
          protocols: list,
          gallery_sizes: List[int],
          cross_camera: bool = False,
          score_thr: float = 0.5) -> Dict[str, float]:
    """All metrics of ``results`` (flat keys, as ``PersonSearchMetric``)."""
    return evaluate_person_search(
        results,
        protocols,
        score_thr=score_thr,
        cross_camera=cross_camera and dataset == 'prw')


def json_summary(metrics: Dict[str, float], gallery_sizes: List[int],
                 cross_camera: bool) -> dict:
    """The ``--json`` object(s) from the flat metric keys."""
    det = {k: metrics[k] for k in DETECTION_KEYS}

    def obj(suffix: str) -> dict:
        out = {k: metrics[k + suffix] for k in SEARCH_KEYS}
        out.update(det)
        return {k: out[k] for k in JSON_KEYS}

    if len(gallery_sizes) > 1:
        return {
            str(s): obj('' if i == 0 else gallery_size_suffix(s))
            for i, s in enumerate(gallery_sizes)
        }
    return obj(CROSS_CAMERA_SUFFIX if cross_camera else '')


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.dataset == 'prw' and args.gallery_size is not None:
        raise SystemExit('--gallery-size applies to CUHK-SYSU only')
    if args.dataset == 'cuhk' and args.cross_camera:
        raise SystemExit('--cross-camera applies to PRW only')
    sizes = args.gallery_size or ([100] if args.dataset == 'cuhk' else [])
    for s in sizes:
        if s not in person_search_metric.CUHK_GALLERY_SIZES:
            raise SystemExit(
                f'--gallery-size {s}: unknown CUHK-SYSU gallery size, '
                f'expected one of {person_search_metric.CUHK_GALLERY_SIZES}')
    if len(set(sizes)) != len(sizes):
        raise SystemExit(f'--gallery-size {sizes}: sizes repeat')
    if not osp.isfile(args.results):
        raise SystemExit(f'results file {args.results} does not exist')

    if args.dataset == 'cuhk':
        protocols = [
            person_search_metric.load_protocol('cuhk', args.data_root, s)
            for s in sizes
        ]
    else:
        protocols = [person_search_metric.load_protocol('prw', args.data_root)]
    results = load_search_results(args.results, protocols[0])
    metrics = score(results, args.dataset, protocols, sizes, args.cross_camera,
                    args.score_thr)
    print(
        person_search_metric.PersonSearchMetric.format_table(
            metrics, sizes, args.cross_camera))
    summary = json_summary(metrics, sizes, args.cross_camera)
    if args.json:
        dirname = osp.dirname(osp.abspath(args.json))
        os.makedirs(dirname, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
        print(f'metrics written to {args.json}')
    return summary


if __name__ == '__main__':
    main(sys.argv[1:])
