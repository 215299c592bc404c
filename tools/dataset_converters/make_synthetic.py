# Copyright (c) mmpsearch contributors. All rights reserved.
"""Render a synthetic person-search dataset in the released CUHK-SYSU or PRW
layout (the built-in data of ``make demo``).

Example::

    python tools/dataset_converters/make_synthetic.py --format cuhk \
        --out data/synthetic_cuhk --num-images 800 --num-ids 200 --seed 0

``--describe`` (CUHK) also writes ``scenes.json``, what the renderer drew in
each image, for the captions of ``tools/misc/train_tiny_ldm.py``; the other
files are the same with or without it.
"""
import argparse
import json
import time

from mmpsearch.utils.cli_args import add_force_arg


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write synthetic person-search scenes in the released '
        'CUHK-SYSU or PRW format.')
    parser.add_argument(
        '--format',
        required=True,
        choices=['cuhk', 'prw'],
        help='which release to imitate')
    parser.add_argument(
        '--out',
        required=True,
        help='output folder: new or empty (a released dataset has the same '
        'file names), unless --force')
    add_force_arg(
        parser,
        help='write into a non-empty --out, overwriting files of the same '
        'names')
    parser.add_argument(
        '--num-images',
        type=int,
        default=800,
        help='scene images (CUHK: half form the gallery, which needs >= 101 '
        'images for TestG100, so >= 202)')
    parser.add_argument(
        '--num-ids',
        type=int,
        default=200,
        help='identities, half for training and half for testing')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        default=[320, 240],
        metavar=('WIDTH', 'HEIGHT'),
        help='scene size')
    parser.add_argument(
        '--describe',
        action='store_true',
        help='CUHK: also write scenes.json (per image: the clothing colours '
        'of each person, the background colours, the boxes), the captions '
        'of tools/misc/train_tiny_ldm.py; the other files do not change')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # after parsing: --help answers without the slow imports (torch)
    from mmpsearch.datasets.synthetic import make_synthetic
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_nonempty_dir
    with exit_on_refusal():
        refuse_nonempty_dir(args.out, '--out', args.force)
    start = time.time()
    summary = make_synthetic(
        args.format,
        args.out,
        num_images=args.num_images,
        num_ids=args.num_ids,
        seed=args.seed,
        image_size=tuple(args.image_size),
        describe=args.describe)
    summary['seconds'] = round(time.time() - start, 2)
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
