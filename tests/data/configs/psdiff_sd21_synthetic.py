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

from mmpsearch.models.necks import DGRPN

with read_base():
    from ....configs.psdiff.psdiff_r18_synthetic import *  # noqa: F401,F403
    from ....configs.psdiff.psdiff_sd21_cuhk import model as __sd21_model

# psdiff_sd21_cuhk.py's input, frozen SD backbone (the tiny one here) and
# feature pyramid, at the widths of the tiny SD (mmpsearch.testing.tiny_sd:
# up levels T[1] 64, T[2] 48, T[3] 32 channels) and of this recipe
model['data_preprocessor'] = __sd21_model['data_preprocessor']  # noqa: F405
model['backbone'] = dict(  # noqa: F405
    __sd21_model['backbone'], sd_path='work_dirs/tiny_sd')
model['neck'] = dict(  # noqa: F405
    __sd21_model['neck'],
    dgrpn=dict(type=DGRPN, in_channels=32, out_channels=channels),  # noqa
    reid_in_channels=((64, ), (48, 48)),
    out_channels=channels)  # noqa: F405
# the pyramid's strides
model['bbox_head']['denoiser']['roi_extractor'].update(  # noqa: F405
    featmap_strides=__sd21_model['bbox_head']['denoiser']['roi_extractor']
    ['featmap_strides'])
