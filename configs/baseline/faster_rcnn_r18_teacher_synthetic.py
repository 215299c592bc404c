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

with read_base():
    from .._base_.datasets.synthetic_cuhk import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.two_step_faster_rcnn_r50 import *  # noqa: F401,F403
    from .._base_.schedules.schedule_synthetic import *  # noqa: F401,F403
    from ..teacher.teacher_synthetic import crop_size as reid_crop_size
    from ..teacher.teacher_synthetic import model as reid_model
    from ..psdiff.psdiff_r18_synthetic import model as psdiff_model
    # PSDiff-synthetic's checkpointing: once, at the end
    from ..psdiff.psdiff_r18_synthetic import default_hooks

# The teacher's last checkpoint ($(cat work_dirs/teacher_synthetic/
# last_checkpoint)): the ReID model and the detector backbone's init.
teacher_ckpt = 'work_dirs/teacher_synthetic/iter_150.pth'
width = 32  # first-stage channels of the slim ResNet-18 (as the teacher)
channels = 64  # FPN width

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

# PSDiff-synthetic's schedule (schedule_synthetic.py), shortened to 1500
# iterations (x0.1 at 1200, 80 % as there), with its own gradient clip and
# batch
max_iters = 1500
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
lr_decay = dict(lr_decay, end=max_iters, milestones=[1200])  # noqa: F405
param_scheduler = [lr_warmup, lr_decay]  # noqa: F405
optim_wrapper['clip_grad'].update(max_norm=35)  # noqa: F405
auto_scale_lr.update(base_batch_size=4)  # noqa: F405
default_hooks['checkpoint'].update(interval=max_iters)

# The protocol's threshold (the detector keeps >= 0.05, mmdet's default).
val_evaluator.update(dict(score_thr=0.5))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
