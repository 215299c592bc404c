# Copyright (c) mmpsearch contributors. All rights reserved.
# PRW as released: frame_train.mat for training; the frames of
# frame_test.mat (gallery) then query_info.txt (query) for validation / test,
# scored by PersonSearchMetric under the PRW protocol (the whole gallery).
# CUHK-SYSU's loaders and pipelines with PRW's dataset class and root.
from mmengine.config import read_base

from mmpsearch.datasets import PRWDataset

with read_base():
    from .cuhk_sysu import *  # noqa: F401,F403

dataset_type = PRWDataset
data_root = 'data/PRW/'

train_dataloader['dataset'].update(  # noqa: F405
    type=dataset_type, data_root=data_root)
# PRW's gallery is every test frame: no gallery_size
val_dataloader['dataset']['datasets'] = [  # noqa: F405
    dict(
        type=dataset_type,
        data_root=data_root,
        split=split,
        test_mode=True,
        pipeline=test_pipeline,  # noqa: F405
        backend_args=backend_args)  # noqa: F405
    for split in ('gallery', 'query')
]
test_dataloader = val_dataloader  # noqa: F405
val_evaluator = dict(  # noqa: F405
    val_evaluator, dataset_type='prw', data_root=data_root)  # noqa: F405
test_evaluator = val_evaluator
