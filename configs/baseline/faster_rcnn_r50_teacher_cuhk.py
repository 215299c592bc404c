# Copyright (c) mmpsearch contributors. All rights reserved.
# Two-step person-search baseline on CUHK-SYSU (the comparison of Xiao et
# al., CVPR 2017, and PSDiff Table I): mmdet's Faster R-CNN R50-FPN (ImageNet
# init, one class) trained on the training scenes, then the frozen PSDiff
# ReID teacher (configs/teacher/teacher_r50_cuhk.py, ResNet-50 GAP, 2048-d)
# embeds the 256x128 crop of every detection. Schedule: mmdet's 1x (SGD
# 0.02, momentum 0.9, wd 1e-4, 12 epochs, linear warm-up 500 iterations,
# x0.1 at epochs 8 and 11) for a total batch of 16 (4 GPUs x 4 images; with
# another batch add --auto-scale-lr). Test: 1333x800, TestG100, score_thr 0.5.
#
#   python tools/train.py configs/teacher/teacher_r50_cuhk.py
#   tools/dist_train.sh configs/baseline/faster_rcnn_r50_teacher_cuhk.py 4
#   python tools/test.py configs/baseline/faster_rcnn_r50_teacher_cuhk.py \
#       work_dirs/faster_rcnn_r50_teacher_cuhk/epoch_12.pth
#
# The trained checkpoint holds the ReID weights too; to test it without the
# teacher's file add `--cfg-options model.reid.checkpoint=None`.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.cuhk_sysu import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.two_step_faster_rcnn_r50 import *  # noqa: F401,F403
    from .._base_.schedules.schedule_1x import *  # noqa: F401,F403
    from ..teacher.teacher_r50_cuhk import crop_size as reid_crop_size
    from ..teacher.teacher_r50_cuhk import model as reid_model

# The teacher's last checkpoint (60 epochs, configs/teacher/teacher_r50_cuhk)
reid_checkpoint = 'work_dirs/teacher_r50_cuhk/epoch_60.pth'
model['reid'] = dict(  # noqa: F405
    model=reid_model,
    checkpoint=reid_checkpoint,
    crop_size=reid_crop_size)

# mmdet's 1x schedule, validated once, at the end
train_cfg.update(val_interval=max_epochs)  # noqa: F405
log_processor.update(by_epoch=True)  # noqa: F405

# The protocol's threshold (the detector keeps >= 0.05, mmdet's default).
val_evaluator.update(dict(score_thr=0.5))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
