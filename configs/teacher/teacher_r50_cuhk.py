# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff's ReID teacher on CUHK-SYSU (PSDiff eq. 11, e_0 = Teacher(S, b_0)):
# an mmpretrain ImageClassifier trained on the ground-truth person crops.
# ResNet-50 (ImageNet init, last stride 1 as in BoT ReID baselines) -> global
# average pooling (the embedding, 2048-d, L2-normalised when extracted) ->
# ArcFace head over the labeled training identities.
#
#   python tools/train.py configs/teacher/teacher_r50_cuhk.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_r50_cuhk.py \
#       work_dirs/teacher_r50_cuhk/epoch_60.pth \
#       --out data/CUHK-SYSU/teacher_r50_train.npz
from mmcv.transforms import LoadImageFromFile, RandomFlip, Resize
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import LinearLR, MultiStepLR, OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, TestLoop, ValLoop
from mmpretrain.datasets.transforms import PackInputs, RandomCrop
from mmpretrain.evaluation import Accuracy
from mmpretrain.models import (ArcFaceClsHead, ClsDataPreprocessor,
                               CrossEntropyLoss, GlobalAveragePooling,
                               ImageClassifier, ResNet)
from torch.optim import Adam

from mmpsearch.datasets.cuhk_sysu import CUHKSYSUDataset
from mmpsearch.datasets.person_crops import PersonCropDataset
from mmpsearch.datasets.transforms.person_crop import CropPersonBox

with read_base():
    from .._base_.default_runtime import *  # noqa: F401,F403

# Labeled identities of the CUHK-SYSU training split (as released).
num_classes = 5532
crop_size = (256, 128)  # (h, w) of a person crop
data_root = 'data/CUHK-SYSU/'
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
        depth=50,
        strides=(1, 2, 2, 1),
        out_indices=(3, ),
        init_cfg=dict(
            type='Pretrained',
            prefix='backbone',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth')),
    neck=dict(type=GlobalAveragePooling),
    head=dict(
        type=ArcFaceClsHead,
        num_classes=num_classes,
        in_channels=2048,
        scale=30.0,
        margins=0.3,
        loss=dict(type=CrossEntropyLoss, loss_weight=1.0)))

train_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=CropPersonBox),
    dict(type=Resize, scale=(crop_size[1], crop_size[0]), keep_ratio=False),
    dict(type=RandomFlip, prob=0.5, direction='horizontal'),
    dict(type=RandomCrop, crop_size=crop_size, padding=10),
    dict(type=PackInputs),
]
test_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=CropPersonBox),
    dict(type=Resize, scale=(crop_size[1], crop_size[0]), keep_ratio=False),
    dict(type=PackInputs),
]

# Every 5th labeled crop of an identity is held out to measure accuracy on
# unseen crops of the identities the teacher will embed.
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    dataset=dict(
        type=PersonCropDataset,
        dataset=person_search_train,
        subset='train',
        holdout_every=5,
        num_classes=num_classes,
        pipeline=train_pipeline))
# the held-out crops, in order, through the test pipeline
val_dataloader = dict(
    train_dataloader,
    batch_size=128,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(
        train_dataloader['dataset'],
        subset='val',
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type=Accuracy, topk=(1, 5))
test_evaluator = val_evaluator

# BoT-style schedule (Adam 3.5e-4, warm-up, two steps), shortened to 60 epochs.
train_cfg = dict(type=EpochBasedTrainLoop, max_epochs=60, val_interval=10)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
optim_wrapper = dict(
    type=OptimWrapper, optimizer=dict(type=Adam, lr=3.5e-4, weight_decay=5e-4))
param_scheduler = [
    dict(
        type=LinearLR,
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type=MultiStepLR,
        by_epoch=True,
        begin=0,
        end=60,
        milestones=[30, 50],
        gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=64)

default_hooks.update(  # noqa: F405
    logger=dict(type=LoggerHook, interval=50),
    checkpoint=dict(
        type=CheckpointHook,
        interval=10,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'))
log_processor.update(by_epoch=True)  # noqa: F405
