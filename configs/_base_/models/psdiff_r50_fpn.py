# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff (Jia et al.): ResNet-50 + FPN + one Collaborative Denoising Layer,
# reused at every sampling step (REFERENCE §1). ~37 M parameters with a
# 2048-d teacher (ResNet-50 + FPN 26.9 M, CDL ~9.8 M).
from mmcv.ops import RoIAlign
from mmdet.models.backbones import ResNet
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.necks import FPN

from mmpsearch.models.detectors import DiffusionPersonSearch
from mmpsearch.models.diffusion import DDIMSampler
from mmpsearch.models.heads import CDLHead, GatherRoIExtractor

# Shared by the model and the training pipeline's DualNoiseGenerator.
num_proposals = 300  # N_train = N_test
box_snr_scale = 2.0  # s1
embed_snr_scale = 3.0  # s2
num_timesteps = 1000  # T, cosine schedule
# Width of the ReID teacher's embeddings (configs/teacher: ResNet-50 GAP).
teacher_embed_dims = 2048

model = dict(
    type=DiffusionPersonSearch,
    data_preprocessor=dict(
        type=DetDataPreprocessor,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type=ResNet,
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet50')),
    neck=dict(
        type=FPN,
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=4),
    head=dict(
        type=CDLHead,
        num_classes=1,
        in_channels=256,
        embed_dims=teacher_embed_dims,
        roi_extractor=dict(
            type=GatherRoIExtractor,
            roi_layer=dict(
                type=RoIAlign, output_size=7, sampling_ratio=2,
                aligned=True),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        num_heads=8,
        feedforward_channels=2048,
        dynamic_conv=dict(feat_channels=64, param_rank=64, with_proj=True),
        num_cls_convs=1,
        num_reg_convs=3,
        dropout=0.0,
        with_sa=True,
        with_dc=True,
        with_ca=True,
        cascaded=True,
        prior_prob=0.01),
    diffusion=dict(
        num_timesteps=num_timesteps,
        beta_schedule='cosine',
        box_snr_scale=box_snr_scale,
        embed_snr_scale=embed_snr_scale),
    test_cfg=dict(
        num_proposals=num_proposals,
        sampling_steps=8,
        sampler=dict(type=DDIMSampler, eta=1.0),
        seed=0,
        score_thr=0.5,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100,
        box_renewal=True,
        renewal_thr=0.5,
        use_ensemble=True))
