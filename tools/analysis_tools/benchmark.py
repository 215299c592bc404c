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

``--baseline BASELINE_CONFIG`` (a :class:`TwoStepPersonSearch` config, e.g.
``configs/baseline/faster_rcnn_r50_teacher_cuhk.py``) also times the
two-step baseline on the same images: the detector's forward and
post-processing, then the ReID model on the crops of ``--baseline-boxes``
fixed boxes (default 10) per image, since a detector with random weights
finds any number of boxes from 0 to 100. Its row is added to the table and
every PSDiff row gets its speed relative to the baseline::

    python tools/analysis_tools/benchmark.py \
        configs/psdiff/psdiff_r50_cuhk.py \
        --baseline configs/baseline/faster_rcnn_r50_teacher_cuhk.py
"""
import argparse
import platform
import time
from typing import Dict, List, Optional, Sequence

from mmengine.config import DictAction

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_json_args,
                                      add_shape_arg, add_steps_arg)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='PSDiff images/s at several sampling-step counts')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--checkpoint', help='weights (optional)')
    add_steps_arg(parser, help='sampling-step counts to time')
    add_shape_arg(parser)
    parser.add_argument(
        '--num-images', type=int, default=3, help='timed images')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed images first')
    parser.add_argument(
        '--device',
        default=None,
        help='default: cuda when available, else cpu')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
    add_json_args(parser)
    add_cfg_options_arg(
        parser,
        help='override config keys, e.g. model.test_cfg.num_proposals=100')
    parser.add_argument(
        '--baseline',
        metavar='BASELINE_CONFIG',
        help='also time this two-step baseline (TwoStepPersonSearch) config')
    parser.add_argument(
        '--baseline-checkpoint', help='weights of the baseline (optional)')
    parser.add_argument(
        '--baseline-boxes',
        type=int,
        default=10,
        help='boxes per image the baseline\'s ReID model is timed on '
        '(default 10; fixed, whatever the detector finds)')
    parser.add_argument(
        '--baseline-cfg-options',
        nargs='+',
        action=DictAction,
        help='override keys of the baseline config')
    args = parser.parse_args(argv)
    if args.baseline_boxes < 0:
        parser.error(f'--baseline-boxes must be >= 0, got '
                     f'{args.baseline_boxes}')
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return args


# --help and a usage error answer before the slow imports below (torch,
# mmdet: seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.runner import load_checkpoint  # noqa: E402

from mmpsearch.registry import MODELS  # noqa: E402
from mmpsearch.testing import preprocessed_image  # noqa: E402
from mmpsearch.testing import quiet_init_weights  # noqa: E402
from mmpsearch.utils import register_all_modules  # noqa: E402
from mmpsearch.utils import safe_checkpoint_loading  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.cli import refuse_existing_json  # noqa: E402
from mmpsearch.utils.cli import write_json  # noqa: E402
from mmpsearch.utils.config import load_config  # noqa: E402


def _sync(device: str) -> None:
    """Wait for the kernels of ``device`` (``--device cuda:1`` is not
    necessarily the current device, which a bare
    ``torch.cuda.synchronize()`` waits for)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


def _timed(fn, device: str):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _random_input(model, i: int, shape, device: str) -> Dict:
    """One random gallery image of ``shape`` (h, w) through the model's
    data preprocessor: ``inputs`` and ``data_samples``."""
    image = torch.rand(3, *shape, device=device) * 255
    return preprocessed_image(model, image, f'bench_{i}.jpg')


def benchmark(model, steps: List[int], shape, num_images: int, warmup: int,
              device: str) -> Dict:
    """Times per image: backbone+neck once, then each k-step head."""
    feat_times: List[float] = []
    head_times: Dict[int, List[float]] = {k: [] for k in steps}
    cfg = model.test_cfg
    orig_steps = cfg.sampling_steps
    for i in range(warmup + num_images):
        with torch.no_grad():
            inputs = _random_input(model, i, shape, device)
            feats, t_feat = _timed(
                lambda: model.extract_feat(inputs['inputs']), device)
            t_heads = {}
            for k in steps:
                cfg.sampling_steps = k
                _, t_heads[k] = _timed(
                    lambda: model.bbox_head.predict(feats, inputs[
                        'data_samples']), device)
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
    return dict(
        rows=rows,
        feat_times_s=feat_times,
        head_times_s={
            str(k): v
            for k, v in head_times.items()
        })


def fixed_boxes(num: int, shape, device) -> torch.Tensor:
    """``num`` person-shaped boxes (x1y1x2y2) spread over an image of
    ``shape`` (h, w): the same boxes for every image and run."""
    h, w = shape
    if num == 0:
        return torch.zeros(0, 4, device=device)
    k = torch.arange(num, dtype=torch.float32)
    bh = h * (0.25 + 0.5 * ((k * 0.37) % 1.0))  # 1/4 to 3/4 of the height
    bw = bh * 0.4
    cx = w * (0.1 + 0.8 * ((k * 0.61 + 0.5) % 1.0))
    cy = h * (0.3 + 0.4 * ((k * 0.23) % 1.0))
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2],
                        dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes.to(device)


def benchmark_baseline(model,
                       shape,
                       num_images: int,
                       warmup: int,
                       device: str,
                       num_boxes: int = 10) -> Dict:
    """Times per image of a two-step baseline (``TwoStepPersonSearch``):
    the detector (forward + post-processing), then the ReID model on
    ``num_boxes`` fixed boxes, the same count for every image."""
    det_times: List[float] = []
    reid_times: List[float] = []
    found: List[int] = []
    boxes = fixed_boxes(num_boxes, shape, device)
    for i in range(warmup + num_images):
        with torch.no_grad():
            inputs = _random_input(model, i, shape, device)
            dets, t_det = _timed(
                lambda: model.detector.predict(
                    inputs['inputs'], inputs['data_samples'], rescale=True),
                device)
            _, t_reid = _timed(
                lambda: model.embed_boxes(inputs['inputs'], [boxes], [
                    s.metainfo for s in inputs['data_samples']
                ]), device)
        if i >= warmup:
            det_times.append(t_det)
            reid_times.append(t_reid)
            found.append(len(dets[0].pred_instances))
    det = float(np.mean(det_times))
    reid = float(np.mean(reid_times))
    return dict(
        detector_ms=det * 1e3,
        reid_ms=reid * 1e3,
        reid_per_box_ms=reid / num_boxes * 1e3 if num_boxes else 0.0,
        total_ms=(det + reid) * 1e3,
        images_per_s=1.0 / (det + reid),
        reid_boxes=num_boxes,
        detections_found=found,
        detector_times_s=det_times,
        reid_times_s=reid_times)


def build_baseline(config: str, checkpoint: Optional[str],
                   cfg_options: Optional[dict], device: str):
    """The two-step baseline of ``config``; random weights (no download,
    no ReID checkpoint) without ``checkpoint``."""
    cfg = load_config(config, cfg_options)
    if 'reid' not in cfg.model or 'detector' not in cfg.model:
        raise SystemExit(f'--baseline {config}: model {cfg.model.get("type")}'
                         ' is not a two-step baseline (no detector / reid)')
    # the ReID weights are in a baseline checkpoint, or random
    cfg.model.reid.checkpoint = None
    if not checkpoint and 'backbone' in cfg.model.detector:
        cfg.model.detector.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    if checkpoint:
        with safe_checkpoint_loading():
            load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        quiet_init_weights(model)
    return model.to(device).eval()


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    with exit_on_refusal():
        refuse_existing_json(args)
    register_all_modules()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    if not args.checkpoint:
        # Random weights: no pretrained download (none is possible offline).
        cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        with safe_checkpoint_loading():
            load_checkpoint(model, args.checkpoint, map_location='cpu')
    else:
        quiet_init_weights(model)
    model = model.to(args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())

    res = benchmark(model, sorted(set(args.steps)), args.shape,
                    args.num_images, args.warmup, args.device)
    baseline = None
    if args.baseline:
        base_model = build_baseline(args.baseline, args.baseline_checkpoint,
                                    args.baseline_cfg_options, args.device)
        baseline = benchmark_baseline(base_model, args.shape, args.num_images,
                                      args.warmup, args.device,
                                      args.baseline_boxes)
        baseline.update(
            config=args.baseline,
            params_M=sum(p.numel() for p in base_model.parameters()) / 1e6)
        for r in res['rows']:
            # > 1: this PSDiff row is faster than the baseline
            r['speed_vs_baseline'] = r['images_per_s'] / \
                baseline['images_per_s']
        res['baseline'] = baseline
    res.update(
        config=args.config,
        device=args.device,
        cpu=platform.processor() or platform.machine(),
        torch_threads=torch.get_num_threads(),
        shape=list(args.shape),
        num_images=args.num_images,
        num_proposals=int(model.test_cfg.num_proposals),
        sampler=str(model.test_cfg.sampler),
        params_M=n_params / 1e6)

    print(f'{args.config}: {n_params / 1e6:.1f} M parameters, input '
          f'{args.shape[0]}x{args.shape[1]}, N={res["num_proposals"]}, '
          f'{args.device} ({res["torch_threads"]} threads), '
          f'{args.num_images} images')
    sw = 6 if baseline is not None else 5  # room for the "2-step" row
    header = (f'{"steps":>{sw}} {"backbone+neck ms":>17} {"head ms":>9} '
              f'{"ms/step":>8} {"total ms":>9} {"img/s":>7} '
              f'{"extra vs " + str(res["rows"][0]["steps"]) + "-step":>14}')
    if baseline is not None:
        header += f' {"x baseline":>10}'
    print(header)
    print('-' * len(header))
    for r in res['rows']:
        line = (f'{r["steps"]:>{sw}} {r["backbone_neck_ms"]:>17.1f} '
                f'{r["head_ms"]:>9.1f} {r["head_per_step_ms"]:>8.1f} '
                f'{r["total_ms"]:>9.1f} {r["images_per_s"]:>7.3f} '
                f'{r["extra_over_first_pct"]:>13.1f}%')
        if baseline is not None:
            line += f' {r["speed_vs_baseline"]:>10.2f}'
        print(line)
    if baseline is not None:
        # detector in the backbone+neck column, ReID in the head column
        print(f'{"2-step":>{sw}} {baseline["detector_ms"]:>17.1f} '
              f'{baseline["reid_ms"]:>9.1f} {"-":>8} '
              f'{baseline["total_ms"]:>9.1f} '
              f'{baseline["images_per_s"]:>7.3f} {"-":>14} {1.0:>10.2f}')
        print(f'2-step: two-step baseline {args.baseline} '
              f'({baseline["params_M"]:.1f} M parameters): detector '
              f'(forward + NMS) in the backbone+neck column, ReID of '
              f'{baseline["reid_boxes"]} fixed boxes per image in the head '
              f'column ({baseline["reid_per_box_ms"]:.2f} ms/box; the ReID '
              'is timed on that many boxes whatever the detector found: '
              f'{baseline["detections_found"]}). "x baseline": PSDiff '
              'images/s over the baseline\'s.')
    if args.json:
        write_json(res, args.json, args.force, 'wrote')
    return res


if __name__ == '__main__':
    main()
