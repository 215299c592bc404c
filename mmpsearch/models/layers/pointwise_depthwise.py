# Copyright (c) mmpsearch contributors. All rights reserved.
"""The light 1x1 + depthwise 3x3 block both DiffPS branches use."""
from mmcv.cnn import ConvModule
from torch import nn


class PointwiseDepthwise(nn.Sequential):
    """1x1 conv + norm + ReLU, then a depthwise 3x3 conv + norm (+ act).

    DiffPS (Kim et al., ICCV 2025) aggregates the Stable Diffusion key
    feature with it (DGRPN, Sec. 3.4: no activation after the depthwise
    conv) and starts each MSFRN light block with it (Sec. 3.5). Written here
    because mmcv's ``DepthwiseSeparableConvModule`` runs the depthwise conv
    first.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Channels of both convolutions' outputs.
        norm_cfg (dict): Normalisation after each convolution.
        dw_relu (bool): A ReLU after the depthwise conv. Defaults to True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: dict,
                 dw_relu: bool = True) -> None:
        super().__init__(
            ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg),
            ConvModule(
                out_channels,
                out_channels,
                3,
                padding=1,
                groups=out_channels,
                norm_cfg=norm_cfg,
                act_cfg=dict(type='ReLU') if dw_relu else None))
