# Copyright (c) mmpsearch contributors. All rights reserved.
"""mAP and top-1 over CUHK-SYSU gallery sizes from ONE saved results file
(PSDiff Fig. 4): the gallery is run once, each size only re-scores it.

    python tools/analysis_tools/plot_gallery_size.py results.pkl \
        --data-root data/CUHK-SYSU --out gallery_size.png [--json out.json]
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Optional

from mmpsearch.utils.cli_args import add_force_arg


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', help='results .pkl (tools/test.py --out)')
    parser.add_argument(
        '--data-root', required=True, help='CUHK-SYSU-format dataset root')
    parser.add_argument(
        '--gallery-sizes',
        type=int,
        nargs='+',
        help='sizes to score (default: every TestG file the dataset has)')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--json', help='also write {size: {mAP, top1}}')
    parser.add_argument('--label', default=None, help='legend label')
    add_force_arg(parser, flag='--overwrite')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.datasets.cuhk_sysu import CUHK_GALLERY_SIZES  # noqa: E402
from mmpsearch.evaluation.functional import evaluate_person_search  # noqa
from mmpsearch.evaluation.functional import gallery_size_suffix  # noqa
from mmpsearch.evaluation.metrics.person_search_metric import \
    load_protocol  # noqa: E402
from mmpsearch.evaluation.results_io import load_search_results  # noqa
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa
from mmpsearch.visualization.pyplot import headless_pyplot  # noqa: E402

plt = headless_pyplot()


def available_sizes(data_root: str) -> List[int]:
    folder = osp.join(data_root, 'annotation', 'test', 'train_test')
    return [
        s for s in CUHK_GALLERY_SIZES
        if osp.isfile(osp.join(folder, f'TestG{s}.mat'))
    ]


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    with exit_on_refusal():
        refuse_existing_file(args.out, '--out', args.overwrite, '--overwrite')
        if args.json:
            refuse_existing_file(args.json, '--json', args.overwrite,
                                 '--overwrite')
    sizes = args.gallery_sizes or available_sizes(args.data_root)
    if not sizes:
        sys.exit(f'{args.data_root} has no annotation/test/train_test/'
                 'TestG*.mat file')
    for s in sizes:
        if s not in CUHK_GALLERY_SIZES:
            sys.exit(f'--gallery-sizes {s}: expected sizes among '
                     f'{CUHK_GALLERY_SIZES}')
    sizes = sorted(set(sizes))
    protocols = [load_protocol('cuhk', args.data_root, s) for s in sizes]
    results = load_search_results(args.results, protocols[0])
    metrics = evaluate_person_search(results, protocols)
    curve = {}
    for i, s in enumerate(sizes):
        suffix = '' if i == 0 else gallery_size_suffix(s)
        curve[s] = dict(
            mAP=metrics['mAP' + suffix], top1=metrics['top1' + suffix])
        print(f'gallery {s:>5}: mAP {100 * curve[s]["mAP"]:6.2f}  '
              f'top-1 {100 * curve[s]["top1"]:6.2f}')

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    label = args.label or osp.splitext(osp.basename(args.results))[0]
    ax.plot(
        sizes, [100 * curve[s]['mAP'] for s in sizes],
        'o-',
        label=f'{label} mAP')
    ax.plot(
        sizes, [100 * curve[s]['top1'] for s in sizes],
        's--',
        label=f'{label} top-1')
    ax.set_xscale('log')
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel('gallery size')
    ax.set_ylabel('%')
    ax.set_title('CUHK-SYSU: search over gallery sizes')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    plt.close(fig)
    print(f'wrote {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({str(k): v for k, v in curve.items()}, f, indent=2)
    return curve


if __name__ == '__main__':
    main()
