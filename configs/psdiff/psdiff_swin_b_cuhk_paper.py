# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_swin_b_cuhk.py with the paper's training recipe exactly (see
# psdiff_r50_cuhk_paper.py).
from mmengine.config import read_base

with read_base():
    from .psdiff_r50_cuhk_paper import *  # noqa: F401,F403
    # the Swin-B backbone, its FPN input widths and its optimiser settings
    from .psdiff_swin_b_cuhk import model as swin_model
    from .psdiff_swin_b_cuhk import optim_wrapper, swin_b_checkpoint  # noqa

# assigned, not merged with update(): the ResNet's keys must go
model['backbone'] = swin_model['backbone']  # noqa: F405
model['neck'] = swin_model['neck']  # noqa: F405
del swin_model
