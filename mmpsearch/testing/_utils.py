# Copyright (c) mmpsearch contributors. All rights reserved.
"""Person-search inputs for unit tests, as mmdet's ``demo_mm_inputs``."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

from mmpsearch.diffusion import DiffusionSettings, NoiseSchedule

SPLITS = ('train', 'gallery', 'query')


def demo_ps_inputs(batch_size: int = 2,
                   image_shape: Tuple[int, int, int] = (3, 64, 96),
                   num_persons: int = 2,
                   split: str = 'gallery',
                   diffusion: Optional[dict] = None,
                   timesteps: Optional[Sequence[int]] = None,
                   seed: int = 0) -> dict:
    """A batch as ``PackPersonSearchInputs`` packs it, for unit tests.

    Every image holds ``num_persons`` random persons (person ids 0, 1, ...,
    the last one unlabeled, -1, when there are two or more). A ``'query'``
    sample holds one of them, its ``query_index`` set, as the query
    pipelines load it. With ``diffusion`` (a
    :class:`~mmpsearch.diffusion.DiffusionSettings` dict with
    ``embed_dims``), ``'train'`` samples also get what the
    ``DualNoiseGenerator`` adds (PSDiff eq. 10): unit teacher embeddings
    ``gt_instances.teacher_embeds``, ``noisy_instances`` (b_t, e_t, the
    ground truth repeated to ``num_proposals``) and ``diffusion_t``.

    Args:
        batch_size (int): Images. Defaults to 2.
        image_shape (tuple): (C, H, W). Defaults to (3, 64, 96).
        num_persons (int): Persons per image (>= 1). Defaults to 2.
        split (str): ``'train'``, ``'gallery'`` or ``'query'``.
        diffusion (dict, optional): See above.
        timesteps (list[int], optional): t per image; defaults to
            400, 600, ... (a mid-noise level).
        seed (int): Everything random is drawn from it.

    Returns:
        dict: ``inputs`` (list of uint8 (C, H, W) tensors) and
        ``data_samples`` (list of :class:`DetDataSample`), the input of a
        data preprocessor.
    """
    if split not in SPLITS:
        raise ValueError(f'demo_ps_inputs: split must be one of {SPLITS}, '
                         f'got {split!r}')
    if num_persons < 1:
        raise ValueError('demo_ps_inputs: num_persons must be >= 1')
    settings = None if diffusion is None else DiffusionSettings.from_cfg(
        diffusion, 'demo_ps_inputs.diffusion')
    if settings is not None and settings.embed_dims is None:
        raise ValueError('demo_ps_inputs: diffusion needs embed_dims')
    g = torch.Generator().manual_seed(seed)
    C, H, W = image_shape
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(
            torch.randint(0, 256, (C, H, W), generator=g, dtype=torch.uint8))
        # boxes of at least a sixth of the image, inside it
        wh = (torch.rand(num_persons, 2, generator=g) * 0.3 + 0.17) * \
            torch.tensor([W, H])
        xy = torch.rand(
            num_persons, 2, generator=g) * (
                torch.tensor([W, H]) - wh)
        boxes = torch.cat([xy, xy + wh], dim=1)
        ids = torch.arange(num_persons)
        if num_persons > 1:
            ids[-1] = -1  # an unlabeled person
        meta = dict(
            img_id=f'demo_{i}.jpg',
            img_path=f'demo_{i}.jpg',
            img_shape=(H, W),
            ori_shape=(H, W),
            pad_shape=(H, W),
            scale_factor=(1.0, 1.0),
            split=split)
        if split == 'query':
            boxes, ids = boxes[:1], ids[:1].clamp(min=0)
            meta['query_index'] = i
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(boxes),
            labels=torch.zeros(len(boxes), dtype=torch.long),
            person_ids=ids)
        if split == 'train' and settings is not None:
            t = (
                timesteps[i] if timesteps is not None else min(
                    400 + 200 * i, settings.num_timesteps - 1))
            _add_noisy_instances(sample, settings, int(t), g)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _add_noisy_instances(sample: DetDataSample, settings: DiffusionSettings,
                         t: int, g: torch.Generator) -> None:
    """PSDiff eq. 10 for one sample (the ground truth repeated, as the
    generator's ``pad_mode='repeat'``)."""
    gt = sample.gt_instances
    boxes = gt.bboxes.tensor
    H, W = sample.metainfo['img_shape']
    n, N, D = len(boxes), settings.num_proposals, settings.embed_dims
    e0 = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    gt.teacher_embeds = e0
    cxcywh = torch.cat([
        (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    ], 1) / torch.tensor([W, H, W, H])
    inds = torch.arange(N) % n
    schedule = NoiseSchedule(settings.num_timesteps, settings.beta_schedule)
    x_b = (2 * cxcywh - 1)[inds] * settings.box_snr_scale
    x_e = e0[inds] * settings.embed_snr_scale
    noise_b = torch.randn(N, 4, generator=g)
    noise_e = torch.randn(N, D, generator=g)
    sample.noisy_instances = InstanceData(
        bboxes=schedule.q_sample(x_b, t, noise_b).float(),
        embeds=schedule.q_sample(x_e, t, noise_e).float(),
        gt_inds=inds)
    sample.set_metainfo(dict(diffusion_t=t))
