# Copyright (c) mmpsearch contributors. All rights reserved.
"""Write synthetic videos of persons walking across the synthetic scenes
(MP4, OpenCV), a still query image of one of them and annotations.json
(the query box; per video its identities and each frame's boxes).

    python tools/dataset_converters/make_synthetic_videos.py \
        --out data/synthetic_videos --num-videos 2 --frames 48 --fps 8
"""
import argparse
import json
import time

from mmpsearch.utils.cli_args import add_force_arg


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write synthetic MP4 videos of walking persons and a '
        'query image.')
    parser.add_argument(
        '--out',
        required=True,
        help='output folder: new or empty, unless --force')
    add_force_arg(parser, help='write into a non-empty --out')
    parser.add_argument('--num-videos', type=int, default=2)
    parser.add_argument(
        '--frames', type=int, default=48, help='frames per video')
    parser.add_argument(
        '--fps', type=float, default=8.0, help='frame rate of the videos')
    parser.add_argument(
        '--num-ids',
        type=int,
        default=8,
        help='identities the videos draw from (>= 3)')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        default=[320, 240],
        metavar=('WIDTH', 'HEIGHT'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_videos < 1 or args.frames < 1 or args.fps <= 0:
        parser.error('--num-videos, --frames and --fps must be > 0')
    if args.num_ids < 3:
        parser.error(f'--num-ids must be >= 3, got {args.num_ids}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # after parsing: --help answers without the slow imports (torch)
    from mmpsearch.datasets.synthetic.video import make_synthetic_videos
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_nonempty_dir
    with exit_on_refusal():
        refuse_nonempty_dir(args.out, '--out', args.force)
    start = time.time()
    ann = make_synthetic_videos(args.out, args.num_videos, args.frames,
                                args.fps, tuple(args.image_size), args.num_ids,
                                args.seed)
    print(
        json.dumps(
            dict(
                out=args.out,
                videos=sorted(ann['videos']),
                query=ann['query'],
                seconds=round(time.time() - start, 2))))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
