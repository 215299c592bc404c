# A tiny config for testing the tools; see mmpsearch/testing/toy_modules.py.
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import MultiStepLR, OptimWrapper
from mmengine.runner import IterBasedTrainLoop
from torch.optim import Adam

from mmpsearch.testing import ToyRegressionDataset, ToyRegressor

with read_base():
    from ....configs._base_.default_runtime import *  # noqa: F401,F403

model = dict(type=ToyRegressor, in_dim=4)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=ToyRegressionDataset, num_samples=32))
train_cfg = dict(type=IterBasedTrainLoop, max_iters=6, val_interval=1000)
optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=Adam, lr=0.05))
param_scheduler = [
    dict(
        type=MultiStepLR,
        by_epoch=False,
        begin=0,
        end=6,
        milestones=[3, 5],
        gamma=0.5)
]
default_hooks.update(  # noqa: F405
    logger=dict(type=LoggerHook, interval=1),
    checkpoint=dict(type=CheckpointHook, interval=2, by_epoch=False))
randomness = dict(seed=0, deterministic=False)
