# Copyright (c) mmpsearch contributors. All rights reserved.
# DiffPS (Kim et al., ICCV 2025) with Stable Diffusion 2.1-base on PRW:
# diffps_sd21_cuhk.py (the paper settings, the official code's 1280x1280
# input, batch 5, the same SD weights folder) with PRW's data, an OIM
# lookup table of 483 rows and a 500-entry queue, and the official PRW
# initialisation of the box predictor and the embedding head.
from mmengine.config import read_base

with read_base():
    from .diffps_sd21_cuhk import *  # noqa: F401,F403
    # the dataset after the leaf: its variables replace CUHK-SYSU's
    from .._base_.datasets.prw import *  # noqa: F401,F403
    # and the leaf's 1280x1280 pipelines replace the dataset's
    from .diffps_sd21_cuhk import test_pipeline, train_pipeline

model.reid_roi_head.loss_reid.update(num_pids=483, num_cq_size=500)
train_dataloader.update(  # noqa: F405
    batch_size=5,
    batch_sampler=None,
    dataset=dict(pipeline=train_pipeline))
val_dataloader.dataset.datasets = [  # noqa: F405
    dict(d, pipeline=test_pipeline)
    for d in val_dataloader.dataset.datasets  # noqa: F405
]
test_dataloader = val_dataloader  # noqa: F405

# The official PRW run initialises every trainable weight of the box
# predictor and of the embedding head (BatchNorm weights included) from
# N(0, 0.01), biases 0 (its PARAM_INIT 'v2'; CUHK-SYSU uses 'v1', the
# Xavier init of the base config).
# (an override initialises every layer of the named module that has a weight)
prw_init = dict(type='Normal', std=0.01, bias=0.0)
model.roi_head.bbox_head.init_cfg = dict(
    prw_init,
    override=[dict(name='fc_cls'),
              dict(name='fc_reg'),
              dict(name='reg_norm')])
model.reid_roi_head.embed_head.init_cfg = dict(
    prw_init, override=dict(name='embeddings'))
