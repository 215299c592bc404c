# Copyright (c) mmpsearch contributors. All rights reserved.
# DiffPS on the synthetic CUHK-SYSU-layout scenes with a tiny, randomly
# initialised Stable Diffusion of SD 2.1's block structure: the whole
# pipeline (frozen SD hooks, DGRPN, RPN + RoI head, MSFRN, SFAN, OIM, search
# evaluation) runs on a CPU in minutes. It checks the plumbing; the numbers
# mean nothing (random SD weights), so it lives with the test data, not in
# configs/.
#
#   python tools/misc/make_tiny_sd.py work_dirs/tiny_sd
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk
#   python tools/train.py tests/data/configs/diffps_sd21_synthetic.py
from mmengine.config import read_base
from mmengine.optim.scheduler import LinearLR
from mmengine.runner.loops import IterBasedTrainLoop

with read_base():
    from ....configs._base_.datasets.synthetic_cuhk import *  # noqa: F401,F403
    from ....configs._base_.default_runtime import *  # noqa: F401,F403
    from ....configs._base_.models.diffps_sd21 import *  # noqa: F401,F403
    from ....configs._base_.schedules.schedule_30e import *  # noqa: F401,F403

# Widths of the tiny SD (mmpsearch.testing.tiny_sd): up levels
# T[1] 64, T[2] 48, T[3] 32 channels; text width 32.
det_width = 64
reid_width = 64
# OIM's logits are 30 x cosine: with few dimensions, unrelated embeddings
# have large cosines and the loss starts very high; 128 keeps it moderate
embed_dim = 128
# make_synthetic.py's defaults (800 scenes, 200 identities): 100 of them
# label the training scenes
num_train_ids = 100

model.backbone.sd_path = 'work_dirs/tiny_sd'
model.neck.update(in_channels=32, out_channels=det_width)
model.rpn_head.update(in_channels=det_width, feat_channels=det_width)
# a ResNet-18 stage 2 from scratch instead of an ImageNet ResNet-50 stage 4
small_res_layer = dict(depth=18, stage=1, stride=2, init_cfg=None)
model.roi_head.update(
    shared_head=small_res_layer,
    bbox_roi_extractor=dict(out_channels=det_width),
    bbox_head=dict(in_channels=128))
model.reid_neck.update(
    in_channels=((64, ), (48, 48), (32, 32, 32, 32)),
    channels=reid_width,
    out_channels=reid_width)
model.reid_roi_head.update(
    roi_extractor=dict(out_channels=reid_width),
    embed_head=dict(
        in_channels=reid_width,
        text_channels=32,
        res_layer=small_res_layer,
        embed_dim=embed_dim),
    loss_reid=dict(
        num_features=embed_dim, num_pids=num_train_ids, num_cq_size=50))
model.train_cfg.rpn.sampler.update(num=64)
model.train_cfg.rpn_proposal.update(nms_pre=1000, max_per_img=200)
model.train_cfg.rcnn.sampler.update(num=64)
model.reid_roi_head.train_cfg.sampler.update(num=32)
model.test_cfg.rpn.update(nms_pre=1000, max_per_img=100)
model.test_cfg.rcnn.update(max_per_img=50)

train_dataloader.update(batch_size=2)

# DiffPS's optimiser (schedule_30e.py: Adam, gradient clip 10) at lr 1e-3,
# by iterations: 400, warm-up 20, lr /10 at 300
max_iters = 400
train_cfg = dict(
    type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
lr_warmup = dict(
    type=LinearLR, start_factor=0.1, by_epoch=False, begin=0, end=20)
lr_decay = dict(  # noqa: F405
    lr_decay, end=max_iters, by_epoch=False, milestones=[300])
param_scheduler = [lr_warmup, lr_decay]
optim_wrapper['optimizer'].update(lr=1e-3)  # noqa: F405

log_processor.update(by_epoch=False)
default_hooks.logger.update(interval=10)
default_hooks.checkpoint.update(by_epoch=False, interval=max_iters)
