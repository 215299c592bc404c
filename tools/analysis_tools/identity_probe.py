# Copyright (c) mmpsearch contributors. All rights reserved.
"""How much person identity do DiffPS's frozen Stable Diffusion features
carry, before any head is trained?

DiffPS (Kim et al., "Leveraging Prior Knowledge of Diffusion Model for
Person Search", ICCV 2025) reads its ReID features from a frozen Stable
Diffusion UNet (``StableDiffusionBackbone``); the heads on top (MSFRN, SFAN)
can only use the identity those features hold. Whether they hold any is a
property of the SD weights alone, so it is measured here without training
a head: a linear probe on the ground-truth boxes.

For each annotated person box of a CUHK-SYSU-layout dataset (e.g. the
synthetic one of ``tools/dataset_converters/make_synthetic.py``), each
source below is RoIAligned to a 4 x 2 grid (4 rows from top to bottom, so
that upper and lower clothing fall into separate cells) and flattened:

1. ``rgb``: the image itself (the same probe on raw colours: what a probe
   can reach without any SD; the reference row);
2. ``recon``: the VAE's reconstruction of the latent the UNet receives,
   decoded by the SD folder's own decoder (which the backbone drops): what
   survives the autoencoder. Identity lost between ``rgb`` and ``recon``
   is lost to every later feature;
3. ``latent``: that VAE latent (x ``scaling_factor``; a posterior sample or
   its mean, as the backbone draws it);
4. ``det``: the detection map ``det_feat``;
5. ``T1``, ``T2``, ``T3``: the ReID maps ``reid_feats`` of one up level
   (coarse to fine), and ``reid_all``: all of them together.

Each map of a source is divided by its mean box norm over the training
persons (so the maps of a group weigh alike) and the maps are concatenated.
On the labelled training persons (ids >= 0) a PCA (at most 128 dimensions)
and a within-class whitening (the within-identity scatter in the PCA space,
plus 1e-3 x its mean eigenvalue on the diagonal; the LDA-like step) are
fitted. Every source is scored in two modes, ``pca`` (the PCA projection
only) and ``lda`` (PCA then whitening), by cosine retrieval among the
ground-truth gallery boxes (score 1) under the dataset's standard protocol
(its queries and their ``TestG{N}`` galleries, as ``eval_search.py``
scores a results file). It prints a table (source, mode, mAP, top-1) and,
with ``--out``, writes it as JSON.

    python tools/analysis_tools/identity_probe.py data/synthetic_cuhk \\
        --sd-path work_dirs/tiny_ldm \\
        --config tests/data/configs/diffps_sd21_synthetic.py \\
        --out work_dirs/identity_probe/tiny_ldm.json

The backbone's settings come from ``model.backbone`` of ``--config`` (by
default those of ``configs/_base_/models/diffps_sd21.py``); ``--sd-path``
always replaces its SD folder, and ``--timestep``, ``--latent`` and
``--no-noise`` its input when given. Runs on the CPU.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

from mmpsearch.utils.cli_args import add_force_arg, add_timestep_arg

DEFAULT_CONFIG = osp.join('configs', '_base_', 'models', 'diffps_sd21.py')
MODES = ('pca', 'lda')
GRID = (4, 2)  # RoIAlign cells: rows (top to bottom) x columns


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Linear identity probe of the frozen DiffPS Stable '
        'Diffusion features on the ground-truth person boxes.')
    parser.add_argument('data_root', help='CUHK-SYSU-layout folder')
    parser.add_argument(
        '--sd-path',
        required=True,
        help='Stable Diffusion folder (diffusers layout); replaces the '
        'config\'s')
    parser.add_argument(
        '--config',
        default=None,
        help='DiffPS config whose model.backbone gives the backbone settings '
        f'(default: {DEFAULT_CONFIG})')
    add_timestep_arg(parser, default=None)
    parser.add_argument(
        '--latent',
        choices=['sample', 'mean'],
        default=None,
        help='VAE posterior sample or mean (default: the config\'s)')
    parser.add_argument(
        '--no-noise',
        action='store_true',
        help='no forward noise on the latent (default: the config\'s)')
    parser.add_argument(
        '--gallery-size',
        type=int,
        default=100,
        help='CUHK-SYSU gallery size of the protocol')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='fit on the first N training images (default: all)')
    parser.add_argument('--out', default=None, help='write the table as JSON')
    add_force_arg(parser, help='overwrite an existing --out')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch threads (default: torch\'s)')
    args = parser.parse_args(argv)
    if args.num_train is not None and args.num_train < 1:
        parser.error('--num-train must be at least 1')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be at least 1')
    return args


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
# torchvision's RoIAlign (as the DiffPS public code's), not mmcv's: a plain
# function on (B, C, H, W) maps; they are made contiguous first (the hooked
# attention projections are permuted views)
from torchvision.ops import roi_align  # noqa: E402

from mmpsearch.models.backbones.sd_loader import load_vae  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal, write_json  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa: E402

Features = Dict[str, np.ndarray]


def _sibling_tool(name: str):
    """A module of this folder (tools/ is not a package)."""
    here = osp.dirname(osp.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    return __import__(name)


def load_image(path: str) -> Tensor:
    """(1, 3, H, W) RGB in [-1, 1], zero-padded to a multiple of 64, as
    DiffPS's data preprocessor feeds the backbone (``attention_mass.py``'s
    loader)."""
    return _sibling_tool('attention_mass').load_image(path)


def pool_boxes(feat: Tensor, boxes: np.ndarray, padded_h: int) -> np.ndarray:
    """(n, C x 4 x 2) RoIAlign of ``feat`` (1, C, h, w) over the padded
    image of height ``padded_h`` at ``boxes`` (n, 4) x1y1x2y2 in pixels
    (``aligned=True``: pixel-centred sampling, 2 x 2 points a cell)."""
    boxes = torch.as_tensor(
        np.asarray(boxes, np.float32).reshape(-1, 4), dtype=torch.float32)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    out = roi_align(
        feat.float().contiguous(),
        rois,
        GRID,
        spatial_scale=feat.shape[-2] / padded_h,
        sampling_ratio=2,
        aligned=True)
    return out.flatten(1).numpy()


@torch.no_grad()
def image_maps(backbone, vae, img: Tensor) -> Dict[str, Tensor]:
    """Every source map of one padded image (1, 3, H, W) in [-1, 1]:
    ``rgb``, ``latent``, ``recon``, ``det`` and ``T{l}_{m}`` (the m-th ReID
    map of up level l, 1-based), all (1, C, h, w) fp32.

    The steps of ``StableDiffusionBackbone.forward`` in eval mode (one CPU
    generator seeded with ``noise_seed``: first the posterior draw, then
    the noise), keeping the latent for ``latent`` and, decoded by ``vae``
    (``sd_loader.load_vae``), ``recon`` (clamped to [-1, 1]).
    """
    if backbone.training:
        raise ValueError('image_maps needs the backbone in eval mode')
    gen = backbone._generators(1)
    latent = backbone.encode_latent(img, gen)
    recon = vae.decode(latent / vae.config.scaling_factor).sample
    cap = backbone.run_unet(latent, gen)
    maps = dict(rgb=img, latent=latent, recon=recon.clamp(-1, 1))
    maps['det'] = cap[backbone.det_layer]
    for li, level in enumerate(backbone.reid_layers):
        for mi, name in enumerate(level):
            maps[f'T{li + 1}_{mi}'] = cap[name]
    return {k: v.float() for k, v in maps.items()}


def source_groups(levels: Sequence[int]) -> Dict[str, List[str]]:
    """Source name -> its maps, for a backbone with ``levels[l]`` ReID maps
    at up level l + 1."""
    groups = dict(rgb=['rgb'], recon=['recon'], latent=['latent'], det=['det'])
    every = []
    for li, n in enumerate(levels):
        groups[f'T{li + 1}'] = [f'T{li + 1}_{mi}' for mi in range(n)]
        every += groups[f'T{li + 1}']
    groups['reid_all'] = every
    return groups


class LinearProbe:
    """PCA (at most ``max_dim`` dimensions) and within-class whitening
    fitted on labelled rows; embeds rows L2-normalised for cosine ranking.

    Args:
        max_dim (int): PCA dimensions kept.
        reg (float): Added to the within-class scatter's diagonal, as a
            fraction of its mean eigenvalue.
    """

    def __init__(self, max_dim: int = 128, reg: float = 1e-3) -> None:
        self.max_dim = max_dim
        self.reg = reg

    def fit(self, x: np.ndarray, y: np.ndarray) -> 'LinearProbe':
        x = np.asarray(x, np.float64)
        y = np.asarray(y)
        if len(x) < 2 or len(x) != len(y):
            raise ValueError(f'LinearProbe.fit: {len(x)} rows and {len(y)} '
                             'labels; expected at least two rows, one label '
                             'each')
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.proj = vt[:min(self.max_dim, len(vt))].T
        z = (x - self.mean) @ self.proj
        d = z.shape[1]
        _, inverse = np.unique(y, return_inverse=True)
        means = np.zeros((inverse.max() + 1, d))
        np.add.at(means, inverse, z)
        means /= np.bincount(inverse)[:, None]
        zc = z - means[inverse]
        sw = zc.T @ zc / len(z)
        trace = np.trace(sw)
        sw += self.reg * (trace / d if trace > 0 else 1.0) * np.eye(d)
        w, v = np.linalg.eigh(sw)
        self.whiten = v @ np.diag(w**-0.5) @ v.T
        return self

    @property
    def dim(self) -> int:
        return self.proj.shape[1]

    def embed(self, x: np.ndarray, mode: str) -> np.ndarray:
        """float32 (n, dim), unit rows; ``mode`` 'pca' or 'lda'."""
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        z = (np.asarray(x, np.float64) - self.mean) @ self.proj
        if mode == 'lda':
            z = z @ self.whiten
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.maximum(norm, 1e-12)).astype(np.float32)


def map_scales(train: Features) -> Dict[str, float]:
    """Per map, the mean norm of its training rows."""
    return {
        k: float(np.linalg.norm(v, axis=1).mean()) + 1e-9
        for k, v in train.items()
    }


def stack(feats: Features, keys: Sequence[str],
          scales: Dict[str, float]) -> np.ndarray:
    """The maps ``keys`` of ``feats``, each divided by its scale,
    concatenated: (n, sum of widths)."""
    return np.concatenate([feats[k] / scales[k] for k in keys], 1)


def search_results(protocol, gallery: Dict[str, np.ndarray],
                   queries: np.ndarray) -> dict:
    """A results dict (``mmpsearch.evaluation.results_io``) of the
    ground-truth gallery boxes (score 1) with the embeddings ``gallery``
    (img_id -> (n, D)) and the protocol's queries with ``queries``
    (q, D)."""
    out = {}
    for img_id, g in protocol.gallery.items():
        b = np.asarray(g.boxes, np.float32).reshape(-1, 4)
        out[img_id] = dict(
            bboxes=b,
            scores=np.ones(len(b), np.float32),
            embeddings=np.asarray(gallery[img_id], np.float32))
    query = [
        dict(
            img_id=q.img_id,
            bbox=np.asarray(q.box, np.float32).reshape(4),
            embedding=np.asarray(e, np.float32))
        for q, e in zip(protocol.queries, queries)
    ]
    return dict(gallery=out, query=query)


def _concat(parts: List[Features]) -> Features:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def collect_features(backbone,
                     vae,
                     data_root: str,
                     train_anns,
                     protocol,
                     log_every: int = 100) -> dict:
    """Pooled maps of the labelled training persons, of every gallery box
    and of every query, each image through the backbone once.

    Returns:
        dict: ``train`` (Features, rows of the labelled persons), ``ids``
        (their person ids), ``gallery`` (img_id -> Features of its boxes)
        and ``query`` (Features, one row per query, protocol order).
    """
    from mmpsearch.datasets.cuhk_sysu import IMAGE_DIR

    def pooled(img_id: str, boxes: np.ndarray) -> Features:
        img = load_image(osp.join(data_root, IMAGE_DIR, img_id))
        maps = image_maps(backbone, vae, img)
        return {
            k: pool_boxes(m, boxes, img.shape[-2])
            for k, m in maps.items()
        }

    start, done = time.time(), 0

    def tick():
        nonlocal done
        done += 1
        if log_every and done % log_every == 0:
            print(f'{done} images, {time.time() - start:.0f} s', flush=True)

    train, ids = [], []
    for ann in train_anns:
        keep = np.asarray(ann.person_ids) >= 0
        if not keep.any():
            continue
        train.append(pooled(ann.img_id, np.asarray(ann.boxes)[keep]))
        ids.append(np.asarray(ann.person_ids)[keep])
        tick()
    # a query's box is pooled from the same maps as its image's gallery boxes
    query_boxes: Dict[str, List[int]] = {}
    for qi, q in enumerate(protocol.queries):
        query_boxes.setdefault(q.img_id, []).append(qi)
    names = list(protocol.gallery) + [
        n for n in query_boxes if n not in protocol.gallery
    ]
    gallery, query = {}, [None] * len(protocol.queries)
    for img_id in names:
        g = protocol.gallery.get(img_id)
        gb = np.zeros((0, 4), np.float32) if g is None else np.asarray(
            g.boxes, np.float32).reshape(-1, 4)
        qis = query_boxes.get(img_id, [])
        qb = np.asarray([protocol.queries[i].box for i in qis],
                        np.float32).reshape(-1, 4)
        f = pooled(img_id, np.concatenate([gb, qb]))
        n = len(gb)
        if g is not None:
            gallery[img_id] = {k: v[:n] for k, v in f.items()}
        for j, qi in enumerate(qis, n):
            query[qi] = {k: v[j:j + 1] for k, v in f.items()}
        tick()
    return dict(
        train=_concat(train),
        ids=np.concatenate(ids),
        gallery=gallery,
        query=_concat(query))


def probe_sources(feats: dict,
                  groups: Dict[str, List[str]],
                  protocol,
                  max_dim: int = 128) -> Dict[str, dict]:
    """``{source: {mode: {'mAP', 'top1'} in %, 'dim': PCA dims}}``."""
    from mmpsearch.evaluation.functional import evaluate_person_search
    scales = map_scales(feats['train'])
    out = {}
    for name, keys in groups.items():
        probe = LinearProbe(max_dim).fit(
            stack(feats['train'], keys, scales), feats['ids'])
        out[name] = dict(dim=probe.dim)
        for mode in MODES:
            gallery = {
                k: probe.embed(stack(f, keys, scales), mode)
                for k, f in feats['gallery'].items()
            }
            queries = probe.embed(stack(feats['query'], keys, scales), mode)
            m = evaluate_person_search(
                search_results(protocol, gallery, queries),
                protocol,
                score_thr=0.5)
            out[name][mode] = {k: float(m[k]) * 100 for k in ('mAP', 'top1')}
    return out


def backbone_settings(args) -> dict:
    """``model.backbone`` of the config with the command line's changes."""
    from mmengine.config import Config
    config = args.config
    if config is None:
        repo = osp.dirname(osp.dirname(osp.dirname(osp.realpath(__file__))))
        config = osp.join(repo, DEFAULT_CONFIG)
    if not osp.isfile(config):
        raise SystemExit(f'--config {config} does not exist')
    cfg = Config.fromfile(config)
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise SystemExit(f'{config} has no model.backbone')
    settings = backbone.to_dict()
    settings['sd_path'] = args.sd_path
    if args.timestep is not None:
        settings['timestep'] = args.timestep
    if args.latent is not None:
        settings['latent'] = args.latent
    if args.no_noise:
        settings['add_noise'] = False
    return settings


def build_backbone(settings: dict):
    """The backbone of ``settings`` (a ``StableDiffusionBackbone``), in
    eval mode."""
    from mmpsearch.models.backbones.stable_diffusion import \
        StableDiffusionBackbone
    from mmpsearch.registry import MODELS
    from mmpsearch.utils import register_all_modules
    register_all_modules()
    cfg = dict(settings)
    cfg.setdefault('type', StableDiffusionBackbone)
    backbone = MODELS.build(cfg)
    if not isinstance(backbone, StableDiffusionBackbone):
        raise SystemExit(f'model.backbone is a {type(backbone).__name__}; '
                         'the probe reads a StableDiffusionBackbone')
    return backbone.eval()


def _plain(settings: dict) -> dict:
    """The settings as JSON (the type by name)."""
    out = {}
    for k, v in settings.items():
        if k == 'type':
            v = getattr(v, '__name__', str(v))
        elif isinstance(v, (tuple, list)):
            v = [list(x) if isinstance(x, (tuple, list)) else x for x in v]
        out[k] = v
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.out:  # before any work: an earlier file is not overwritten
        with exit_on_refusal():
            refuse_existing_file(args.out, '--out', args.force)
    if not osp.isdir(args.sd_path):
        raise SystemExit(f'--sd-path {args.sd_path} is not a folder')
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmpsearch.datasets.cuhk_sysu import cuhk_train_annotations
    from mmpsearch.evaluation.metrics import person_search_metric
    with exit_on_refusal(FileNotFoundError, ValueError):
        protocol = person_search_metric.load_protocol('cuhk', args.data_root,
                                                      args.gallery_size)
        train_anns = cuhk_train_annotations(args.data_root)
    if args.num_train is not None:
        train_anns = train_anns[:args.num_train]
    settings = backbone_settings(args)
    backbone = build_backbone(settings)
    vae = load_vae(args.sd_path)

    start = time.time()
    feats = collect_features(backbone, vae, args.data_root, train_anns,
                             protocol)
    feature_s = time.time() - start
    if len(np.unique(feats['ids'])) < 2:
        raise SystemExit('the training images hold fewer than two labelled '
                         'identities; nothing to fit (see --num-train)')
    groups = source_groups([len(level) for level in backbone.reid_layers])
    results = probe_sources(feats, groups, protocol)
    print(f'{len(feats["ids"])} training persons '
          f'({len(np.unique(feats["ids"]))} ids, {len(train_anns)} images); '
          f'{len(protocol.queries)} queries, gallery size '
          f'{args.gallery_size}; features {feature_s:.0f} s')
    print(f'{"source":<10} {"mode":<5} {"dims":>5} {"mAP":>6} {"top-1":>6}')
    for name, r in results.items():
        for mode in MODES:
            print(f'{name:<10} {mode:<5} {r["dim"]:5d} {r[mode]["mAP"]:6.1f} '
                  f'{r[mode]["top1"]:6.1f}')
    report = dict(
        data_root=args.data_root,
        sd_path=args.sd_path,
        config=args.config or DEFAULT_CONFIG,
        backbone=_plain(settings),
        gallery_size=args.gallery_size,
        train_images=len(train_anns),
        train_persons=int(len(feats['ids'])),
        train_ids=int(len(np.unique(feats['ids']))),
        queries=len(protocol.queries),
        grid=list(GRID),
        feature_seconds=round(feature_s, 1),
        sources=dict(groups),
        results=results)
    if args.out:
        write_json(report, args.out, force=args.force, makedirs=True)
    return report


if __name__ == '__main__':
    main()
