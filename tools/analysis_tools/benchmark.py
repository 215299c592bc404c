# Copyright (c) mmpsearch contributors. All rights reserved.
"""Inference speed of PSDiff at several sampling-step counts, in one run.

For every image the backbone + neck run ONCE; then, on those same features,
the sampler runs k steps (one CDL pass and one scheduler update each) plus
the post-processing, for every k asked. The time of a k-step search is
``backbone+neck + k-step head``; the table gives images per second and the
extra cost of k steps over 1 step::

    python tools/analysis_tools/benchmark.py configs/psdiff/psdiff_r50_cuhk.py
    python tools/analysis_tools/benchmark.py CONFIG --checkpoint CKPT \\
        --steps 1 2 4 8 --shape 800 1333 --num-images 5 --json speed.json

Without ``--checkpoint`` the weights are random (the pretrained backbone is
not loaded): timings do not depend on the values, except that box renewal
and NMS see other scores.
"""
import argparse
import json
import logging
import platform
import time
from typing import Dict, List

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules
from mmpsearch.utils.config import load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='PSDiff images/s at several sampling-step counts')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--checkpoint', help='weights (optional)')
    parser.add_argument(
        '--steps', type=int, nargs='+', default=[1, 2, 4, 8],
        help='sampling-step counts to time')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=[800, 1333],
        metavar=('H', 'W'), help='input image size (default 800 1333)')
    parser.add_argument(
        '--num-images', type=int, default=3, help='timed images')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed images first')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--json', help='also write the figures here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. model.test_cfg.num_proposals=100')
    return parser.parse_args()


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(fn, device: str):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def benchmark(model, steps: List[int], shape, num_images: int, warmup: int,
              device: str) -> Dict:
    """Times per image: backbone+neck once, then each k-step head."""
    h, w = shape
    feat_times: List[float] = []
    head_times: Dict[int, List[float]] = {k: [] for k in steps}
    cfg = model.test_cfg
    orig_steps = cfg.sampling_steps
    for i in range(warmup + num_images):
        image = torch.rand(1, 3, h, w, device=device) * 255
        sample = DetDataSample(
            metainfo=dict(
                img_id=f'bench_{i}.jpg', img_shape=(h, w), ori_shape=(h, w),
                scale_factor=(1.0, 1.0), split='gallery',
                batch_input_shape=(h, w), pad_shape=(h, w)))
        with torch.no_grad():
            inputs = model.data_preprocessor(
                dict(inputs=[image[0]], data_samples=[sample]), False)
            feats, t_feat = _timed(
                lambda: model.extract_feat(inputs['inputs']), device)
            t_heads = {}
            for k in steps:
                cfg.sampling_steps = k
                _, t_heads[k] = _timed(
                    lambda: model.predict_by_feat(
                        feats, inputs['data_samples']), device)
        cfg.sampling_steps = orig_steps
        if i >= warmup:
            feat_times.append(t_feat)
            for k in steps:
                head_times[k].append(t_heads[k])
    feat = float(np.mean(feat_times))
    rows = []
    base = feat + float(np.mean(head_times[steps[0]]))
    for k in steps:
        head = float(np.mean(head_times[k]))
        total = feat + head
        rows.append(
            dict(
                steps=k,
                backbone_neck_ms=feat * 1e3,
                head_ms=head * 1e3,
                head_per_step_ms=head / k * 1e3,
                total_ms=total * 1e3,
                images_per_s=1.0 / total,
                extra_over_first_pct=(total - base) / base * 100.0))
    return dict(rows=rows, feat_times_s=feat_times,
                head_times_s={str(k): v for k, v in head_times.items()})


def main() -> None:
    args = parse_args()
    register_all_modules()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    if not args.checkpoint:
        # Random weights: no pretrained download (none is possible offline).
        cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    else:
        # without the per-parameter report mmengine prints at INFO
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    model = model.to(args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())

    res = benchmark(model, sorted(set(args.steps)), args.shape,
                    args.num_images, args.warmup, args.device)
    res.update(
        config=args.config, device=args.device,
        cpu=platform.processor() or platform.machine(),
        torch_threads=torch.get_num_threads(), shape=list(args.shape),
        num_images=args.num_images,
        num_proposals=int(model.test_cfg.num_proposals),
        sampler=str(model.test_cfg.sampler), params_M=n_params / 1e6)

    print(f'{args.config}: {n_params / 1e6:.1f} M parameters, input '
          f'{args.shape[0]}x{args.shape[1]}, N={res["num_proposals"]}, '
          f'{args.device} ({res["torch_threads"]} threads), '
          f'{args.num_images} images')
    header = (f'{"steps":>5} {"backbone+neck ms":>17} {"head ms":>9} '
              f'{"ms/step":>8} {"total ms":>9} {"img/s":>7} '
              f'{"extra vs " + str(res["rows"][0]["steps"]) + "-step":>14}')
    print(header)
    print('-' * len(header))
    for r in res['rows']:
        print(f'{r["steps"]:>5} {r["backbone_neck_ms"]:>17.1f} '
              f'{r["head_ms"]:>9.1f} {r["head_per_step_ms"]:>8.1f} '
              f'{r["total_ms"]:>9.1f} {r["images_per_s"]:>7.3f} '
              f'{r["extra_over_first_pct"]:>13.1f}%')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
