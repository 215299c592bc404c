# Copyright (c) mmpsearch contributors. All rights reserved.
# Synthetic scenes in the CUHK-SYSU layout, the built-in data of `make demo`:
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk
# The scenes are 320x240, so they are used at that scale (no upsampling),
# which keeps CPU training to minutes.
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.transforms import RandomFlip, Resize
from mmengine.config import read_base

from mmpsearch.datasets import (CUHKSYSUDataset, LoadPersonSearchAnnotations,
                                PackPersonSearchInputs)

with read_base():
    from .cuhk_sysu import *  # noqa: F401,F403

dataset_type = CUHKSYSUDataset
data_root = 'data/synthetic_cuhk/'
img_scale = (320, 240)
backend_args = None
gallery_size = 100

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

# Small images: loading in the main process is cheaper than workers on 2
# cores.
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
                gallery_size=gallery_size,
                test_mode=True,
                pipeline=test_pipeline,
                backend_args=backend_args) for split in ('gallery', 'query')
        ])))
test_dataloader = val_dataloader  # noqa: F405

val_evaluator.update(dict(data_root=data_root))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
