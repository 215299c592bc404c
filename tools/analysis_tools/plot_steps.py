# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search mAP, detection AP and time over sampling steps (PSDiff Fig. 5).

    python tools/analysis_tools/plot_steps.py \
        --metrics 1=metrics_steps_1.json 2=metrics_steps_2.json ... \
        [--benchmark speed.json] --out steps.png

``--metrics`` takes the ``--json`` output of eval_search.py for each step
count; ``--benchmark`` the ``--json`` output of benchmark.py (its per-image
time at each step count).
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmpsearch.utils.cli_args import add_force_arg


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--metrics',
        nargs='+',
        required=True,
        metavar='STEPS=JSON',
        help='eval_search.py --json output per step count')
    parser.add_argument(
        '--benchmark', help='benchmark.py --json output (time per image)')
    parser.add_argument('--out', required=True, help='output PNG')
    add_force_arg(parser, flag='--overwrite')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa: E402
from mmpsearch.visualization.pyplot import headless_pyplot  # noqa: E402

plt = headless_pyplot()


def read_metrics(items: List[str]) -> Dict[int, dict]:
    out = {}
    for item in items:
        if '=' not in item:
            sys.exit(f'--metrics {item}: expected STEPS=JSON, e.g. '
                     '4=metrics_steps_4.json')
        steps, path = item.split('=', 1)
        if not steps.isdigit() or int(steps) < 1:
            sys.exit(f'--metrics {item}: STEPS must be a positive integer')
        if not osp.isfile(path):
            sys.exit(f'--metrics {item}: {path} does not exist')
        with open(path) as f:
            m = json.load(f)
        for key in ('mAP', 'top1', 'det_ap'):
            if key not in m:
                sys.exit(f'{path} has no {key!r}: not an eval_search.py '
                         '--json file of one gallery size')
        out[int(steps)] = m
    return dict(sorted(out.items()))


def read_times(path: str) -> Dict[int, float]:
    if not osp.isfile(path):
        sys.exit(f'--benchmark {path} does not exist')
    with open(path) as f:
        bench = json.load(f)
    if 'rows' not in bench:
        sys.exit(f'{path} has no "rows": not a benchmark.py --json file')
    return {int(r['steps']): float(r['total_ms']) for r in bench['rows']}


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    with exit_on_refusal():
        refuse_existing_file(args.out, '--out', args.overwrite, '--overwrite')
    metrics = read_metrics(args.metrics)
    steps = list(metrics)
    times = read_times(args.benchmark) if args.benchmark else {}

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    ax.plot(
        steps, [100 * metrics[k]['mAP'] for k in steps],
        'o-',
        label='search mAP')
    ax.plot(
        steps, [100 * metrics[k]['top1'] for k in steps], 's--', label='top-1')
    ax.plot(
        steps, [100 * metrics[k]['det_ap'] for k in steps],
        '^-.',
        label='detection AP')
    ax.set_xscale('log', base=2)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(k) for k in steps])
    ax.set_xlabel('sampling steps')
    ax.set_ylabel('%')
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if times:
        ax2 = ax.twinx()
        ts = [k for k in steps if k in times]
        h, = ax2.plot(ts, [times[k] for k in ts], 'kx:', label='ms / image')
        ax2.set_ylabel('ms / image')
        handles.append(h)
        labels.append('ms / image')
    ax.legend(handles, labels, loc='lower right')
    ax.set_title('PSDiff: accuracy and time over sampling steps')
    fig.tight_layout()
    fig.savefig(args.out)
    plt.close(fig)
    for k in steps:
        t = f'  {times[k]:.1f} ms/image' if k in times else ''
        print(f'steps {k}: mAP {100 * metrics[k]["mAP"]:.2f}  det AP '
              f'{100 * metrics[k]["det_ap"]:.2f}{t}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
