# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff's denoiser on DiffPS's features, CUHK-SYSU: a combination neither
# paper has, so no paper reports a number for it (and none is measured here).
#
# frozen SD 2.1-base (VAE posterior sample + noise, one UNet pass at t=0,
# prompt "person";
# DiffPS, Kim et al. Sec. 3)
#   -> SDFeaturePyramid: K = T[3][0].attn1.to_k enhanced by DGRPN with the
#      "person" map (eq. 1-4) at 1/8, the DiffPS ReID maps of 1/16
#      (T[2][1].attn1.to_v, T[2][2].attn1.to_q) and 1/32 (T[1][2].attn1.to_q),
#      each 1x1 -> 256, plus a max-pooled 1/64 level
#   -> one Collaborative Denoising Layer reused at every step (PSDiff,
#      Jia et al. eq. 12), RoIAlign 7x7 on strides 8-64.
# Only the pyramid and the CDL train; SD gets no gradient and no optimizer
# state. Everything else is psdiff_r50_cuhk.py: 1333x800, the teacher's
# embeddings with the DualNoiseGenerator (N = 300, s1 = 2, s2 = 3), AdamW
# 2.5e-5, 90k iterations, 8 DDIM steps, and its training recipe (dynamic-k
# matching, IoU-aware class targets, 3 CDL passes per image, centred
# teacher targets; configs/_base_/models/psdiff_r50_fpn.py).
#
# Needs a local copy of stabilityai/stable-diffusion-2-1-base in the diffusers
# layout at checkpoints/stable-diffusion-2-1-base (see diffps_sd21_cuhk.py)
# and the teacher embeddings of psdiff_r50_cuhk.py.
from mmengine.config import read_base

from mmpsearch.models.necks import SDFeaturePyramid

with read_base():
    from .._base_.models.diffps_sd21 import model as diffps_model
    from .psdiff_r50_cuhk import *  # noqa: F401,F403

# DiffPS's [-1, 1] input padded to 64, and its frozen SD backbone; only the
# ReID levels the pyramid reads are hooked (the UNet stops after T[3][0]).
model['data_preprocessor'] = diffps_model['data_preprocessor']  # noqa: F405
model['backbone'] = diffps_model['backbone']  # noqa: F405
model['backbone'].update(  # noqa: F405
    sd_path='checkpoints/stable-diffusion-2-1-base',
    reid_layers=(
        ('T[1][2].attn1.to_q', ),
        ('T[2][1].attn1.to_v', 'T[2][2].attn1.to_q'),
    ),
    part_prompts=())  # SFAN's body-part words: not used by the CDL
model['neck'] = dict(  # noqa: F405
    type=SDFeaturePyramid,
    dgrpn=diffps_model['neck'],  # DiffPS's DGRPN, its paper settings
    reid_in_channels=((1280, ), (640, 640)),
    reid_strides=(32, 16),
    out_channels=256,
    extra_level='maxpool')
del diffps_model  # keep the DiffPS model out of this config
# the pyramid's strides, finest first (the R50 FPN's were 4-32)
model['bbox_head']['denoiser']['roi_extractor']['featmap_strides'] = [
    8, 16, 32, 64
]  # noqa: F405
