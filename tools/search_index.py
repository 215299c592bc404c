# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search an index of tools/index_gallery.py for a query person; write the
ranked appearances and a contact sheet.

    python tools/search_index.py INDEX_DIR CONFIG CKPT --query-img q.jpg \
        --query-box 10 20 60 150 --topk 20 --out hits/

writes hits/hits.json, hits/hits.csv (rank, source, start / end time, best
frame's time, box, similarity, detection score) and hits/contact_sheet.png
(the query crop, then each appearance's best crop with its video name and
time).
"""
import argparse
import os.path as osp
import sys
import time

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_model_args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Search an on-disk person index for a query person.')
    parser.add_argument(
        'index',
        metavar='INDEX_DIR',
        help='index folder of tools/index_gallery.py')
    add_model_args(parser, 'model config (the index\'s)',
                   'model checkpoint (the index\'s)')
    parser.add_argument(
        '--query-img', required=True, help='image holding the query person')
    parser.add_argument(
        '--query-box',
        type=float,
        nargs=4,
        required=True,
        metavar=('X1', 'Y1', 'X2', 'Y2'),
        help='the query person, in pixels')
    parser.add_argument(
        '--topk', type=int, default=20, help='appearances to report')
    parser.add_argument(
        '--out',
        required=True,
        metavar='DIR',
        help='folder for hits.json, hits.csv and '
        'contact_sheet.png: new or empty, unless --force')
    parser.add_argument(
        '--kind',
        default='auto',
        choices=['auto', 'flat', 'ivfpq'],
        help='vector index (built once, kept in '
        'INDEX_DIR/search/)')
    parser.add_argument(
        '--candidates',
        type=int,
        default=1000,
        help='detections retrieved before grouping them '
        'into appearances')
    parser.add_argument(
        '--iou-thr',
        type=float,
        default=0.3,
        help='IoU linking a hit to the previous sampled '
        'frame\'s')
    parser.add_argument(
        '--max-shift',
        type=float,
        default=1.0,
        help='or the most its centre may be from that frame\'s box, in box '
        'heights, at nearly the same height (a person walking further than '
        'a box width between samples); 0: IoU only')
    add_cfg_options_arg(
        parser,
        help='config overrides: those the index was made with (its manifest '
        'lists them)',
        as_strings=True)
    parser.add_argument('--device', default='cpu')
    add_force_arg(parser, help='write into a non-empty --out')
    args = parser.parse_args(argv)
    if args.topk < 1 or args.candidates < 1:
        parser.error('--topk and --candidates must be >= 1')
    if not 0 <= args.iou_thr <= 1:
        parser.error(f'--iou-thr must be in [0, 1], got {args.iou_thr}')
    if not args.max_shift >= 0:
        parser.error(f'--max-shift must be >= 0, got {args.max_shift}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # after parsing: --help answers without the slow imports (torch)
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_nonempty_dir
    with exit_on_refusal():
        refuse_nonempty_dir(args.out, '--out', args.force)
    for path, what in ((args.config, 'config'),
                       (args.checkpoint, 'checkpoint'), (args.query_img,
                                                         '--query-img')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} {path} does not exist')
    import cv2
    import numpy as np

    from mmpsearch.apis import (ShardedIndex, contact_sheet, init_searcher,
                                model_identity, search_index, write_hits)
    from mmpsearch.apis.video_search import _fmt_time
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from index_gallery import parse_cfg_options
    try:
        index = ShardedIndex.open(args.index)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    cfg_options = parse_cfg_options(args.cfg_options)
    searcher = init_searcher(
        args.config,
        args.checkpoint,
        device=args.device,
        cfg_options=cfg_options or None)
    model = model_identity(searcher, args.config, args.checkpoint, cfg_options)
    start = time.time()
    try:
        apps = search_index(
            searcher,
            index,
            args.query_img,
            args.query_box,
            topk=args.topk,
            candidates=args.candidates,
            kind=args.kind,
            iou_thr=args.iou_thr,
            model=model,
            max_shift=args.max_shift)
    except ValueError as e:  # another model, a box outside the image
        raise SystemExit(str(e))
    seconds = time.time() - start
    for a in apps:
        h = a.best
        if a.kind == 'video':
            print(f'#{a.rank} {a.source} {_fmt_time(a.start)} - '
                  f'{_fmt_time(a.end)} ({len(a.hits)} frames), best at '
                  f'{_fmt_time(h.time)} box {np.round(h.bbox, 1).tolist()} '
                  f'similarity {h.similarity:.3f} detection {h.score:.2f}')
        else:
            print(f'#{a.rank} {a.source} box '
                  f'{np.round(h.bbox, 1).tolist()} similarity '
                  f'{h.similarity:.3f} detection {h.score:.2f}')
    query = dict(
        image=osp.abspath(args.query_img),
        box=[float(v) for v in args.query_box],
        index=args.index,
        seconds=round(seconds, 3))
    paths = write_hits(apps, args.out, query)
    sheet = contact_sheet(cv2.imread(args.query_img), args.query_box, apps)
    png = osp.join(args.out, 'contact_sheet.png')
    if not cv2.imwrite(png, sheet):
        raise SystemExit(f'could not write {png}')
    print(f'{len(apps)} appearances in {seconds:.2f} s ({len(index)} '
          f'detections); wrote {paths["json"]}, {paths["csv"]}, {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
