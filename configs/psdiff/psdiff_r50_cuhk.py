# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff, ResNet-50 + FPN, CUHK-SYSU (Jia et al., Table I: 95.1 mAP at 8
# steps). Paper settings (Sec. IV-A): AdamW 2.5e-5, wd 1e-4, 90k
# iterations, lr /10 at 70k and 84k, batch 32 (here 8 per GPU x 4 GPUs),
# 1333x800, N_train = N_test = 300, s1 = 2, s2 = 3, 8 DDIM steps (eta = 1).
# The training recipe is the one shown to learn on the synthetic benchmark
# (psdiff_r18_synthetic.py is this file scaled down); its four departures
# from the paper are named in configs/_base_/models/psdiff_r50_fpn.py, and
# psdiff_r50_cuhk_paper.py is the paper's recipe exactly.
#
# Needs the ReID teacher's embeddings of the training boxes first:
#   python tools/train.py configs/teacher/teacher_r50_cuhk.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_r50_cuhk.py \
#       work_dirs/teacher_r50_cuhk/epoch_60.pth \
#       --out data/CUHK-SYSU/teacher_r50_train.npz
# Other step counts / samplers at test time, e.g.
#   --cfg-options model.test_cfg.sampling_steps=4 \
#       model.test_cfg.sampler=dpm-solver++ model.test_cfg.box_renewal=False
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook

from mmpsearch.datasets.transforms import DualNoiseGenerator

with read_base():
    from .._base_.datasets.cuhk_sysu import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.psdiff_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.schedule_90k import *  # noqa: F401,F403

# The file written by tools/extract_teacher_embeddings.py (see above).
teacher_embeds = 'data/CUHK-SYSU/teacher_r50_train.npz'

# The dataset's training pipeline with the dual noise generator (eq. 10)
# after the geometric transforms, before PackPersonSearchInputs; it gets the
# model's diffusion settings.
noise_generator = dict(
    type=DualNoiseGenerator,
    teacher_embeds=teacher_embeds,
    diffusion=diffusion,  # noqa: F405
    center_teacher=center_teacher)  # noqa: F405
# the noise generator right before the packing
train_pipeline = [*train_transforms, noise_generator, pack_inputs]  # noqa
train_dataloader.update(  # noqa: F405
    dict(batch_size=8, dataset=dict(pipeline=train_pipeline)))

default_hooks.update(  # noqa: F405
    dict(
        checkpoint=dict(
            type=CheckpointHook,
            by_epoch=False,
            interval=10000,
            max_keep_ckpts=3)))
auto_scale_lr = dict(enable=False, base_batch_size=32)
