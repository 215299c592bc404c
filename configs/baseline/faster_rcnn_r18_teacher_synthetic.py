# Copyright (c) mmpsearch contributors. All rights reserved.
# Two-step person-search baseline on the synthetic CUHK-SYSU-layout scenes
# (320x240): mmdet's Faster R-CNN (RPN + StandardRoIHead + Shared2FC box
# head, one class) finds the persons, then the frozen synthetic ReID teacher
# (configs/teacher/teacher_synthetic.py) embeds the crop of every detection,
# exactly as tools/extract_teacher_embeddings.py embeds a box. The detector
# has PSDiff-synthetic's slim backbone and init (configs/psdiff/
# psdiff_r18_synthetic.py: ResNet-18 with 32 channels in the first stage,
# strictly initialised from the teacher's backbone; FPN 64), so the two are
# compared on the same features. Only the detector trains: batch 4, 1500
# iterations, AdamW 2e-4 and wd 1e-4 as PSDiff-synthetic (gradient clip
# 35, the value these measurements were made with; linear warm-up 100
# iterations, x0.1 at 1200). Scored by PersonSearchMetric with the
# protocol's score_thr 0.5. The ReID sees crops of the network input
# (TwoStepPersonSearch), which here is the scene at its own size.
#
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk
#   python tools/train.py configs/teacher/teacher_synthetic.py \
#       --work-dir work_dirs/teacher_synthetic
#   python tools/train.py configs/baseline/faster_rcnn_r18_teacher_synthetic.py
#   python tools/test.py \
#       configs/baseline/faster_rcnn_r18_teacher_synthetic.py \
#       work_dirs/faster_rcnn_r18_teacher_synthetic/iter_1500.pth
#
# The trained checkpoint holds the ReID weights too; to test it without the
# teacher's file add `--cfg-options model.reid.checkpoint=None`.
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim.optimizer import OptimWrapper
from mmengine.optim.scheduler import LinearLR, MultiStepLR
from mmengine.runner.loops import IterBasedTrainLoop, TestLoop, ValLoop
from torch.optim import AdamW

with read_base():
    from .._base_.datasets.synthetic_cuhk import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.two_step_faster_rcnn_r50 import *  # noqa: F401,F403
    from ..teacher.teacher_synthetic import crop_size as reid_crop_size
    from ..teacher.teacher_synthetic import model as reid_model
    from ..psdiff.psdiff_r18_synthetic import model as psdiff_model

# The teacher's last checkpoint ($(cat work_dirs/teacher_synthetic/
# last_checkpoint)): the ReID model and the detector backbone's init.
teacher_ckpt = 'work_dirs/teacher_synthetic/iter_150.pth'
width = 32  # first-stage channels of the slim ResNet-18 (as the teacher)
channels = 64  # FPN width
max_iters = 1500

# PSDiff-synthetic's slim ResNet-18, initialised strictly from the teacher
model['detector']['backbone'] = psdiff_model['backbone']  # noqa: F405
model['detector']['backbone']['init_cfg']['checkpoint'] = teacher_ckpt
del psdiff_model
model['detector']['neck'].update(  # noqa: F405
    in_channels=[width, width * 2, width * 4, width * 8],
    out_channels=channels)
model['detector']['rpn_head'].update(  # noqa: F405
    in_channels=channels, feat_channels=channels)
model['detector']['roi_head']['bbox_roi_extractor'].update(  # noqa: F405
    out_channels=channels)
model['detector']['roi_head']['bbox_head'].update(  # noqa: F405
    in_channels=channels)
model['reid'] = dict(  # noqa: F405
    model=reid_model,
    checkpoint=teacher_ckpt,
    crop_size=reid_crop_size)

train_dataloader.update(dict(batch_size=4))  # noqa: F405

train_cfg = dict(
    type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type=MultiStepLR,
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[1200],
        gamma=0.1)
]
optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=AdamW, lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks.update(  # noqa: F405
    dict(
        checkpoint=dict(
            type=CheckpointHook,
            by_epoch=False,
            interval=max_iters,
            max_keep_ckpts=1),
        logger=dict(type=LoggerHook, interval=50)))

# The protocol's threshold (the detector keeps >= 0.05, mmdet's default).
val_evaluator.update(dict(score_thr=0.5))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
