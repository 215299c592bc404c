# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search a gallery for a query person and draw the top hits.

    python demo/search_demo.py CONFIG CKPT --query-img q.jpg \
        --query-box 10 20 60 150 --gallery scenes/ --out search.png

    # a query of a CUHK-SYSU-format dataset (e.g. the synthetic demo data)
    # against its own TestG gallery, hits coloured by the ground truth
    python demo/search_demo.py CONFIG CKPT \
        --dataset-query data/synthetic_cuhk \
        --out search.png --show-steps steps.png
"""
import argparse
import os.path as osp
import sys

import numpy as np

from mmpsearch.utils.cli_args import add_force_arg, add_model_args


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_model_args(parser, 'model config', 'model checkpoint')
    parser.add_argument('--query-img', help='image holding the query person')
    parser.add_argument(
        '--query-box',
        type=float,
        nargs=4,
        metavar=('X1', 'Y1', 'X2', 'Y2'),
        help='the query person, in pixels')
    parser.add_argument('--gallery', help='folder of gallery images')
    parser.add_argument(
        '--dataset-query',
        metavar='DATA_ROOT',
        help='instead of the three options above: take query '
        '--query-index of this CUHK-SYSU-format dataset and its TestG50 '
        'gallery, and colour hits by the ground truth')
    parser.add_argument('--query-index', type=int, default=0)
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument(
        '--show-steps',
        metavar='PNG',
        help='also draw boxes and scores at each sampling step for the '
        'best hit\'s image (PSDiff Fig. 6)')
    parser.add_argument('--device', default='cpu')
    add_force_arg(
        parser, help='replace existing output files', flag='--overwrite')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.apis import denoising_steps  # noqa: E402
from mmpsearch.apis import index_gallery  # noqa: E402
from mmpsearch.apis import init_searcher  # noqa: E402
from mmpsearch.apis import search  # noqa: E402
from mmpsearch.apis.inference import _check_box, _read_image  # noqa: E402
from mmpsearch.evaluation.functional.box_ops import paired_iou  # noqa: E402
from mmpsearch.evaluation.functional.box_ops import \
    search_iou_threshold  # noqa: E402
from mmpsearch.utils import safe_checkpoint_loading  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa: E402
from mmpsearch.utils.overwrite import refuse_same_outputs  # noqa: E402
from mmpsearch.visualization import draw_denoising_steps  # noqa: E402
from mmpsearch.visualization import draw_search_result, write_png  # noqa: E402


def _is_match(box: np.ndarray, gt: np.ndarray) -> bool:
    """The protocol's test: IoU >= min(0.5, wh / ((w + 10)(h + 10)))."""
    box, gt = np.asarray(box)[None], np.asarray(gt, np.float32)[None]
    return bool(paired_iou(box, gt)[0] >= search_iou_threshold(gt)[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    for out in (args.out, args.show_steps):
        if out is None:
            continue
        if not out.lower().endswith('.png'):
            sys.exit(f'{out}: output files must be .png')
    # --out X --show-steps X: the steps picture replaced the search one
    with exit_on_refusal():
        refuse_same_outputs({
            '--out': args.out,
            '--show-steps': args.show_steps
        })
        refuse_existing_file(args.out, '--out', args.overwrite, '--overwrite')
        if args.show_steps is not None:
            refuse_existing_file(args.show_steps, '--show-steps',
                                 args.overwrite, '--overwrite')
    truth = None
    if args.dataset_query:
        from mmpsearch.datasets import load_cuhk_protocol
        protocol = load_cuhk_protocol(args.dataset_query, 50)
        if not 0 <= args.query_index < len(protocol.queries):
            sys.exit(f'--query-index {args.query_index}: the dataset has '
                     f'{len(protocol.queries)} queries')
        query = protocol.queries[args.query_index]
        img_dir = osp.join(args.dataset_query, 'Image', 'SSM')
        query_img = osp.join(img_dir, query.img_id)
        query_box = query.box
        gallery = [osp.join(img_dir, name) for name, _ in query.gallery]
        truth = {
            osp.join(img_dir, name): box
            for name, box in query.gallery if box is not None
        }
    else:
        missing = [
            name
            for name, val in (('--query-img', args.query_img),
                              ('--query-box', args.query_box), ('--gallery',
                                                                args.gallery))
            if val is None
        ]
        if missing:
            sys.exit(f'missing {", ".join(missing)} (or use --dataset-query)')
        query_img, query_box, gallery = (args.query_img, args.query_box,
                                         args.gallery)

    # the cheap checks before the model is built and the gallery indexed
    if args.topk < 1:
        sys.exit(f'--topk must be >= 1, got {args.topk}')
    try:
        _check_box(query_box, _read_image(query_img), str(query_img))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(str(e))
    with safe_checkpoint_loading():
        searcher = init_searcher(args.config, args.checkpoint, args.device)
    # everything is computed before anything is written
    index = index_gallery(searcher, gallery)
    hits = search(searcher, query_img, query_box, index, topk=args.topk)
    tiles = []
    for hit in hits:
        correct = None
        if truth is not None:
            gt = truth.get(hit.img_path)
            correct = gt is not None and _is_match(hit.bbox, gt)
        tiles.append((_read_image(hit.img_path), hit.bbox, hit.similarity,
                      hit.score, correct))
        print(f'#{hit.rank} {hit.img_path} box '
              f'{np.round(hit.bbox, 1).tolist()} similarity '
              f'{hit.similarity:.3f} detection {hit.score:.2f}' +
              ('' if correct is
               None else f' {"correct" if correct else "wrong"}'))
    picture = draw_search_result(_read_image(query_img), query_box, tiles)
    steps_picture = None
    if args.show_steps:
        target = hits[0].img_path if hits else index.img_paths[0]
        steps_picture = draw_denoising_steps(
            _read_image(target), denoising_steps(searcher, target))
    write_png(picture, args.out)
    print(f'wrote {args.out}')
    if steps_picture is not None:
        write_png(steps_picture, args.show_steps)
        print(f'wrote {args.show_steps}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
