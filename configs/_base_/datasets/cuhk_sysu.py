# Copyright (c) mmpsearch contributors. All rights reserved.
# CUHK-SYSU as released (as released): train split for training; gallery
# (pool.mat) then query (TestG100.mat) split for validation / test, scored by
# PersonSearchMetric under the TestG100 protocol.
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.datasets.transforms import RandomFlip, Resize
from mmengine.dataset import ConcatDataset, DefaultSampler

from mmpsearch.datasets import (CUHKSYSUDataset, LoadPersonSearchAnnotations,
                                PackPersonSearchInputs)

dataset_type = CUHKSYSUDataset
data_root = 'data/CUHK-SYSU/'
gallery_size = 100
img_scale = (1333, 800)
backend_args = None

# The training transforms and the packing, by name: a leaf that adds a
# transform before the packing (PSDiff's DualNoiseGenerator) writes
# [*train_transforms, its_transform, pack_inputs].
train_transforms = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=RandomFlip, prob=0.5),
]
pack_inputs = dict(type=PackPersonSearchInputs)
train_pipeline = [*train_transforms, pack_inputs]
# Boxes are loaded after Resize: they stay in original pixels, which is what
# the query box and the metric use.
test_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=PackPersonSearchInputs),
]

# Loaders sized for a GPU machine: full-size images decoded and resized by 4
# workers per process, into pinned memory so that the host-to-GPU copy can
# run asynchronously. (The synthetic datasets, trained on the CPU, load in
# the main process instead.)
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    batch_sampler=dict(type=AspectRatioBatchSampler),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(
        type=ConcatDataset,
        datasets=[
            dict(
                type=dataset_type,
                data_root=data_root,
                split=split,
                gallery_size=gallery_size,
                test_mode=True,
                pipeline=test_pipeline,
                backend_args=backend_args) for split in ('gallery', 'query')
        ]))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='PersonSearchMetric',
    dataset_type='cuhk',
    data_root=data_root,
    gallery_size=gallery_size)
test_evaluator = val_evaluator
