# Copyright (c) mmpsearch contributors. All rights reserved.
# PRW as released (as released): frame_train.mat for training; the frames of
# frame_test.mat (gallery) then query_info.txt (query) for validation / test,
# scored by PersonSearchMetric under the PRW protocol.
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.datasets.transforms import RandomFlip, Resize
from mmengine.dataset import ConcatDataset, DefaultSampler

from mmpsearch.datasets import (LoadPersonSearchAnnotations,
                                PackPersonSearchInputs, PRWDataset)

dataset_type = PRWDataset
data_root = 'data/PRW/'
img_scale = (1333, 800)
backend_args = None

train_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PackPersonSearchInputs),
]
# Boxes are loaded after Resize: they stay in original pixels, which is what
# the query box and the metric use.
test_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=PackPersonSearchInputs),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
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
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(
        type=ConcatDataset,
        datasets=[
            dict(
                type=dataset_type,
                data_root=data_root,
                split='gallery',
                test_mode=True,
                pipeline=test_pipeline,
                backend_args=backend_args),
            dict(
                type=dataset_type,
                data_root=data_root,
                split='query',
                test_mode=True,
                pipeline=test_pipeline,
                backend_args=backend_args),
        ]))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='PersonSearchMetric',
    dataset_type='prw',
    data_root=data_root,
    gallery_size=100)
test_evaluator = val_evaluator
