# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff (Jia et al., Sec. IV-A): AdamW 2.5e-5, wd 1e-4, 90k iterations,
# lr x0.1 at 70k and 84k; linear warm-up 1000 iterations and gradient
# clipping at max-norm 1.0 as DiffusionDet (its CLIP_VALUE 1.0, mmdet's
# port clip_grad max_norm 1.0), where the paper is silent.
from mmengine.optim.optimizer import OptimWrapper
from mmengine.optim.scheduler import LinearLR, MultiStepLR
from mmengine.runner.loops import IterBasedTrainLoop, TestLoop, ValLoop
from torch.optim import AdamW

train_cfg = dict(type=IterBasedTrainLoop, max_iters=90000, val_interval=10000)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)

# The two parts by name: a leaf that shortens the schedule changes them and
# writes param_scheduler = [lr_warmup, lr_decay] again.
lr_warmup = dict(
    type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=1000)
lr_decay = dict(
    type=MultiStepLR,
    begin=0,
    end=90000,
    by_epoch=False,
    milestones=[70000, 84000],
    gamma=0.1)
param_scheduler = [lr_warmup, lr_decay]

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=AdamW, lr=2.5e-5, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))

# Default setting for scaling LR automatically: the paper's batch is 32.
auto_scale_lr = dict(enable=False, base_batch_size=32)
