# Copyright (c) mmpsearch contributors. All rights reserved.
# A small ReID teacher for the synthetic scenes (mmpsearch.datasets.synthetic,
# CUHK-SYSU layout under data/synthetic_cuhk): the recipe of
# teacher_r50_cuhk.py with a slim ResNet-18 from scratch (no download) on
# 128x64 crops, sized for a 2-core CPU: 150 iterations take about 165 s of
# CPU time (1.5-3 min wall). Measured on make_synthetic('cuhk', ...) with its
# defaults: held-out crop accuracy 100 %, and on the *unseen* test identities
# (gallery split, ground-truth crops) retrieval mAP 0.98, rank-1 1.00.
#
#   python tools/train.py configs/teacher/teacher_synthetic.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_synthetic.py \
#       work_dirs/teacher_synthetic/iter_150.pth \
#       --out work_dirs/teacher_synthetic/teacher_embeddings.npz
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.runner import IterBasedTrainLoop
from torch.optim import AdamW

with read_base():
    from .teacher_r50_cuhk import *  # noqa: F401,F403

# tools/dataset_converters/make_synthetic.py with its defaults (200 ids)
# gives 100 training identities; PersonCropDataset checks this number
# against the data.
num_classes = 100
crop_size = (128, 64)  # (h, w)
width = 32  # channels of the first stage (ResNet-18 has 64)
embed_dim = width * 8
max_iters = 150
data_root = 'data/synthetic_cuhk/'
person_search_train = dict(
    person_search_train,  # noqa: F405
    data_root=data_root)

model['backbone'] = dict(  # noqa: F405
    type=model['backbone']['type'],  # noqa: F405
    depth=18,
    stem_channels=width,
    base_channels=width,
    strides=(1, 2, 2, 2),
    out_indices=(3, ))
model['head'].update(  # noqa: F405
    num_classes=num_classes,
    in_channels=embed_dim,
    scale=16.0,
    margins=0.2)

# the crop size changes, and no random crop of the small crops
train_pipeline = [
    dict(t, scale=(crop_size[1], crop_size[0])) if 'scale' in t else t
    for t in train_pipeline  # noqa: F405
    if 'padding' not in t
]
test_pipeline = [
    dict(t, scale=(crop_size[1], crop_size[0])) if 'scale' in t else t
    for t in test_pipeline  # noqa: F405
]
train_dataloader.update(  # noqa: F405
    batch_size=32, num_workers=2)
train_dataloader['dataset'].update(  # noqa: F405
    dataset=person_search_train,
    num_classes=num_classes,
    pipeline=train_pipeline)
val_dataloader.update(batch_size=64, num_workers=2)  # noqa: F405
val_dataloader['dataset'].update(  # noqa: F405
    dataset=person_search_train,
    num_classes=num_classes,
    pipeline=test_pipeline)
test_dataloader = val_dataloader

train_cfg = dict(
    type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
optim_wrapper['optimizer'] = dict(  # noqa: F405
    type=AdamW, lr=5e-3, weight_decay=5e-4)
param_scheduler = [
    dict(type=LinearLR, start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(
        type=CosineAnnealingLR,
        by_epoch=False,
        begin=50,
        end=max_iters,
        eta_min=1e-5),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)

default_hooks['logger'] = dict(type=LoggerHook, interval=20)  # noqa: F405
# replaced, not merged: no best-accuracy checkpoint of a 150-iteration run
default_hooks['checkpoint'] = dict(  # noqa: F405
    type=CheckpointHook,
    by_epoch=False,
    interval=max_iters,
    max_keep_ckpts=1)
log_processor.update(by_epoch=False)  # noqa: F405
randomness = dict(seed=0)
