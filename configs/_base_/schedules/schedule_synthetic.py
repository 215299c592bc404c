# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff's schedule (schedule_90k.py) scaled down to the synthetic benchmark
# (configs/psdiff/psdiff_r18_synthetic.py) and a 2-core CPU: 4500 iterations,
# linear warm-up 100, lr /10 at 3600 (80 %), AdamW 2e-4 (from a teacher
# backbone, not fine-tuning ImageNet weights); the warm-up factor, weight
# decay and gradient clip as there. Validated once, at the end. A leaf that
# shortens it sets max_iters, train_cfg, lr_decay and param_scheduler again.
from mmengine.config import read_base

with read_base():
    from .schedule_90k import *  # noqa: F401,F403

max_iters = 4500
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
lr_warmup = dict(lr_warmup, end=100)  # noqa: F405
lr_decay = dict(lr_decay, end=max_iters, milestones=[3600])  # noqa: F405
param_scheduler = [lr_warmup, lr_decay]
optim_wrapper['optimizer'].update(lr=2e-4)  # noqa: F405
