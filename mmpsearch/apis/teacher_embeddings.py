# Copyright (c) mmpsearch contributors. All rights reserved.
"""The ReID teacher's embeddings e_0 of every annotated box.

PSDiff trains its denoiser towards ``e_0 = Teacher(S, b_0)`` (PSDiff eq. 11),
for labeled and unlabeled persons alike. :func:`write_teacher_embeddings`
runs a trained teacher (``configs/teacher/*.py``) on the crop of every box of
one split and writes one L2-normalised embedding per box, in the order of
the data infos' ``instances``, with :func:`mmpsearch.datasets.teacher_cache.
save_teacher_embeddings`; ``tools/extract_teacher_embeddings.py`` is its
command line::

    >>> from mmpsearch.apis import write_teacher_embeddings
    >>> write_teacher_embeddings(
    ...     'configs/teacher/teacher_r50_cuhk.py',
    ...     'work_dirs/teacher/epoch_60.pth',
    ...     'data/CUHK-SYSU/teacher_r50_train.npz')

The crops are made by the config's ``test_dataloader`` pipeline.
"""
import copy
import os
import os.path as osp
import tempfile
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

from mmpsearch.datasets.person_crops import PersonCropDataset
from mmpsearch.datasets.teacher_cache import save_teacher_embeddings
from mmpsearch.registry import DATASETS, MODELS
from mmpsearch.utils import register_all_modules, safe_checkpoint_loading
from mmpsearch.utils.config import load_config


def build_crop_dataset(cfg: Config, split: str) -> PersonCropDataset:
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
        include_unlabeled=True, subset='all', num_classes=None, test_mode=True)
    return DATASETS.build(ds_cfg)


@torch.no_grad()
def extract_teacher_embeddings(model: torch.nn.Module,
                               dataset: PersonCropDataset,
                               batch_size: int = 64,
                               num_workers: int = 0,
                               show_progress: bool = True) -> List[np.ndarray]:
    """L2-normalised neck features of every crop, grouped per scene.

    Args:
        model: The teacher (an mmpretrain classifier with a neck).
        dataset: The crops, e.g. from :func:`build_crop_dataset`.
        batch_size (int): Crops per forward pass.
        num_workers (int): DataLoader workers.
        show_progress (bool): Show a progress bar on stdout.
        overwrite (bool): Replace an existing ``out``; without it an
            existing file is refused before any work starts.

    Returns:
        list[np.ndarray]: One (n_i, D) float32 array per scene of the
        wrapped dataset, rows in the order of the scene's ``instances``.

    Raises:
        RuntimeError: When a box got no unit-length embedding.
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


def write_teacher_embeddings(config: str,
                             checkpoint: str,
                             out: str,
                             split: str = 'train',
                             batch_size: int = 64,
                             num_workers: int = 2,
                             device: Optional[str] = None,
                             cfg_options: Optional[dict] = None,
                             show_progress: bool = True,
                             overwrite: bool = False) -> dict:
    """Embed every box of ``split`` with a trained teacher and write the
    embeddings to ``out`` (an ``.npz``).

    Args:
        config (str): The teacher config (``configs/teacher/``).
        checkpoint (str): Its trained checkpoint; it must fill every weight
            of the model (a checkpoint of another architecture is refused
            rather than loaded partially).
        out (str): The output file.
        split (str): The split of the person-search dataset to embed.
        batch_size (int): Crops per forward pass.
        num_workers (int): DataLoader workers.
        device (str, optional): ``'cpu'`` or ``'cuda'``; default: cuda when
            available, else cpu.
        cfg_options (dict, optional): Config overrides, key=value.
        show_progress (bool): Show a progress bar on stdout.
        overwrite (bool): Replace an existing ``out``; without it an
            existing file is refused before any work starts.

    Returns:
        dict: ``out``, ``num_boxes``, ``dim`` and ``num_images``.
    """
    if osp.lexists(out) and not overwrite:
        raise FileExistsError(
            f'{out} exists; refusing to overwrite the teacher embeddings '
            'there (overwrite=True replaces it)')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    register_all_modules(init_default_scope=True)
    cfg = load_config(config, cfg_options)
    dataset = build_crop_dataset(cfg, split)

    model = MODELS.build(cfg.model)
    # strict: a checkpoint of another architecture must not load partially.
    with safe_checkpoint_loading():  # weights_only + the allow-list
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.to(device)

    embeds = extract_teacher_embeddings(model, dataset, batch_size,
                                        num_workers, show_progress)
    img_ids = [scene['img_id'] for scene in dataset.scenes]
    boxes = [scene['bboxes'] for scene in dataset.scenes]

    out_dir = osp.dirname(osp.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    # Write beside the target and rename, so a crash leaves no half file.
    fd, tmp = tempfile.mkstemp(suffix='.npz', dir=out_dir)
    os.close(fd)
    try:
        save_teacher_embeddings(tmp, img_ids, boxes, embeds)
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dict(
        out=out,
        num_boxes=sum(len(b) for b in boxes),
        dim=next((e.shape[1] for e in embeds if len(e)), 0),
        num_images=len(img_ids))
