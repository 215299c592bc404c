# Copyright (c) mmpsearch contributors. All rights reserved.
# Ablation of psdiff_r18_synthetic.py (hypothesis "capacity of one light
# layer"): the 3 CDL passes of a step use 3 layers with separate weights
# (a cascade, as Sparse R-CNN / DiffusionDet stack separate heads) instead
# of the paper's one reused layer. Same training passes, schedule and
# test-time settings; 3x the CDL's parameters.
from mmengine.config import read_base

with read_base():
    from .psdiff_r18_synthetic import *  # noqa: F401,F403

model['bbox_head']['num_layers'] = 3  # noqa: F405
