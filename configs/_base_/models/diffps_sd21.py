# Copyright (c) mmpsearch contributors. All rights reserved.
# DiffPS (Kim et al., ICCV 2025) on Stable Diffusion 2.1-base.
#
# frozen SD (VAE posterior sample + Euler noise sigma 0.029, one UNet pass at
#   t=0, as the official extractor; prompt "person")
#   -> K = T[3][0].attn1.to_k (320 ch, 1/8) + "person" map of T[3][0].attn2
#      -> DGRPN (1024 ch) -> RPN (stride 8, anchors 32-512 x 0.5/1/2)
#      -> RoIAlign 14x14 -> ResNet-50 stage 4 -> box predictor (BN regressor)
#   -> 7 ReID maps (1/32, 1/16, 1/8) -> MSFRN (1024 ch, 1/8)
#      -> RoIAlign 24x12 -> SFAN -> ResNet-50 stage 4
#      -> strip embeddings of the SFAN and stage-4 maps, 512-d each,
#         concatenated to 1024-d -> OIM
# Loss weights: RPN 1/1, box cls 1, box reg 10, ReID 2.
#
# Samplers, heads and RoIAlign follow the official code (github
# PerceptualAI-Lab/DiffPS, models/diffps.py); the remaining differences and
# their reasons are listed in docs/en/model_zoo.md ("DiffPS: differences
# from the official code"). The RPN and R-CNN settings are written as what
# they change in mmdet's Faster R-CNN (faster_rcnn_r50_fpn.py).
from mmdet.models.losses import SmoothL1Loss
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.models.task_modules.samplers import RandomSampler
from mmengine.config import read_base

from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.models.detectors.diffps import DiffPS
from mmpsearch.models.necks.msfrn import MSFRN
from mmpsearch.models.heads.sfan import SFAN
from mmpsearch.models.losses.oim import OIMLoss
from mmpsearch.models.necks.dgrpn import DGRPN
from mmpsearch.models.roi_heads import (BNRegBBoxHead, DiffPSRoIHead,
                                        ReIDRoIHead)
# mmdet's SingleRoIExtractor with fp32 RoIs under --amp (torchvision's
# roi_align, used by the official code, pools in fp32 under autocast)
from mmpsearch.models.roi_extractors import FP32SingleRoIExtractor

with read_base():
    from .faster_rcnn_r50_fpn import model as __faster_rcnn

# A local copy of stabilityai/stable-diffusion-2-1-base in the diffusers
# layout; it is never downloaded at run time.
sd_path = 'checkpoints/stable-diffusion-2-1-base'
# ImageNet ResNet-50 for the two stage-4 heads (torchvision's weights).
res5_init = dict(type='Pretrained', checkpoint='torchvision://resnet50')
# ResNet-50 stage 4 of the box head and of the ReID head
__res5 = dict(
    type=ResLayer,
    depth=50,
    stage=3,
    stride=2,
    norm_eval=False,
    init_cfg=res5_init)
# RoIs of the stride-8 map; torchvision's RoIAlign in the official code:
# aligned=False
__roi_extractor = dict(
    type=FP32SingleRoIExtractor,
    # by name, not the class: mmdet looks it up in mmcv.ops, and a class
    # would be saved in the work dir's config as 'mmcv.ops.RoIAlign'
    roi_layer=dict(
        type='RoIAlign', output_size=14, sampling_ratio=2, aligned=False),
    out_channels=1024,
    featmap_strides=[8])
# 128 RoIs at 50 %, no more negatives than positives when positives are
# few (the official keep_positive_fraction)
__sampler = dict(
    type=RandomSampler,
    num=128,
    pos_fraction=0.5,
    neg_pos_ub=1,
    add_gt_as_proposals=True)

model = dict(
    type=DiffPS,
    data_preprocessor=dict(
        __faster_rcnn.data_preprocessor,
        # SD's VAE takes RGB in [-1, 1]
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        # VAE /8 and three UNet downsamplings
        pad_size_divisor=64),
    backbone=dict(
        type=StableDiffusionBackbone,
        sd_path=sd_path,
        prompt='person',
        # the official input: its Euler scheduler's "timestep 1" is the
        # UNet's timestep 0, on a posterior sample plus noise (seeded in eval)
        timestep=0,
        latent='sample',
        add_noise=True,
        noise_scheduler='euler',
        noise_seed=0,
        det_layer='T[3][0].attn1.to_k',
        attn_map_layer='T[3][0].attn2',
        attn_map_head=1,
        attn_map_token=1,
        frozen_dtype='auto',  # fp16 on CUDA, fp32 on the CPU
        reid_layers=(
            ('T[1][2].attn1.to_q', ),
            ('T[2][1].attn1.to_v', 'T[2][2].attn1.to_q'),
            ('T[3][0].attn1.to_q', 'T[3][0].attn1.to_k', 'T[3][0].attn1.to_v',
             'T[3][1].attn1.to_k'),
        ),
        part_prompts=('head', 'shirts', 'pants', 'shoes')),
    neck=dict(
        type=DGRPN,
        in_channels=320,
        out_channels=1024,
        tau=0.7,
        peak_kernel=7,
        max_peaks=50,
        spread_kernel=9,
        delta=5.0,
        beta_init=1.0,
        gamma_init=0.0),
    rpn_head=dict(
        __faster_rcnn.rpn_head,
        in_channels=1024,
        feat_channels=1024,
        anchor_generator=dict(
            type=AnchorGenerator,
            strides=[8],
            # base 8 x (4 .. 64) = 32 .. 512 pixels
            scales=[4, 8, 16, 32, 64],
            ratios=[0.5, 1.0, 2.0]),
        loss_bbox=dict(type=SmoothL1Loss, beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(
        type=DiffPSRoIHead,
        shared_head=__res5,
        bbox_roi_extractor=__roi_extractor,
        # Linear(2048, 4, bias=False) + BatchNorm1d(4) regressor; classifier
        # and regressor Xavier-initialised (the official CUHK-SYSU init)
        bbox_head=dict(
            type=BNRegBBoxHead,
            with_avg_pool=True,
            roi_feat_size=7,
            in_channels=2048,
            num_classes=1,
            bbox_coder=__faster_rcnn.roi_head.bbox_head.bbox_coder,
            reg_class_agnostic=True,
            loss_cls=__faster_rcnn.roi_head.bbox_head.loss_cls,
            loss_bbox=dict(type=SmoothL1Loss, beta=1.0, loss_weight=10.0),
            init_cfg=dict(
                type='Xavier',
                distribution='uniform',
                bias=0.0,
                override=[dict(name='fc_cls'),
                          dict(name='fc_reg')]))),
    reid_neck=dict(
        type=MSFRN,
        in_channels=((1280, ), (640, 640), (320, 320, 320, 320)),
        channels=1024,
        out_channels=1024),
    # the ReID branch on the MSFRN map: RoIs -> SFAN embeddings -> OIM
    reid_roi_head=dict(
        type=ReIDRoIHead,
        roi_extractor=dict(
            __roi_extractor,
            roi_layer=dict(__roi_extractor['roi_layer'],
                           output_size=(24, 12))),
        embed_head=dict(
            type=SFAN,
            in_channels=1024,
            text_channels=1024,
            num_parts=4,
            res_layer=__res5,
            embed_dim=1024,
            granularities=(1, 2, 3),
            embed_from=('sfan', 'stage4'),
            drop_path=0.1,
            strip_attention=True),
        # sizes of the lookup table / queue are set per dataset
        loss_reid=dict(
            type=OIMLoss,
            num_features=1024,
            num_pids=5532,
            num_cq_size=5000,
            momentum=0.5,
            scale=30.0,
            loss_weight=2.0),
        # ReID RoIs: the regressed boxes and the RPN proposals (plus the
        # ground truth), person at IoU >= 0.7, background below 0.3,
        # 128 per image at 50 %; backgrounds go through the ReID head too
        train_cfg=dict(
            proposals=('regressed', 'rpn'),
            embed_negatives=True,
            assigner=dict(
                __faster_rcnn.train_cfg.rpn.assigner,
                min_pos_iou=0.7,
                match_low_quality=False),
            sampler=__sampler)),
    train_cfg=dict(
        __faster_rcnn.train_cfg,
        rpn_proposal=dict(
            __faster_rcnn.train_cfg.rpn_proposal,
            nms_pre=12000,
            max_per_img=2000),
        rcnn=dict(__faster_rcnn.train_cfg.rcnn, sampler=__sampler)),
    test_cfg=dict(
        rpn=dict(__faster_rcnn.test_cfg.rpn, nms_pre=6000, max_per_img=300),
        rcnn=dict(
            score_thr=0.5,
            nms=dict(type='nms', iou_threshold=0.4),
            max_per_img=300)))
