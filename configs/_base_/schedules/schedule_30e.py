# Copyright (c) mmpsearch contributors. All rights reserved.
# DiffPS (Kim et al., Sec. 4): Adam 1e-4, 1-epoch warm-up, x0.1 at epochs 8
# and 14, 30 epochs, grad clip 10 (AMP is switched on with
# `tools/train.py --amp`). As the official code: one GPU, 5 images per batch
# (the leaf configs set batch_size=5), evaluation after every epoch from
# epoch 10 on, the best checkpoint kept. Another total batch size scales the
# learning rate linearly from 5 with `tools/train.py --auto-scale-lr`.
from mmengine.optim.optimizer import OptimWrapper
from mmengine.optim.scheduler import LinearLR, MultiStepLR
from mmengine.runner.loops import EpochBasedTrainLoop, TestLoop, ValLoop
from torch.optim import Adam

train_cfg = dict(
    type=EpochBasedTrainLoop, max_epochs=30, val_begin=10, val_interval=1)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)

# The two parts by name: a leaf that changes the schedule changes them and
# writes param_scheduler = [lr_warmup, lr_decay] again.
lr_warmup = dict(
    type=LinearLR,
    start_factor=0.001,
    by_epoch=True,
    begin=0,
    end=1,
    convert_to_iter_based=True)
lr_decay = dict(
    type=MultiStepLR,
    begin=0,
    end=30,
    by_epoch=True,
    milestones=[8, 14],
    gamma=0.1)
param_scheduler = [lr_warmup, lr_decay]

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=Adam, lr=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))

auto_scale_lr = dict(enable=False, base_batch_size=5)
