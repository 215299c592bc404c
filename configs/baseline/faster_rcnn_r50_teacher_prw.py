# Copyright (c) mmpsearch contributors. All rights reserved.
# Two-step person-search baseline on PRW: the recipe of
# faster_rcnn_r50_teacher_cuhk.py (Faster R-CNN R50-FPN, ImageNet init,
# mmdet's 1x schedule for a total batch of 16) on the PRW training frames,
# with the frozen PRW ReID teacher (configs/teacher/teacher_r50_prw.py) on
# the 256x128 crop of every detection. Test: all frames, score_thr 0.5.
#
#   python tools/train.py configs/teacher/teacher_r50_prw.py
#   tools/dist_train.sh configs/baseline/faster_rcnn_r50_teacher_prw.py 4
#   python tools/test.py configs/baseline/faster_rcnn_r50_teacher_prw.py \
#       work_dirs/faster_rcnn_r50_teacher_prw/epoch_12.pth
#
# The trained checkpoint holds the ReID weights too; to test it without the
# teacher's file add `--cfg-options model.reid.checkpoint=None`.
from mmengine.config import read_base

with read_base():
    from .faster_rcnn_r50_teacher_cuhk import *  # noqa: F401,F403
    # PRW's dataset variables replace CUHK-SYSU's
    from .._base_.datasets.prw import *  # noqa: F401,F403
    from ..teacher.teacher_r50_prw import model as reid_model

# The teacher's last checkpoint (60 epochs, configs/teacher/teacher_r50_prw);
# its crop size is the CUHK-SYSU teacher's (teacher_r50_prw.py keeps that
# recipe)
reid_checkpoint = 'work_dirs/teacher_r50_prw/epoch_60.pth'
model['reid']['model'] = reid_model  # noqa: F405
model['reid']['checkpoint'] = reid_checkpoint  # noqa: F405

# The protocol's threshold (the detector keeps >= 0.05, mmdet's default).
val_evaluator.update(dict(score_thr=0.5))  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405
