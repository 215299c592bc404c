# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff, ResNet-50 + FPN, PRW (Jia et al., Table II: 53.5 mAP at 8
# steps): psdiff_r50_cuhk.py (the same paper settings, the same recipe and
# its departures) on PRW; only the dataset and the teacher file differ.
# psdiff_r50_prw_paper.py is the paper's recipe exactly.
#
# Needs the ReID teacher's embeddings of the training boxes first:
#   python tools/train.py configs/teacher/teacher_r50_prw.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_r50_prw.py \
#       work_dirs/teacher_r50_prw/epoch_60.pth \
#       --out data/PRW/teacher_r50_train.npz
from mmengine.config import read_base

with read_base():
    from .psdiff_r50_cuhk import *  # noqa: F401,F403
    # the dataset after the leaf: its variables replace CUHK-SYSU's
    from .._base_.datasets.prw import *  # noqa: F401,F403

# The file written by tools/extract_teacher_embeddings.py (see above).
teacher_embeds = 'data/PRW/teacher_r50_train.npz'
noise_generator = dict(noise_generator, teacher_embeds=teacher_embeds)  # noqa
# the noise generator right before the packing
train_pipeline = [*train_transforms, noise_generator, pack_inputs]  # noqa
train_dataloader.update(  # noqa: F405
    dict(batch_size=8, dataset=dict(pipeline=train_pipeline)))
