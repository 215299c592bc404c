# Copyright (c) mmpsearch contributors. All rights reserved.
# Ablation of psdiff_r18_synthetic.py (the capacity of one light layer): the
# paper's one CDL, reused by the 3 passes of every step and by every step,
# instead of the shipped 3 CDLs of separate weights. Same training passes,
# schedule and test settings; a third of the CDL's parameters.
from mmengine.config import read_base

with read_base():
    from .psdiff_r18_synthetic import *  # noqa: F401,F403

model['bbox_head']['num_layers'] = 1  # noqa: F405
