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
from mmcv.transforms import LoadImageFromFile, RandomFlip, Resize
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from mmpretrain.datasets.transforms import PackInputs
from mmpretrain.evaluation import Accuracy
from mmpretrain.models import (ArcFaceClsHead, ClsDataPreprocessor,
                               CrossEntropyLoss, GlobalAveragePooling,
                               ImageClassifier, ResNet)
from torch.optim import AdamW

from mmpsearch.datasets.cuhk_sysu import CUHKSYSUDataset
from mmpsearch.datasets.person_crops import PersonCropDataset
from mmpsearch.datasets.transforms.person_crop import CropPersonBox

with read_base():
    from .._base_.default_runtime import *  # noqa: F401,F403

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
    type=CUHKSYSUDataset, data_root=data_root, split='train')

model = dict(
    type=ImageClassifier,
    data_preprocessor=dict(
        type=ClsDataPreprocessor,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type=ResNet,
        depth=18,
        stem_channels=width,
        base_channels=width,
        strides=(1, 2, 2, 2),
        out_indices=(3, )),
    neck=dict(type=GlobalAveragePooling),
    head=dict(
        type=ArcFaceClsHead,
        num_classes=num_classes,
        in_channels=embed_dim,
        scale=16.0,
        margins=0.2,
        loss=dict(type=CrossEntropyLoss, loss_weight=1.0)))

train_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=CropPersonBox),
    dict(type=Resize, scale=(crop_size[1], crop_size[0]), keep_ratio=False),
    dict(type=RandomFlip, prob=0.5, direction='horizontal'),
    dict(type=PackInputs),
]
test_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=CropPersonBox),
    dict(type=Resize, scale=(crop_size[1], crop_size[0]), keep_ratio=False),
    dict(type=PackInputs),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    dataset=dict(
        type=PersonCropDataset,
        dataset=person_search_train,
        subset='train',
        holdout_every=5,
        num_classes=num_classes,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(
        type=PersonCropDataset,
        dataset=person_search_train,
        subset='val',
        holdout_every=5,
        num_classes=num_classes,
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type=Accuracy, topk=(1, 5))
test_evaluator = val_evaluator

train_cfg = dict(
    type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=AdamW, lr=5e-3, weight_decay=5e-4))
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

default_hooks.update(  # noqa: F405
    logger=dict(type=LoggerHook, interval=20),
    checkpoint=dict(
        type=CheckpointHook,
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1))
randomness = dict(seed=0)
