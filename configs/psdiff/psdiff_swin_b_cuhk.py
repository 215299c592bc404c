# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff, Swin-B + FPN, CUHK-SYSU (Jia et al., Table I: 95.7 mAP at 8 steps).
# Same recipe as psdiff_r50_cuhk.py with an ImageNet-22k Swin-B backbone
# (mmdet's SwinTransformer; the checkpoint is converted from the official
# release on load). Without network access, download the checkpoint
# elsewhere and point `swin_b_checkpoint` at the local file.
from mmdet.models.backbones import SwinTransformer
from mmengine.config import read_base

with read_base():
    from .psdiff_r50_cuhk import *  # noqa: F401,F403

swin_b_checkpoint = ('https://github.com/SwinTransformer/storage/releases/'
                     'download/v1.0.0/swin_base_patch4_window7_224_22k.pth')

model['backbone'] = dict(  # noqa: F405
    type=SwinTransformer,
    embed_dims=128,
    depths=[2, 2, 18, 2],
    num_heads=[4, 8, 16, 32],
    window_size=7,
    mlp_ratio=4,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.3,
    patch_norm=True,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint=swin_b_checkpoint))
model['neck']['in_channels'] = [128, 256, 512, 1024]  # noqa: F405

# No weight decay on norms and position tables (mmdet's Swin recipe).
optim_wrapper.update(  # noqa: F405
    dict(
        paramwise_cfg=dict(
            custom_keys={
                'absolute_pos_embed': dict(decay_mult=0.),
                'relative_position_bias_table': dict(decay_mult=0.),
                'norm': dict(decay_mult=0.)
            })))
