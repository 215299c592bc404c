# Copyright (c) mmpsearch contributors. All rights reserved.
# Synthetic scenes in the PRW layout (six cameras c1..c6):
#   python tools/dataset_converters/make_synthetic.py --format prw \
#       --out data/synthetic_prw
# The scenes are 320x240, so they are used at that scale: the synthetic
# CUHK-SYSU base with PRW's dataset class, root and metric.
from mmengine.config import read_base

from mmpsearch.datasets import PRWDataset

with read_base():
    from .synthetic_cuhk import *  # noqa: F401,F403

dataset_type = PRWDataset
data_root = 'data/synthetic_prw/'
train_dataloader['dataset'].update(  # noqa: F405
    type=dataset_type, data_root=data_root)
# the synthetic CUHK-SYSU split entries less gallery_size (PRW searches the
# whole gallery)
val_dataloader['dataset']['datasets'] = [  # noqa: F405
    dict({
        k: v
        for k, v in d.items() if k != 'gallery_size'
    },
         type=dataset_type,
         data_root=data_root) for d in val_dataloader['dataset']['datasets']
]  # noqa: F405
test_dataloader = val_dataloader
val_evaluator = dict(  # noqa: F405
    val_evaluator, dataset_type='prw', data_root=data_root)  # noqa: F405
test_evaluator = val_evaluator
