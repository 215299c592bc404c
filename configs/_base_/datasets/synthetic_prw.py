# Copyright (c) mmpsearch contributors. All rights reserved.
# Synthetic scenes in the PRW layout (six cameras c1..c6):
#   python tools/dataset_converters/make_synthetic.py --format prw \
#       --out data/synthetic_prw
# The scenes are 320x240, so they are used at that scale.
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.transforms import RandomFlip, Resize
from mmengine.config import read_base

from mmpsearch.datasets import (PRWDataset, LoadPersonSearchAnnotations,
                                PackPersonSearchInputs)

with read_base():
    from .prw import *  # noqa: F401,F403

dataset_type = PRWDataset
data_root = 'data/synthetic_prw/'
img_scale = (320, 240)
backend_args = None

train_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PackPersonSearchInputs),
]
test_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=Resize, scale=img_scale, keep_ratio=True),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=PackPersonSearchInputs),
]

train_dataloader.update(  # noqa: F405
    dict(
        num_workers=0,
        persistent_workers=False,
        dataset=dict(data_root=data_root, pipeline=train_pipeline)))
val_dataloader.update(  # noqa: F405
    dict(
        num_workers=0,
        persistent_workers=False,
        dataset=dict(datasets=[
            dict(
                type=dataset_type,
                data_root=data_root,
                split=split,
                test_mode=True,
                pipeline=test_pipeline,
                backend_args=backend_args) for split in ('gallery', 'query')
        ])))
test_dataloader = val_dataloader  # noqa: F405

val_evaluator.update(dict(data_root=data_root))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
