# Copyright (c) mmpsearch contributors. All rights reserved.
"""Re-embed a results file's boxes with another embedder, or swap its gallery
detections for the ground truth: splits a model's search mAP loss into
detection and re-identification.

Writes a new results file (the same format, scored by ``eval_search.py`` and
``search_errors.py``) whose gallery boxes are the file's detections
(``--boxes detections``) or every annotated person with score 1
(``--boxes gt``), and whose query and gallery embeddings come from

- ``--searcher CONFIG CKPT``: the searcher's own embedding of a given box,
  one box at a time, as it embeds a query (``mmpsearch.apis.embed_query``);
- ``--reid CONFIG CKPT``: crops embedded by a ReID classifier (e.g. the
  PSDiff teacher of ``configs/teacher``), as the two-step baseline embeds
  its detections (``CropReIDEmbedder``);
- neither: the file's own embeddings (only with ``--boxes detections``,
  i.e. a copy; with ``gt`` an embedder is needed).

For example, PSDiff's boxes with the teacher's crops, and the ground truth
with PSDiff's own embeddings::

    python tools/analysis_tools/reembed_results.py results.pkl \\
        --dataset cuhk --data-root data/synthetic_cuhk --out teacher.pkl \\
        --reid configs/teacher/teacher_synthetic.py TEACHER_CKPT
    python tools/analysis_tools/reembed_results.py results.pkl \\
        --dataset cuhk --data-root data/synthetic_cuhk --out gt_own.pkl \\
        --boxes gt --searcher CONFIG CKPT
"""
import argparse
import os.path as osp
from typing import Callable, List, Optional

import numpy as np

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_results_args)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Re-embed a results file, or swap its detections for '
        'the ground truth')
    add_results_args(parser)
    parser.add_argument('--out', required=True, help='the new results file')
    parser.add_argument(
        '--boxes',
        choices=['detections', 'gt'],
        default='detections',
        help='gallery boxes: the file\'s detections, or every annotated '
        'person with score 1')
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        '--searcher',
        nargs=2,
        metavar=('CONFIG', 'CKPT'),
        help='embed every box as the searcher embeds a query')
    who.add_argument(
        '--reid',
        nargs=2,
        metavar=('CONFIG', 'CKPT'),
        help='embed crops with a ReID classifier (an mmpretrain config)')
    add_cfg_options_arg(
        parser,
        help='overrides of the --searcher config, as tools/test.py takes '
        'them (e.g. model.backbone.sd_path=work_dirs/tiny_ldm)')
    add_force_arg(parser, help='overwrite an existing --out')
    args = parser.parse_args(argv)
    if args.cfg_options and not args.searcher:
        parser.error('--cfg-options go with --searcher')
    return args


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import pickle  # noqa: E402

from mmpsearch.evaluation.metrics.person_search_metric import \
    load_results_and_protocol  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa: E402

Embedder = Callable[[str, np.ndarray], np.ndarray]


def image_path(dataset: str, data_root: str, img_id: str) -> str:
    """Where the released dataset keeps image ``img_id``."""
    from mmpsearch.datasets.cuhk_sysu import IMAGE_DIR
    from mmpsearch.datasets.prw import FRAMES_DIR
    folder = IMAGE_DIR if dataset == 'cuhk' else FRAMES_DIR
    return osp.join(data_root, folder, img_id)


def searcher_embedder(config: str,
                      checkpoint: str,
                      dataset: str,
                      data_root: str,
                      cfg_options: Optional[dict] = None) -> Embedder:
    """Boxes (n, 4) of an image -> (n, D), each embedded as a query."""
    from mmpsearch.apis import embed_query, init_searcher
    searcher = init_searcher(
        config, checkpoint, device='cpu', cfg_options=cfg_options)

    def embed(img_id: str, boxes: np.ndarray) -> np.ndarray:
        path = image_path(dataset, data_root, img_id)
        return np.stack([embed_query(searcher, path, b) for b in boxes]) \
            if len(boxes) else np.zeros((0, 0), np.float32)

    return embed


def reid_embedder(config: str, checkpoint: str, dataset: str,
                  data_root: str) -> Embedder:
    """Boxes (n, 4) of an image -> (n, D), crops through a ReID model."""
    import cv2
    import torch
    from mmengine.config import Config

    from mmpsearch.models.layers.crop_reid_embedder import CropReIDEmbedder
    from mmpsearch.utils import register_all_modules, safe_checkpoint_loading
    register_all_modules()
    cfg = Config.fromfile(config)
    with safe_checkpoint_loading():
        model = CropReIDEmbedder(
            cfg.model.to_dict(),
            checkpoint,
            crop_size=cfg.get('crop_size', (256, 128)))

    class _AsRead:
        """The image as cv2 reads it: BGR, not normalised."""

    def embed(img_id: str, boxes: np.ndarray) -> np.ndarray:
        path = image_path(dataset, data_root, img_id)
        img = cv2.imread(path)
        if img is None:
            raise FileNotFoundError(f'image {path} cannot be read')
        h, w = img.shape[:2]
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        meta = dict(
            ori_shape=(h, w), img_shape=(h, w), scale_factor=(1.0, 1.0))
        out = model(x, [torch.as_tensor(boxes, dtype=torch.float32)], [meta],
                    _AsRead())
        return out[0].numpy()

    return embed


def reembed(results: dict,
            protocol,
            boxes: str = 'detections',
            embed: Optional[Embedder] = None) -> dict:
    """A new results dict (the input is left as it is).

    Args:
        results: A loaded results file.
        protocol: Its ``SearchProtocol`` (the ground truth for ``'gt'``).
        boxes: ``'detections'`` or ``'gt'``.
        embed: ``(img_id, boxes (n, 4)) -> (n, D)``; None keeps the file's
            embeddings (``'detections'`` only).
    """
    if boxes == 'gt' and embed is None:
        raise ValueError('--boxes gt needs an embedder: --searcher or --reid')
    gallery = {}
    empty = dict(
        bboxes=np.zeros((0, 4)),
        scores=np.zeros(0),
        embeddings=np.zeros((0, 0)))
    names = protocol.gallery if boxes == 'gt' else results['gallery']
    for img_id in names:
        det = results['gallery'].get(img_id, empty)
        if boxes == 'gt':
            b = np.asarray(protocol.gallery[img_id].boxes,
                           np.float32).reshape(-1, 4)
            s = np.ones(len(b), np.float32)
        else:
            b = np.asarray(det['bboxes'], np.float32).reshape(-1, 4)
            s = np.asarray(det['scores'], np.float32).reshape(-1)
        e = np.asarray(det['embeddings'], np.float32)
        if embed is not None:
            e = np.asarray(embed(img_id, b), np.float32)
        gallery[img_id] = dict(bboxes=b, scores=s, embeddings=e)
    dim = next((g['embeddings'].shape[1]
                for g in gallery.values() if len(g['bboxes'])), 0)
    for g in gallery.values():  # an image without boxes: (0, D)
        if not len(g['bboxes']):
            g['embeddings'] = np.zeros((0, dim), np.float32)
    query = []
    for q in results['query']:
        e = np.asarray(q['embedding'], np.float32)
        if embed is not None:
            box = np.asarray(q['bbox'], np.float32).reshape(1, 4)
            e = np.asarray(embed(q['img_id'], box), np.float32)[0]
        query.append(dict(q, embedding=e))
    out = dict(results, gallery=gallery, query=query)
    return out


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    if args.boxes == 'gt' and not (args.searcher or args.reid):
        raise SystemExit('--boxes gt needs an embedder: --searcher CONFIG '
                         'CKPT or --reid CONFIG CKPT')
    with exit_on_refusal(FileNotFoundError):
        # before any work: an earlier file is not overwritten
        refuse_existing_file(args.out, '--out', args.force)
        results, protocol = load_results_and_protocol(args.results,
                                                      args.dataset,
                                                      args.data_root)
    embed = None
    if args.searcher:
        embed = searcher_embedder(*args.searcher, args.dataset, args.data_root,
                                  args.cfg_options)
    elif args.reid:
        embed = reid_embedder(*args.reid, args.dataset, args.data_root)
    out = reembed(results, protocol, args.boxes, embed)
    with open(args.out, 'wb' if args.force else 'xb') as f:
        pickle.dump(out, f)
    print(f'{len(out["gallery"])} gallery images, {len(out["query"])} '
          f'queries written to {args.out}')
    return args.out


if __name__ == '__main__':
    main()
