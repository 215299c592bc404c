# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_r50_cuhk.py scaled down to the synthetic CUHK-SYSU-layout scenes
# (320x240) and a 2-core CPU: the same model code, training recipe (the
# dynamic-k matcher, IoU-aware class targets, 3 CDL passes through 3 CDLs
# of separate weights, centred teacher targets;
# configs/_base_/models/psdiff_r50_fpn.py), gradient clip and test-time
# settings (8 DDIM steps of 3 passes, box renewal, step ensembling, score
# threshold 0.5, NMS 0.3). Only these differ:
# - backbone: a slim ResNet-18 (32 channels in the first stage),
#   initialised from the synthetic ReID teacher's backbone, the stand-in
#   for ImageNet weights; FPN and CDL of width 64, a 256-d teacher;
# - image size: the scenes' own 320x240;
# - proposals: N_train = N_test = 128 (about 3 persons per scene);
# - schedule: 4500 iterations of 4 images, AdamW 2e-4 (from a teacher
#   backbone, not fine-tuning ImageNet weights), warm-up 100, lr /10 at
#   3600 (~50 min on one core, ~38 min on 2 idle cores).
#
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk --num-images 800 --num-ids 200 --seed 0
#   python tools/train.py configs/teacher/teacher_synthetic.py \
#       --work-dir work_dirs/teacher_synthetic
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_synthetic.py \
#       $(cat work_dirs/teacher_synthetic/last_checkpoint) \
#       --out work_dirs/teacher_synthetic/teacher_embeddings.npz
#   python tools/train.py configs/psdiff/psdiff_r18_synthetic.py
# (`make demo` runs these, then tools/test.py at 1, 2, 4 and 8 steps.)
from mmdet.models.backbones import ResNet
from mmengine.config import read_base

from mmpsearch.models.weight_init import StrictPretrainedInit

with read_base():
    from .psdiff_r50_cuhk import *  # noqa: F401,F403
    # the dataset and the schedule after the recipe: their variables
    # replace CUHK-SYSU's and the 90k schedule's
    from .._base_.datasets.synthetic_cuhk import *  # noqa: F401,F403
    from .._base_.schedules.schedule_synthetic import *  # noqa: F401,F403

teacher_embeds = 'work_dirs/teacher_synthetic/teacher_embeddings.npz'
teacher_ckpt = 'work_dirs/teacher_synthetic/iter_150.pth'
# a 256-d teacher (configs/teacher/teacher_synthetic.py: 32 * 8) and
# N_train = N_test = 128
diffusion = dict(diffusion, embed_dims=256, num_proposals=128)  # noqa: F405
width = 32  # first-stage channels of the slim ResNet-18
channels = 64  # FPN / CDL width C

model['backbone'] = dict(  # noqa: F405
    type=ResNet,
    depth=18,
    base_channels=width,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=False,
    style='pytorch',
    # strict: a teacher of another width is an error, not a random start
    init_cfg=dict(
        type=StrictPretrainedInit, checkpoint=teacher_ckpt,
        prefix='backbone.'))
model['neck'].update(  # noqa: F405
    in_channels=[width, width * 2, width * 4, width * 8],
    out_channels=channels)
model['bbox_head']['diffusion'] = diffusion  # noqa: F405
model['bbox_head']['denoiser'].update(  # noqa: F405
    in_channels=channels,
    roi_extractor=dict(out_channels=channels),
    feedforward_channels=4 * channels,
    dynamic_conv=dict(feat_channels=16, param_rank=16, with_proj=True))

noise_generator = dict(  # noqa: F405
    noise_generator,
    teacher_embeds=teacher_embeds,
    diffusion=diffusion)
# the noise generator right before the packing
train_pipeline = [*train_transforms, noise_generator, pack_inputs]  # noqa
train_dataloader.update(  # noqa: F405
    dict(batch_size=4, dataset=dict(pipeline=train_pipeline)))

# one checkpoint, at the end of the schedule (schedule_synthetic.py)
default_hooks['checkpoint'].update(  # noqa: F405
    interval=max_iters, max_keep_ckpts=1)  # noqa: F405
