# Copyright (c) mmpsearch contributors. All rights reserved.
"""Score a saved person-search results file offline.

    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset cuhk \
        --data-root data/CUHK-SYSU [--gallery-size 100 50 4000] [--json OUT]
    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset prw \
        --data-root data/PRW [--cross-camera] [--json OUT]
    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset cuhk \
        --data-root data/CUHK-SYSU --subset occlusion [--gallery-size 50]
    python tools/analysis_tools/eval_search.py RESULTS.pkl --dataset cuhk \
        --data-root data/CUHK-SYSU --cbgm [--cbgm-k1 10 --cbgm-k2 3]

RESULTS is the pickle written by ``tools/test.py --out`` (loaded with a
restricted unpickler: it may only hold dicts, lists, str and numpy arrays).
A table in percent is printed; ``--json`` writes fractions:
``{"mAP", "top1", "top5", "top10", "det_ap", "det_recall",
"labeled_det_ap", "labeled_det_recall"}`` -- for several gallery sizes one
such object per size, keyed by the size (``{"50": {...}, "100": {...}}``);
with ``--cross-camera`` the search numbers of the object are those of the
cross-camera protocol (the table shows both); with ``--subset`` they are
those of the CUHK-SYSU occlusion / low-resolution query subset
(``annotation/test/subset/{Occlusion,Resolution}.mat``), its queries
searched in the gallery lists of the subset file, or with ``--gallery-size``
in their ``TestG{N}`` lists (the table shows the full protocol too; the
detection numbers are those of the whole gallery). Beside them, ``"settings"``
records what the numbers were measured with: score threshold, gallery
size(s), PRW camera setting, CBGM / subset, and the model's sampling steps,
proposals and seed from the results file's ``"meta"``
(``mmpsearch/evaluation/run_settings.py``; null where unknown).
With ``--cbgm`` every search number is re-ranked with Context Bipartite
Graph Matching (SeqNet, AAAI 2021; ``mmpsearch/evaluation/functional/
cbgm.py``), the "+CBGM" numbers of the tables; ``--cbgm-k1`` / ``--cbgm-k2``
default to SeqNet's 10 / 3 (CUHK-SYSU) and 30 / 4 (PRW).
"""
import argparse
import sys
from typing import Dict, List, Optional, Sequence

from mmpsearch.utils.cli_args import (add_json_args, add_results_args,
                                      add_score_thr_arg)

# Copies of mmpsearch's constants for the parser, which is built before
# mmpsearch.datasets (torch) is imported:
# mmpsearch.datasets.cuhk_subsets.CUHK_SUBSETS
SUBSETS = ('occlusion', 'resolution')
# mmpsearch.datasets.cuhk_sysu.CUHK_GALLERY_SIZES
GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Score a person-search results file under the standard '
        'CUHK-SYSU / PRW protocol')
    add_results_args(
        parser,
        results_help='results .pkl (tools/test.py --out)',
        data_root_help='root of the released dataset')
    parser.add_argument(
        '--gallery-size',
        type=int,
        nargs='+',
        default=None,
        help='CUHK-SYSU gallery size(s) among '
        f'{GALLERY_SIZES} (default 100)')
    parser.add_argument(
        '--cross-camera',
        action='store_true',
        help='PRW: score the cross-camera protocol (gallery = frames of the '
        'other cameras)')
    parser.add_argument(
        '--subset',
        choices=SUBSETS,
        default=None,
        help='CUHK-SYSU: score the occlusion (annotation/test/subset/'
        'Occlusion.mat) or low-resolution (Resolution.mat) query subset, '
        'each query in the gallery list of the subset file, or with '
        '--gallery-size in its TestG{N} list')
    parser.add_argument(
        '--cbgm',
        action='store_true',
        help='re-rank with Context Bipartite Graph Matching (SeqNet)')
    parser.add_argument(
        '--cbgm-k1',
        type=int,
        default=None,
        help='CBGM: re-score the gallery images of the query\'s K1 most '
        'similar detections (default 10 CUHK-SYSU, 30 PRW)')
    parser.add_argument(
        '--cbgm-k2',
        type=int,
        default=None,
        help='CBGM: context persons of the query, itself included '
        '(default 3 CUHK-SYSU, 4 PRW)')
    add_score_thr_arg(parser)
    add_json_args(
        parser,
        help='write the metrics to this JSON file (a new one, unless --force)')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.evaluation.functional import CROSS_CAMERA_SUFFIX  # noqa: E402
from mmpsearch.evaluation.functional import DETECTION_KEYS  # noqa: E402
from mmpsearch.evaluation.functional import SEARCH_KEYS  # noqa: E402
from mmpsearch.evaluation.functional import evaluate_person_search  # noqa
from mmpsearch.evaluation.functional import gallery_size_suffix  # noqa: E402
from mmpsearch.evaluation.functional import subset_suffix  # noqa: E402
from mmpsearch.evaluation.functional.cbgm import check_cbgm_k_bounds  # noqa
from mmpsearch.evaluation.functional.cbgm import resolve_cbgm_k  # noqa: E402
from mmpsearch.evaluation.functional.protocol_settings import \
    check_cuhk_gallery_sizes  # noqa: E402
from mmpsearch.evaluation.metrics import person_search_metric  # noqa: E402
from mmpsearch.evaluation.results_io import load_search_results  # noqa: E402
from mmpsearch.evaluation.results_io import require_results_file  # noqa
from mmpsearch.evaluation.run_settings import ALL_FRAMES  # noqa: E402
from mmpsearch.evaluation.run_settings import CROSS_CAMERA  # noqa: E402
from mmpsearch.evaluation.run_settings import RESULTS_META_KEY  # noqa: E402
from mmpsearch.evaluation.run_settings import SETTINGS_KEY  # noqa: E402
from mmpsearch.evaluation.run_settings import evaluation_settings  # noqa
from mmpsearch.evaluation.run_settings import settings_from_meta  # noqa
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.cli import refuse_existing_json  # noqa: E402
from mmpsearch.utils.cli import write_json  # noqa: E402

JSON_KEYS = SEARCH_KEYS + DETECTION_KEYS


def score(results: dict,
          dataset: str,
          protocols: list,
          gallery_sizes: List[int],
          cross_camera: bool = False,
          score_thr: float = 0.5,
          subsets: Sequence = (),
          cbgm: bool = False,
          cbgm_k1: Optional[int] = None,
          cbgm_k2: Optional[int] = None) -> Dict[str, float]:
    """All metrics of ``results`` (flat keys, as ``PersonSearchMetric``;
    ``subsets``: ``QuerySubset`` s of ``load_cuhk_subset``)."""
    return evaluate_person_search(
        results,
        protocols,
        score_thr=score_thr,
        cross_camera=cross_camera and dataset == 'prw',
        subsets=subsets,
        cbgm=cbgm,
        cbgm_k1=cbgm_k1,
        cbgm_k2=cbgm_k2)


def json_summary(metrics: Dict[str, float],
                 gallery_sizes: List[int],
                 cross_camera: bool,
                 subset: Optional[str] = None,
                 subset_in_testg: bool = False) -> dict:
    """The ``--json`` object(s) from the flat metric keys (``subset``: the
    search numbers are those of that query subset, in the TestG lists of
    ``gallery_sizes`` when ``subset_in_testg``, else in the subset file's
    lists)."""
    det = {k: metrics[k] for k in DETECTION_KEYS}

    def obj(suffix: str) -> dict:
        out = {k: metrics[k + suffix] for k in SEARCH_KEYS}
        out.update(det)
        return {k: out[k] for k in JSON_KEYS}

    if subset is not None:
        if not subset_in_testg:
            return obj(subset_suffix(subset))
        if len(gallery_sizes) == 1:
            return obj(subset_suffix(subset, gallery_sizes[0]))
        return {str(s): obj(subset_suffix(subset, s)) for s in gallery_sizes}
    if len(gallery_sizes) > 1:
        return {
            str(s): obj('' if i == 0 else gallery_size_suffix(s))
            for i, s in enumerate(gallery_sizes)
        }
    return obj(CROSS_CAMERA_SUFFIX if cross_camera else '')


def json_settings(args: argparse.Namespace, gallery_sizes: List[int],
                  results: dict) -> dict:
    """The ``"settings"`` of the ``--json`` object: this scoring's
    protocol settings and the model's, from the results file's ``"meta"``
    (null where it has none). CBGM and subset options are read when this
    script has them."""
    camera = None
    if args.dataset == 'prw':
        camera = CROSS_CAMERA if args.cross_camera else ALL_FRAMES
    cbgm = getattr(args, 'cbgm', None)
    out = evaluation_settings(
        args.dataset,
        args.score_thr,
        gallery_sizes,
        camera,
        cbgm=cbgm,
        cbgm_k1=getattr(args, 'cbgm_k1', None),
        cbgm_k2=getattr(args, 'cbgm_k2', None),
        subset=getattr(args, 'subset', None))
    out.update(settings_from_meta(results.get(RESULTS_META_KEY)))
    return out


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.dataset == 'prw' and args.gallery_size is not None:
        raise SystemExit('--gallery-size applies to CUHK-SYSU only')
    if args.dataset == 'cuhk' and args.cross_camera:
        raise SystemExit('--cross-camera applies to PRW only')
    if args.dataset == 'prw' and args.subset is not None:
        raise SystemExit('--subset applies to CUHK-SYSU only')
    sizes = args.gallery_size or ([100] if args.dataset == 'cuhk' else [])
    with exit_on_refusal(ValueError):
        check_cuhk_gallery_sizes(sizes, '--gallery-size')
    if args.cbgm:
        try:
            args.cbgm_k1, args.cbgm_k2 = resolve_cbgm_k(
                args.dataset, args.cbgm_k1, args.cbgm_k2)
        except ValueError as e:  # 'cbgm_k1 must be ...' -> '--cbgm-k1 ...'
            raise SystemExit('--' + str(e).replace('_', '-')) from None
    elif args.cbgm_k1 is not None or args.cbgm_k2 is not None:
        raise SystemExit('--cbgm-k1 / --cbgm-k2 need --cbgm')
    with exit_on_refusal(FileNotFoundError):
        require_results_file(args.results)  # a folder is named as one
        refuse_existing_json(args)

    if args.dataset == 'cuhk':
        protocols = [
            person_search_metric.load_protocol('cuhk', args.data_root, s)
            for s in sizes
        ]
    else:
        protocols = [person_search_metric.load_protocol('prw', args.data_root)]
    subsets, settings_sizes = [], sizes
    if args.subset is not None:
        from mmpsearch.datasets.cuhk_subsets import load_cuhk_subset
        if args.gallery_size:  # the subset's queries in their TestG lists
            subsets = [
                load_cuhk_subset(args.data_root, args.subset, protocols[0], s)
                for s in sizes
            ]
        else:  # in the gallery lists of the subset file
            subsets = [
                load_cuhk_subset(args.data_root, args.subset, protocols[0])
            ]
            settings_sizes = sorted(
                {len(q.gallery)
                 for q in subsets[0].protocol.queries})
    results = load_search_results(args.results, protocols[0])
    if args.cbgm:  # bounded by what the results hold, before scoring
        try:
            check_cbgm_k_bounds(results, args.dataset, args.cbgm_k1,
                                args.cbgm_k2, args.score_thr,
                                ('--cbgm-k1', '--cbgm-k2'), args.results)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    metrics = score(results, args.dataset, protocols, sizes, args.cross_camera,
                    args.score_thr, subsets, args.cbgm, args.cbgm_k1,
                    args.cbgm_k2)
    if args.cbgm:
        print(f'search re-ranked with CBGM (k1={args.cbgm_k1}, '
              f'k2={args.cbgm_k2})')
    print(
        person_search_metric.PersonSearchMetric.format_table(
            metrics, sizes, args.cross_camera,
            [person_search_metric.subset_row(s) for s in subsets]))
    summary = json_summary(metrics, sizes, args.cross_camera, args.subset,
                           bool(args.gallery_size))
    summary[SETTINGS_KEY] = json_settings(args, settings_sizes, results)
    if args.json:  # refused above unless new or --force
        write_json(
            summary, args.json, True, 'metrics written to', makedirs=True)
    return summary


if __name__ == '__main__':
    main(sys.argv[1:])
