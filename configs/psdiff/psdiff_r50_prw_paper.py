# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_r50_prw.py with the paper's training recipe exactly (see
# psdiff_r50_cuhk_paper.py).
from mmengine.config import read_base

with read_base():
    from .psdiff_r50_prw import *  # noqa: F401,F403
    # after the leaf, so that these two names win
    from .psdiff_r50_cuhk_paper import center_teacher
    from .psdiff_r50_cuhk_paper import model as paper_model

model['head']['criterion'] = paper_model['head']['criterion']  # noqa: F405
model['train_cfg'] = paper_model['train_cfg']  # noqa: F405
del paper_model
train_dataloader['dataset']['pipeline'] = [  # noqa: F405
    dict(t, center_teacher=center_teacher)
    if 'center_teacher' in t else t
    for t in train_dataloader['dataset']['pipeline']  # noqa: F405
]
train_pipeline = train_dataloader['dataset']['pipeline']  # noqa: F405
