# Copyright (c) mmpsearch contributors. All rights reserved.
# mmdet's 1x schedule (mmdet configs/_base_/schedules/schedule_1x.py; the
# mmdet wheel ships no configs): SGD 0.02, momentum 0.9, wd 1e-4, 12 epochs,
# linear warm-up 500 iterations, lr x0.1 at epochs 8 and 11, for a total
# batch of 16 (another one: `tools/train.py --auto-scale-lr`).
from mmengine.optim.optimizer import OptimWrapper
from mmengine.optim.scheduler import LinearLR, MultiStepLR
from mmengine.runner.loops import EpochBasedTrainLoop, TestLoop, ValLoop
from torch.optim import SGD

max_epochs = 12
train_cfg = dict(
    type=EpochBasedTrainLoop, max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)

param_scheduler = [
    dict(type=LinearLR, start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type=MultiStepLR,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=SGD, lr=0.02, momentum=0.9, weight_decay=0.0001))

auto_scale_lr = dict(enable=False, base_batch_size=16)
