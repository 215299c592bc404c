# Copyright (c) mmpsearch contributors. All rights reserved.
"""Person crops of a person-search dataset, for PSDiff's ReID teacher."""
import copy
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset as MMEngineBaseDataset
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

from mmpsearch.registry import DATASETS


@MMPRETRAIN_DATASETS.register_module()
@DATASETS.register_module()
class PersonCropDataset(BaseDataset):
    """One classification sample per annotated person box of a person-search
    dataset: the training data of PSDiff's ReID teacher.

    PSDiff (Jia et al., 2023) takes its target embeddings from a ReID model
    trained beforehand on the ground-truth crops, ``e_0 = Teacher(S, b_0)``
    (PSDiff eq. 11). This dataset turns a scene-level dataset (e.g.
    ``CUHKSYSUDataset`` or ``PRWDataset``) into an mmpretrain classification
    dataset: each sample is one box with ``gt_label`` = the index of its
    person id among the labeled ids of the split. The scene is loaded by the
    pipeline and cut to the box by ``CropPersonBox``.

    Every sample carries ``img_path``, ``img_id``, ``bbox`` (x1y1x2y2,
    original pixels), ``person_id``, ``gt_label``, ``image_index`` (position
    of the scene in the wrapped dataset) and ``box_index`` (position of the
    box in that scene's ``instances``).

    Args:
        dataset (dict | BaseDataset): The person-search dataset, or its
            config, e.g. ``dict(type='CUHKSYSUDataset', data_root=...,
            split='train')``.
        pipeline (Sequence): The crop pipeline, typically
            ``LoadImageFromFile, CropPersonBox, Resize, ..., PackInputs``.
        include_unlabeled (bool): Also give unlabeled (``person_id`` -1) and
            ignored boxes, with ``gt_label`` -1. False for training; True to
            extract an embedding for every annotated box. Defaults to False.
        subset (str): ``'all'``, or ``'train'`` / ``'val'`` to split the
            labeled crops of every identity: its ``holdout_every``-th,
            ``2*holdout_every``-th ... crops form ``'val'``, the rest
            ``'train'``, so that classification accuracy on ``'val'`` measures
            the teacher on unseen crops of the identities it will embed.
            Defaults to ``'all'``.
        holdout_every (int): See ``subset``. Defaults to 5.
        num_classes (int, optional): When given, the number of labeled
            identities the split must have (the classifier head's width).
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``
            (``test_mode``, ``lazy_init``, ``serialize_data`` ...).
    """

    SUBSETS = ('all', 'train', 'val')

    def __init__(self,
                 dataset: Union[dict, MMEngineBaseDataset],
                 pipeline: Sequence = (),
                 include_unlabeled: bool = False,
                 subset: str = 'all',
                 holdout_every: int = 5,
                 num_classes: Optional[int] = None,
                 **kwargs) -> None:
        if subset not in self.SUBSETS:
            raise ValueError(f'PersonCropDataset: subset={subset!r}, expected '
                             f'one of {self.SUBSETS}')
        if include_unlabeled and subset != 'all':
            raise ValueError(
                'PersonCropDataset: include_unlabeled=True needs '
                f"subset='all' (got {subset!r}); unlabeled boxes have no "
                'identity to hold out')
        if int(holdout_every) < 2:
            raise ValueError('PersonCropDataset: holdout_every must be >= 2 '
                             f'so every identity keeps training crops, got '
                             f'{holdout_every}')
        if isinstance(dataset, dict):
            dataset = copy.deepcopy(dataset)
            # Resolve a string type in our registry even when an mmpretrain
            # config (default scope 'mmpretrain') builds this dataset.
            dataset.setdefault('_scope_', 'mmpsearch')
            dataset = DATASETS.build(dataset)
        elif not isinstance(dataset, MMEngineBaseDataset):
            raise TypeError('PersonCropDataset: `dataset` must be a config '
                            'dict or an mmengine BaseDataset, got '
                            f'{type(dataset).__name__}')
        self.person_search_dataset = dataset
        self.include_unlabeled = include_unlabeled
        self.subset = subset
        self.holdout_every = int(holdout_every)
        self.num_classes = num_classes
        # Filled by load_data_list: the scenes in order, each with its boxes.
        self.scenes: List[Dict] = []
        super().__init__(ann_file='', pipeline=pipeline, **kwargs)

    def _dataset_name(self) -> str:
        ds = self.person_search_dataset
        root = getattr(ds, 'data_root', '')
        split = getattr(ds, 'split', None)
        name = type(ds).__name__
        return f'{name}(data_root={root!r}' + (f', split={split!r})'
                                               if split is not None else ')')

    def load_data_list(self) -> List[dict]:
        """One data info per box of the wrapped dataset (see class doc)."""
        ds = self.person_search_dataset
        ds.full_init()
        infos = [ds.get_data_info(i) for i in range(len(ds))]

        labeled_ids = set()
        for info in infos:
            if 'instances' not in info or 'img_path' not in info:
                raise KeyError(f'{self._dataset_name()}: data info '
                               f'{info.get("img_id", "?")!r} lacks '
                               "'instances' or 'img_path'")
            for inst in info['instances']:
                pid = int(inst['person_id'])
                if pid >= 0 and not inst.get('ignore_flag', 0):
                    labeled_ids.add(pid)
        person_ids = sorted(labeled_ids)
        label_of = {pid: i for i, pid in enumerate(person_ids)}
        if self.num_classes is not None and len(person_ids) != int(
                self.num_classes):
            raise ValueError(
                f'PersonCropDataset: {self._dataset_name()} has '
                f'{len(person_ids)} labeled identities but num_classes='
                f'{self.num_classes}; set the head\'s num_classes (and this '
                f'argument) to {len(person_ids)}')
        if not person_ids and not self.include_unlabeled:
            raise ValueError(f'PersonCropDataset: {self._dataset_name()} has '
                             'no labeled box to train the teacher on')

        seen_per_id: Dict[int, int] = defaultdict(int)
        data_list = []
        self.scenes = []
        for image_index, info in enumerate(infos):
            img_id = info.get('img_id', info['img_path'])
            boxes = np.asarray([inst['bbox'] for inst in info['instances']],
                               dtype=np.float32).reshape(-1, 4)
            self.scenes.append(dict(img_id=img_id, bboxes=boxes))
            for box_index, inst in enumerate(info['instances']):
                pid = int(inst['person_id'])
                labeled = pid >= 0 and not inst.get('ignore_flag', 0)
                if not labeled and not self.include_unlabeled:
                    continue
                if labeled and self.subset != 'all':
                    k = seen_per_id[pid]
                    seen_per_id[pid] += 1
                    held_out = k % self.holdout_every == self.holdout_every - 1
                    if held_out != (self.subset == 'val'):
                        continue
                data_list.append(
                    dict(
                        img_path=info['img_path'],
                        img_id=img_id,
                        bbox=boxes[box_index].copy(),
                        person_id=pid,
                        gt_label=label_of[pid] if labeled else -1,
                        image_index=image_index,
                        box_index=box_index))

        if not data_list:
            # mmengine would fail later with "need at least one array to
            # concatenate"; say which subset is empty and why
            raise ValueError(
                f'PersonCropDataset: subset={self.subset!r} of '
                f'{self._dataset_name()} holds no crop: no identity has '
                f'{self.holdout_every} labeled boxes (holdout_every='
                f'{self.holdout_every} puts every {self.holdout_every}-th box '
                "of an identity in 'val'). Lower holdout_every or use more "
                'scenes')
        self._metainfo['classes'] = tuple(str(pid) for pid in person_ids)
        self._metainfo['person_ids'] = tuple(person_ids)
        return data_list

    def extra_repr(self) -> List[str]:
        return [
            f'Person-search dataset: \t{self._dataset_name()}',
            f'Subset: \t{self.subset}', f'Unlabeled boxes: \t'
            f'{"included" if self.include_unlabeled else "excluded"}'
        ]
