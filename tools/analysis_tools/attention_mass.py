# Copyright (c) mmpsearch contributors. All rights reserved.
"""Does DiffPS's "person" cross-attention map look at the people?

DiffPS (Kim et al., "Leveraging Prior Knowledge of Diffusion Model for
Person Search", ICCV 2025, Sec. 3.3) guides its detector (DGRPN) with the
cross-attention probability of the prompt word "person" in one head of one
up-stage transformer of the frozen Stable Diffusion UNet. This tool runs
``StableDiffusionBackbone`` (its defaults: prompt "person", ``T[3][0].attn2``,
head 1, token 1, eval-mode noise) on synthetic scenes and measures, per
image, the share of the map's mass inside the union of the annotated person
boxes against the share of the image those boxes cover::

    ratio = (mass inside the boxes / total mass) / (box area / image area)

1 means the map ignores where the people are (a uniform map gives 1); 2
means the map is twice as dense on people as elsewhere; a map with all its
mass inside the boxes gives 1 / area fraction. Measured on the raw
probabilities (``prob``) and on the min-max normalised map DGRPN receives
(``normalised``); the padding below / right of the image is left out.

Several Stable Diffusion folders can be compared (e.g. the random tiny SD of
``tools/misc/make_tiny_sd.py`` and the trained tiny LDM of
``tools/misc/train_tiny_ldm.py``)::

    python tools/analysis_tools/attention_mass.py data/synthetic_cuhk \\
        --sd-paths work_dirs/tiny_sd work_dirs/tiny_ldm \\
        --out-dir work_dirs/attention_mass

which prints a table and, with ``--out-dir``, writes ``attention_mass.json``
and ``attention_maps.png`` (the first ``--show`` scenes with their boxes and
each model's map over them). The gallery scenes are used by default: the
tiny LDM is trained on the training scenes only.
"""
import argparse
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmpsearch.utils.cli_args import add_force_arg, add_timestep_arg


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Mass of DiffPS\'s "person" cross-attention map inside '
        'the person boxes vs their area fraction, per Stable Diffusion '
        'folder.')
    parser.add_argument('data_root', help='synthetic CUHK-layout folder')
    parser.add_argument(
        '--sd-paths',
        nargs='+',
        required=True,
        help='Stable Diffusion folders (diffusers layout) to compare')
    parser.add_argument(
        '--labels',
        nargs='+',
        default=None,
        help='names of the folders in the table (default: their basenames)')
    parser.add_argument(
        '--split', default='gallery', choices=['gallery', 'train'])
    parser.add_argument('--num-images', type=int, default=50)
    add_timestep_arg(parser)
    parser.add_argument('--attn-map-layer', default='T[3][0].attn2')
    parser.add_argument('--attn-map-head', type=int, default=1)
    parser.add_argument(
        '--out-dir',
        default=None,
        help='write attention_mass.json and attention_maps.png here (a new '
        'or empty folder, unless --overwrite)')
    add_force_arg(parser, flag='--overwrite')
    parser.add_argument(
        '--show', type=int, default=4, help='scenes in the figure')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_nonempty_dir  # noqa: E402

SIZE_DIVISOR = 64  # DiffPS's pad_size_divisor


def box_mask(boxes: np.ndarray, height: int, width: int) -> Tensor:
    """(height, width) bool mask of the union of ``boxes`` (n, 4) x1y1x2y2
    in pixels (clipped to the image; a pixel is inside when its centre is)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    ys = torch.arange(height).float() + 0.5
    xs = torch.arange(width).float() + 0.5
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        inside_y = (ys >= y1) & (ys < y2)
        inside_x = (xs >= x1) & (xs < x2)
        mask |= inside_y[:, None] & inside_x[None, :]
    return mask


def attention_mass(attn: Tensor, boxes: np.ndarray,
                   img_hw: Sequence[int]) -> Dict[str, float]:
    """The map's mass inside the person boxes against their area.

    Args:
        attn (Tensor): (h, w) or (1, h, w) non-negative map over the padded
            image; cell (i, j) covers the ``s`` x ``s`` pixels from
            (i s, j s), ``s`` = padded size / map size (8 for DiffPS).
        boxes (np.ndarray): (n, 4) person boxes x1y1x2y2 in pixels.
        img_hw (Sequence[int]): the unpadded image's (height, width); the
            map outside it (padding) is left out.

    Returns:
        dict: ``mass_inside`` (share of the map's mass inside the boxes),
        ``area_fraction`` (share of the image inside the boxes) and
        ``ratio`` (their quotient; nan without boxes or mass).
    """
    attn = attn.detach().float().reshape(attn.shape[-2:])
    if bool((attn < 0).any()):
        raise ValueError('attention_mass expects a non-negative map')
    h, w = int(img_hw[0]), int(img_hw[1])
    stride = max(math.ceil(h / attn.shape[0]), math.ceil(w / attn.shape[1]))
    full = attn.repeat_interleave(stride, 0).repeat_interleave(stride, 1)
    if full.shape[0] < h or full.shape[1] < w:
        raise ValueError(f'a {tuple(attn.shape)} map does not cover a '
                         f'{h}x{w} image')
    full = full[:h, :w]
    mask = box_mask(boxes, h, w)
    total = float(full.sum())
    area = float(mask.float().mean())
    inside = float(full[mask].sum()) / total if total > 0 else math.nan
    ratio = inside / area if area > 0 and total > 0 else math.nan
    return dict(mass_inside=inside, area_fraction=area, ratio=ratio)


def summarise(rows: List[Dict[str, float]]) -> Dict[str, float]:
    """Over images: the mean of the per-image ratios, their median, and the
    pooled ratio (mean mass inside / mean area fraction)."""
    ok = [r for r in rows if not math.isnan(r['ratio'])]
    if not ok:
        return dict(
            images=0,
            mean_ratio=math.nan,
            median_ratio=math.nan,
            pooled_ratio=math.nan,
            mass_inside=math.nan,
            area_fraction=math.nan)
    inside = float(np.mean([r['mass_inside'] for r in ok]))
    area = float(np.mean([r['area_fraction'] for r in ok]))
    ratios = [r['ratio'] for r in ok]
    return dict(
        images=len(ok),
        mean_ratio=float(np.mean(ratios)),
        median_ratio=float(np.median(ratios)),
        pooled_ratio=inside / area,
        mass_inside=inside,
        area_fraction=area)


def load_scenes(data_root: str, split: str,
                num_images: Optional[int]) -> List[tuple]:
    """(image path, boxes x1y1x2y2) of the CUHK-layout ``split`` ('gallery'
    or 'train'): every annotated person, labeled or not."""
    from mmpsearch.datasets.cuhk_sysu import (IMAGE_DIR, cuhk_test_annotations,
                                              cuhk_train_annotations)
    if split == 'train':
        anns = cuhk_train_annotations(data_root)
    else:
        anns = cuhk_test_annotations(data_root)[0]
    if num_images is not None:
        anns = anns[:num_images]
    return [(osp.join(data_root, IMAGE_DIR, a.img_id), a.boxes) for a in anns]


def load_image(path: str) -> Tensor:
    """(1, 3, H, W) RGB in [-1, 1], padded with 0 at the bottom / right to
    a multiple of 64, as DiffPS's data preprocessor feeds the backbone."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f'cannot read {path}')
    x = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float()
    x = x / 127.5 - 1.0
    h, w = x.shape[-2:]
    ph = -h % SIZE_DIVISOR
    pw = -w % SIZE_DIVISOR
    return F.pad(x, (0, pw, 0, ph))[None]


@torch.no_grad()
def person_maps(backbone, img: Tensor) -> Dict[str, Tensor]:
    """The backbone's "person" map of one image: raw probabilities
    (``prob``) and min-max normalised as DGRPN gets it (``normalised``),
    both (h, w): the steps of ``StableDiffusionBackbone.forward`` in eval
    mode (one CPU generator seeded with ``noise_seed``), keeping the map
    before its min-max normalisation."""
    if backbone.training:
        raise ValueError('person_maps needs the backbone in eval mode')
    gen = [torch.Generator(device='cpu').manual_seed(backbone.noise_seed)]
    latent = backbone.encode_latent(img, gen)
    prob = backbone.run_unet(latent, gen)['attn_map'].float()[0, 0]
    norm = (prob - prob.min()) / (prob.max() - prob.min()).clamp_min(1e-12)
    return dict(prob=prob, normalised=norm)


def measure(sd_path: str,
            scenes: Sequence[tuple],
            backbone_cfg: Optional[dict] = None) -> dict:
    """Per-image and summary attention mass of one Stable Diffusion folder
    on ``scenes``; also returns the maps (for the figure)."""
    from mmpsearch.models.backbones.stable_diffusion import \
        StableDiffusionBackbone
    backbone = StableDiffusionBackbone(sd_path, **(backbone_cfg or {}))
    backbone.eval()
    rows: Dict[str, List[dict]] = dict(prob=[], normalised=[])
    maps = []
    for path, boxes in scenes:
        img = load_image(path)
        hw = cv2.imread(path).shape[:2]
        m = person_maps(backbone, img)
        maps.append(m['prob'])
        for key in rows:
            rows[key].append(attention_mass(m[key], boxes, hw))
    return dict(
        sd_path=sd_path,
        summary={
            k: summarise(v)
            for k, v in rows.items()
        },
        per_image=rows,
        maps=maps)


def save_figure(path: str, scenes: Sequence[tuple], results: Sequence[dict],
                labels: Sequence[str], show: int) -> None:
    """The first ``show`` scenes with their boxes, and each model's raw map
    (upsampled, normalised per image for display) over them."""
    from mmpsearch.visualization.pyplot import headless_pyplot
    plt = headless_pyplot()
    n = min(show, len(scenes))
    cols = 1 + len(results)
    fig, axes = plt.subplots(
        n, cols, figsize=(3.2 * cols, 2.6 * n), squeeze=False)
    for i in range(n):
        img_path, boxes = scenes[i]
        rgb = cv2.imread(img_path)[..., ::-1]
        h, w = rgb.shape[:2]
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(rgb)
            if j > 0:
                res = results[j - 1]
                m = res['maps'][i]
                s = max(math.ceil(h / m.shape[0]), math.ceil(w / m.shape[1]))
                up = m.repeat_interleave(s, 0).repeat_interleave(s, 1)
                up = up[:h, :w].numpy()
                up = (up - up.min()) / max(float(up.max() - up.min()), 1e-12)
                ax.imshow(up, cmap='jet', alpha=0.55)
                ratio = res['per_image']['prob'][i]['ratio']
                ax.set_title(f'{labels[j - 1]}: ratio {ratio:.2f}', fontsize=8)
            else:
                ax.set_title(osp.basename(img_path), fontsize=8)
            for x1, y1, x2, y2 in boxes:
                ax.add_patch(
                    plt.Rectangle((x1, y1),
                                  x2 - x1,
                                  y2 - y1,
                                  fill=False,
                                  color='white',
                                  lw=1))
            ax.axis('off')
    fig.suptitle(
        '"person" cross-attention map (DiffPS DGRPN guidance)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    labels = args.labels or [
        osp.basename(osp.normpath(p)) for p in args.sd_paths
    ]
    if len(labels) != len(args.sd_paths):
        raise SystemExit('--labels needs one name per --sd-paths folder')
    if args.out_dir:
        with exit_on_refusal():
            refuse_nonempty_dir(
                args.out_dir, '--out-dir', args.overwrite, flag='--overwrite')
    scenes = load_scenes(args.data_root, args.split, args.num_images)
    cfg = dict(
        timestep=args.timestep,
        attn_map_layer=args.attn_map_layer,
        attn_map_head=args.attn_map_head)
    results = [measure(p, scenes, cfg) for p in args.sd_paths]
    print(f'{len(scenes)} {args.split} scenes; ratio = (map mass inside the '
          'person boxes) / (their area fraction); 1 = blind to people')
    print(f'{"model":<24} {"map":<11} {"mass in":>8} {"area":>6} '
          f'{"pooled":>7} {"mean":>6} {"median":>7}')
    for label, res in zip(labels, results):
        for key, s in res['summary'].items():
            print(f'{label:<24} {key:<11} {s["mass_inside"]:8.3f} '
                  f'{s["area_fraction"]:6.3f} {s["pooled_ratio"]:7.2f} '
                  f'{s["mean_ratio"]:6.2f} {s["median_ratio"]:7.2f}')
    report = dict(
        data_root=args.data_root,
        split=args.split,
        backbone=cfg,
        images=[osp.basename(p) for p, _ in scenes],
        models={
            label: {
                k: v
                for k, v in res.items() if k != 'maps'
            }
            for label, res in zip(labels, results)
        })
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(osp.join(args.out_dir, 'attention_mass.json'), 'w') as f:
            json.dump(report, f, indent=1)
        if args.show > 0:
            save_figure(
                osp.join(args.out_dir, 'attention_maps.png'), scenes, results,
                labels, args.show)
        print(f'written to {args.out_dir}')
    return report


if __name__ == '__main__':
    main()
