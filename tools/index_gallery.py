# Copyright (c) mmpsearch contributors. All rights reserved.
"""Detect and embed every person of image folders and videos into an
on-disk index (resumable, incremental; see docs/en/api.md).

    python tools/index_gallery.py CONFIG CKPT --images scenes/ \
        --videos a.mp4 b.mkv --fps 2 --out INDEX_DIR

Run the same command again after a kill: it continues where it stopped.
Run it with new --videos / --images into the same INDEX_DIR: only they are
added. tools/dist_index.sh runs it on N processes (torchrun).
"""
import argparse
import os
import os.path as osp
import sys
import time

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_model_args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Index the persons of image folders and videos into an '
        'on-disk, resumable, incremental index folder.')
    add_model_args(parser, 'model config', 'model checkpoint (.pth)')
    parser.add_argument(
        '--images',
        nargs='+',
        default=[],
        metavar='DIR',
        help='folders of images')
    parser.add_argument(
        '--videos',
        nargs='+',
        default=[],
        metavar='FILE',
        help='video files (anything OpenCV decodes)')
    parser.add_argument(
        '--fps',
        type=float,
        default=2.0,
        help='frames sampled per second of video')
    parser.add_argument(
        '--out',
        required=True,
        metavar='INDEX_DIR',
        help='the index folder: new, empty, or an index of '
        'the same model (resumed / extended)')
    parser.add_argument(
        '--batch-size', type=int, default=4, help='frames per model call')
    parser.add_argument(
        '--shard-items',
        type=int,
        default=64,
        help='frames (or images) per shard')
    parser.add_argument(
        '--float16',
        action='store_true',
        help='store embeddings as float16 (half the disk)')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=None,
        help='drop detections below this score (default: '
        "keep what the model outputs, its own "
        'test_cfg.score_thr)')
    add_cfg_options_arg(
        parser,
        help='config overrides, e.g. model.test_cfg.sampling_steps=1',
        as_strings=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--repair',
        action='store_true',
        help='drop corrupt shards of INDEX_DIR and redo '
        'them, instead of refusing the index')
    add_force_arg(
        parser, help='write into a non-empty --out that is not an index')
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch'],
        default='none',
        help='pytorch: one of several torchrun processes '
        '(tools/dist_index.sh)')
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error(f'--fps must be > 0, got {args.fps}')
    if args.batch_size < 1 or args.shard_items < 1:
        parser.error('--batch-size and --shard-items must be >= 1')
    if args.score_thr is not None and not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if not args.images and not args.videos:
        parser.error('nothing to index: give --images DIR and/or --videos '
                     'FILE')
    return args


def parse_cfg_options(items) -> dict:
    """``KEY=VALUE`` pairs, values read as Python literals when they are."""
    import ast
    out = {}
    for item in items:
        if '=' not in item:
            raise SystemExit(f'--cfg-options {item}: expected KEY=VALUE')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def check_outputs(args) -> None:
    """Before any work: --out is new, empty, an index (resumed / added
    to), or --force; the inputs exist."""
    from mmpsearch.apis.media_indexing import check_inputs
    from mmpsearch.apis.sharded_index import MANIFEST
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_nonempty_dir

    # rank 0 only: the others could see rank 0's first files
    if os.environ.get('RANK', '0') == '0' and \
            not osp.isfile(osp.join(args.out, MANIFEST)):
        with exit_on_refusal():
            refuse_nonempty_dir(args.out, '--out', args.force)
    for path, what in ((args.config, 'config'), (args.checkpoint,
                                                 'checkpoint')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} {path} does not exist')
    try:
        check_inputs(args.images, args.videos)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))


def main(argv=None) -> int:
    args = parse_args(argv)
    # after parsing: --help answers without the slow imports (torch)
    check_outputs(args)
    import torch
    import torch.distributed as dist

    from mmpsearch.apis import (bad_inputs, index_sources, init_searcher,
                                model_identity)
    device = args.device
    if args.launcher == 'pytorch':
        for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
            if key not in os.environ:
                raise SystemExit(f'--launcher pytorch expects the variable '
                                 f'{key}; start it with tools/dist_index.sh')
        # only barriers go through the group: gloo on CPU and GPU alike
        dist.init_process_group('gloo')
        if device.startswith('cuda'):
            device = f'cuda:{os.environ.get("LOCAL_RANK", 0)}'
    cfg_options = parse_cfg_options(args.cfg_options)
    start = time.time()
    searcher = init_searcher(
        args.config,
        args.checkpoint,
        device=device,
        cfg_options=cfg_options or None)
    model = model_identity(searcher, args.config, args.checkpoint, cfg_options)
    try:
        index = index_sources(
            searcher,
            args.out,
            images=args.images,
            videos=args.videos,
            fps=args.fps,
            batch_size=args.batch_size,
            shard_items=args.shard_items,
            dtype='float16' if args.float16 else 'float32',
            score_thr=args.score_thr,
            model=model,
            repair=args.repair,
            progress=not args.no_progress)
    except ValueError as e:  # another model, corrupt shard, settings
        raise SystemExit(str(e))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        bad = bad_inputs(index)
        for line in bad:
            print(f'bad input, skipped: {line}')
        pending = [
            s['path'] for s in index.sources if s['status'] == 'pending'
        ]
        print(f'{args.out}: {len(index)} detections of '
              f'{sum(s["status"] == "done" for s in index.sources)} '
              f'sources in {len(index.shards)} shards; {len(bad)} bad '
              f'inputs skipped; {time.time() - start:.1f} s in all')
        if pending:
            print(f'not finished: {pending}')
    if dist.is_initialized():
        dist.destroy_process_group()
    del torch
    return 0


if __name__ == '__main__':
    sys.exit(main())
