# Copyright (c) mmpsearch contributors. All rights reserved.
"""Write the ReID teacher's embeddings e_0 of every annotated box.

PSDiff trains its denoiser towards ``e_0 = Teacher(S, b_0)`` (PSDiff eq. 11),
for labeled and unlabeled persons alike. This tool runs a trained teacher
(``configs/teacher/*.py``) on the crop of every box of one split and writes
one L2-normalised embedding per box, in the order of the data infos'
``instances``, with :func:`mmpsearch.datasets.teacher_cache.
save_teacher_embeddings`::

    python tools/extract_teacher_embeddings.py \\
        configs/teacher/teacher_r50_cuhk.py work_dirs/teacher/epoch_60.pth \\
        --out data/CUHK-SYSU/teacher_r50_train.npz

The crops are made by the config's ``test_dataloader`` pipeline; the split
is chosen with ``--split``.
"""
import argparse
import copy
import os
import os.path as osp
import sys
import tempfile
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

# Make `python tools/extract_teacher_embeddings.py` work from a checkout
# without `pip install -e .`.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmpsearch.datasets.person_crops import PersonCropDataset  # noqa: E402
from mmpsearch.datasets.teacher_cache import \
    save_teacher_embeddings  # noqa: E402
from mmpsearch.registry import DATASETS, MODELS  # noqa: E402
from mmpsearch.utils import register_all_modules  # noqa: E402
from mmpsearch.utils.config import load_config  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Extract PSDiff teacher embeddings e_0 for every '
        'annotated box of a split')
    parser.add_argument('config', help='teacher config (configs/teacher/)')
    parser.add_argument('checkpoint', help='trained teacher checkpoint')
    parser.add_argument(
        '--out', required=True, help='output file, must end with .npz')
    parser.add_argument(
        '--split',
        default='train',
        help='split of the person-search dataset to embed (default: train)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument(
        '--device',
        choices=['cpu', 'cuda'],
        default=None,
        help='default: cuda when available, else cpu')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite --out when it exists')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return parser.parse_args(argv)


def build_crop_dataset(cfg, split: str) -> PersonCropDataset:
    """The config's test crop dataset, switched to every box of ``split``."""
    loader_cfg = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader_cfg or 'dataset' not in loader_cfg:
        raise KeyError(f'config {cfg.filename} has no test_dataloader.dataset '
                       '(a PersonCropDataset) to take the crop pipeline from')
    ds_cfg = copy.deepcopy(loader_cfg['dataset'])
    ds_type = ds_cfg.get('type')
    if ds_type not in (PersonCropDataset, 'PersonCropDataset'):
        raise TypeError(f'config {cfg.filename}: test_dataloader.dataset.type '
                        f'is {ds_type!r}, expected PersonCropDataset')
    if 'dataset' not in ds_cfg:
        raise KeyError(f'config {cfg.filename}: test_dataloader.dataset has '
                       'no `dataset` (the person-search dataset to crop)')
    ds_cfg['dataset']['split'] = split
    ds_cfg.update(
        include_unlabeled=True, subset='all', num_classes=None,
        test_mode=True)
    return DATASETS.build(ds_cfg)


@torch.no_grad()
def extract(model: torch.nn.Module,
            dataset: PersonCropDataset,
            batch_size: int = 64,
            num_workers: int = 0,
            show_progress: bool = True) -> List[np.ndarray]:
    """L2-normalised neck features of every crop, grouped per scene.

    Returns one (n_i, D) float32 array per scene of the wrapped dataset, rows
    in the order of the scene's ``instances``.
    """
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=pseudo_collate)
    rows: List[Optional[np.ndarray]] = [None] * len(dataset)
    progress = ProgressBar(len(dataset)) if show_progress else None
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        feats = model.extract_feat(data['inputs'], stage='neck')
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        feats = F.normalize(feats.flatten(1).float(), dim=1).cpu().numpy()
        for sample, feat in zip(data['data_samples'], feats):
            idx = sample.metainfo.get('sample_idx')
            if idx is None:
                raise KeyError('the crop pipeline drops `sample_idx`; keep '
                               "it in PackInputs' meta_keys so every "
                               'embedding finds its box')
            rows[idx] = feat
        if progress is not None:
            progress.update(len(feats))
    if progress is not None:
        print()

    dim = next((r.shape[0] for r in rows if r is not None), 0)
    per_scene = [
        np.full((len(scene['bboxes']), dim), np.nan, np.float32)
        for scene in dataset.scenes
    ]
    for idx, row in enumerate(rows):
        info = dataset.get_data_info(idx)
        if row is None:
            raise RuntimeError(f'no embedding was computed for box '
                               f'{info["box_index"]} of {info["img_id"]}')
        per_scene[info['image_index']][info['box_index']] = row
    for scene, embeds in zip(dataset.scenes, per_scene):
        # NaN: a box the crop dataset skipped or a diverged model; norm 0: an
        # all-zero feature, which has no direction to normalise.
        bad = ~(np.abs(np.linalg.norm(embeds, axis=1) - 1) < 1e-3)
        if bad.any():
            raise RuntimeError(
                f'{scene["img_id"]}: boxes {np.flatnonzero(bad).tolist()} '
                'got no unit-length embedding (missing, NaN or all-zero '
                'features)')
    return per_scene


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    if not args.out.endswith('.npz'):
        raise SystemExit(f'--out {args.out}: the file name must end with '
                         '.npz (numpy would add the suffix otherwise)')
    if osp.exists(args.out) and not args.force:
        raise SystemExit(f'--out {args.out} exists; pass --force to '
                         'overwrite it')
    if args.batch_size < 1:
        raise SystemExit(f'--batch-size must be >= 1, got {args.batch_size}')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda was asked but CUDA is not available')

    register_all_modules(init_default_scope=True)
    cfg = load_config(args.config, args.cfg_options)
    dataset = build_crop_dataset(cfg, args.split)

    model = MODELS.build(cfg.model)
    # strict: a checkpoint of another architecture must not load partially.
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.to(device)

    embeds = extract(model, dataset, args.batch_size, args.num_workers)
    img_ids = [scene['img_id'] for scene in dataset.scenes]
    boxes = [scene['bboxes'] for scene in dataset.scenes]

    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    # Write beside the target and rename, so a crash leaves no half file.
    fd, tmp = tempfile.mkstemp(suffix='.npz', dir=out_dir)
    os.close(fd)
    try:
        save_teacher_embeddings(tmp, img_ids, boxes, embeds)
        os.replace(tmp, args.out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    n_boxes = sum(len(b) for b in boxes)
    dim = next((e.shape[1] for e in embeds if len(e)), 0)
    print(f'wrote {n_boxes} embeddings (dim {dim}) of {len(img_ids)} images '
          f'of split {args.split!r} to {args.out}')
    return args.out


if __name__ == '__main__':
    main()
