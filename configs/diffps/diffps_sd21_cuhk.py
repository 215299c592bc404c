# Copyright (c) mmpsearch contributors. All rights reserved.
# DiffPS (Kim et al., ICCV 2025) with Stable Diffusion 2.1-base on CUHK-SYSU,
# paper settings (Kim et al., Sec. 4): every image resized to 1280x1280 (latent
# 160x160) as the public code does, horizontal flip only, OIM with a 5532-row
# lookup table and a 5000-entry queue, Adam 1e-4, 1-epoch warm-up, x0.1 at
# epochs 8 and 14, 30 epochs, grad clip 10 (AMP: tools/train.py --amp).
#
# Needs a local copy of stabilityai/stable-diffusion-2-1-base in the diffusers
# layout at checkpoints/stable-diffusion-2-1-base (never downloaded at run
# time), e.g. made once on a machine with internet by
#   python -c "from diffusers import StableDiffusionPipeline as P; \
#   P.from_pretrained('stabilityai/stable-diffusion-2-1-base')\
#   .save_pretrained('checkpoints/stable-diffusion-2-1-base')"
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.transforms import RandomFlip, Resize
from mmengine.config import read_base

from mmpsearch.datasets import (LoadPersonSearchAnnotations,
                                PackPersonSearchInputs)

with read_base():
    from .._base_.datasets.cuhk_sysu import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.diffps_sd21 import *  # noqa: F401,F403
    from .._base_.schedules.schedule_30e import *  # noqa: F401,F403

model.backbone.sd_path = 'checkpoints/stable-diffusion-2-1-base'
model.reid_roi_head.loss_reid.update(num_pids=5532, num_cq_size=5000)

# The public code resizes every image to a fixed 1280x1280.
diffps_scale = (1280, 1280)
train_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=Resize, scale=diffps_scale, keep_ratio=False),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PackPersonSearchInputs),
]
# boxes loaded after Resize stay in original pixels (query box, metric)
test_pipeline = [
    dict(type=LoadImageFromFile, backend_args=backend_args),
    dict(type=Resize, scale=diffps_scale, keep_ratio=False),
    dict(type=LoadPersonSearchAnnotations, with_bbox=True),
    dict(type=PackPersonSearchInputs),
]
train_dataloader.dataset.pipeline = train_pipeline
# the official batch: 5 images on one GPU (schedule_30e.py)
train_dataloader.batch_size = 5
# all images have one size: no aspect-ratio grouping needed
train_dataloader.batch_sampler = None
# the gallery and the query split
val_dataloader.dataset.datasets = [
    dict(d, pipeline=test_pipeline) for d in val_dataloader.dataset.datasets
]
test_dataloader = val_dataloader

# keep the best of the per-epoch evaluations, as the official loop does
default_hooks.checkpoint.update(
    interval=1, max_keep_ckpts=3, save_best='search/mAP', rule='greater')
