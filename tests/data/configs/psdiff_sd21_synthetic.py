# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_sd21_cuhk.py (PSDiff's CDL denoiser on DiffPS's Stable Diffusion
# features, DGRPN-enhanced; a combination no paper reports) on the synthetic
# CUHK-SYSU-layout scenes, with the tiny random Stable Diffusion of SD 2.1's
# block structure: the recipe of psdiff_r18_synthetic.py (CDL of width 64,
# 128 proposals, 3 training passes, 4 images a batch, 4500 iterations, 8
# DDIM steps) on a CPU.
# It checks the plumbing; the numbers mean nothing (random SD weights).
#
#   python tools/misc/make_tiny_sd.py work_dirs/tiny_sd
#   (then the synthetic scenes and the teacher embeddings as in
#   psdiff_r18_synthetic.py)
#   python tools/train.py tests/data/configs/psdiff_sd21_synthetic.py
from mmengine.config import read_base

from mmpsearch.models.necks import DGRPN, SDFeaturePyramid

with read_base():
    from ....configs._base_.models.diffps_sd21 import model as diffps_model
    from ....configs.psdiff.psdiff_r18_synthetic import *  # noqa: F401,F403

model['data_preprocessor'] = diffps_model['data_preprocessor']  # noqa: F405
model['backbone'] = diffps_model['backbone']  # noqa: F405
model['backbone'].update(  # noqa: F405
    sd_path='work_dirs/tiny_sd',
    reid_layers=(
        ('T[1][2].attn1.to_q', ),
        ('T[2][1].attn1.to_v', 'T[2][2].attn1.to_q'),
    ),
    part_prompts=())
del diffps_model

# Widths of the tiny SD (mmpsearch.testing.tiny_sd): up levels
# T[1] 64, T[2] 48, T[3] 32 channels.
model['neck'] = dict(  # noqa: F405
    type=SDFeaturePyramid,
    dgrpn=dict(type=DGRPN, in_channels=32, out_channels=channels),  # noqa
    reid_in_channels=((64, ), (48, 48)),
    reid_strides=(32, 16),
    out_channels=channels,  # noqa: F405
    extra_level='maxpool')
model['bbox_head']['denoiser']['roi_extractor']['featmap_strides'] = [
    8, 16, 32, 64
]  # noqa: F405
