# Copyright (c) mmpsearch contributors. All rights reserved.
# Synthetic scenes in the CUHK-SYSU layout, the built-in data of `make demo`:
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk
# The scenes are 320x240, so they are used at that scale (no upsampling),
# which keeps CPU training to minutes. CUHK-SYSU's base with another root
# and scale.
from mmengine.config import read_base

with read_base():
    from .cuhk_sysu import *  # noqa: F401,F403

data_root = 'data/synthetic_cuhk/'
img_scale = (320, 240)
train_transforms = [  # noqa: F405
    dict(t, scale=img_scale) if 'scale' in t else t for t in train_transforms
]
train_pipeline = [*train_transforms, pack_inputs]  # noqa: F405
test_pipeline = [  # noqa: F405
    dict(t, scale=img_scale) if 'scale' in t else t for t in test_pipeline
]
# Small images: loading in the main process is cheaper than workers on 2
# cores; and no pinned memory, which only a GPU uses.
train_dataloader.update(  # noqa: F405
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader.update(  # noqa: F405
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(datasets=[
        dict(d, data_root=data_root, pipeline=test_pipeline)
        for d in val_dataloader['dataset']['datasets']
    ]))  # noqa: F405
test_dataloader = val_dataloader
val_evaluator = dict(val_evaluator, data_root=data_root)  # noqa: F405
test_evaluator = val_evaluator
