# Copyright (c) mmpsearch contributors. All rights reserved.
from typing import Sequence

import numpy as np
import torch
from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs
from mmengine.structures import InstanceData

from mmpsearch.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadPersonSearchAnnotations(LoadAnnotations):
    """mmdet's ``LoadAnnotations`` plus the person ids of the boxes.

    Adds ``gt_person_ids`` (int64, -1 for unlabeled persons) in the order of
    ``instances``, so later transforms and the loss see the ids beside the
    boxes.
    """

    def __init__(self,
                 with_bbox: bool = True,
                 with_label: bool = True,
                 **kwargs) -> None:
        super().__init__(with_bbox=with_bbox, with_label=with_label, **kwargs)

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        ids = [inst['person_id'] for inst in results.get('instances', [])]
        results['gt_person_ids'] = np.asarray(ids, dtype=np.int64)
        return results


@TRANSFORMS.register_module()
class PackPersonSearchInputs(PackDetInputs):
    """mmdet's ``PackDetInputs`` for person search.

    Besides what ``PackDetInputs`` packs, it puts

    - ``gt_person_ids`` into ``gt_instances.person_ids``,
    - ``gt_teacher_embeds`` (the ReID teacher's e_0, one per box) into
      ``gt_instances.teacher_embeds``,
    - the output of ``DualNoiseGenerator`` (``noisy_bboxes``,
      ``noisy_embeds``, ``noise_gt_inds``) into ``data_sample.noisy_instances``
      and ``diffusion_t`` into the meta information,

    and keeps ``img_id``, ``split`` (train / gallery / query), ``cam_id`` and
    ``query_index`` as meta information, which the metric needs.
    """
    mapping_table = {
        'gt_bboxes': 'bboxes',
        'gt_bboxes_labels': 'labels',
        'gt_masks': 'masks',
        'gt_person_ids': 'person_ids',
        'gt_teacher_embeds': 'teacher_embeds',
    }
    noise_mapping = {
        'noisy_bboxes': 'bboxes',
        'noisy_embeds': 'embeds',
        'noise_gt_inds': 'gt_inds',
    }

    def __init__(
        self,
        meta_keys: Sequence[str] = ('img_id', 'img_path', 'ori_shape',
                                    'img_shape', 'scale_factor', 'flip',
                                    'flip_direction', 'split', 'cam_id',
                                    'query_index', 'diffusion_t')
    ) -> None:
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        data_sample = packed['data_samples']
        noisy = InstanceData()
        for key, name in self.noise_mapping.items():
            if key in results:
                noisy[name] = torch.as_tensor(np.asarray(results[key]))
        if len(noisy.keys()) > 0:
            data_sample.noisy_instances = noisy
        return packed

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
