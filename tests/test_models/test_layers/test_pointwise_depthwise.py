# Copyright (c) mmpsearch contributors. All rights reserved.
import torch
from torch import nn

from mmpsearch.models.layers import PointwiseDepthwise
from mmpsearch.models.necks import DGRPN
from mmpsearch.models.necks.msfrn import LightBlock

BN = dict(type='BN')


def test_pointwise_then_depthwise():
    block = PointwiseDepthwise(3, 8, BN)
    pw, dw = block
    assert pw.conv.kernel_size == (1, 1) and pw.conv.groups == 1
    assert dw.conv.kernel_size == (3, 3) and dw.conv.groups == 8
    assert isinstance(dw.activate, nn.ReLU)
    assert block(torch.randn(2, 3, 5, 6)).shape == (2, 8, 5, 6)


def test_no_relu_after_the_depthwise_conv():
    block = PointwiseDepthwise(3, 8, BN, dw_relu=False).eval()
    assert not block[1].with_activation
    # without the ReLU the output takes negative values
    assert (block(torch.randn(2, 3, 5, 6)) < 0).any()


def test_users_keep_their_parameter_names():
    # checkpoints of DGRPN and MSFRN name the layers by position
    assert not DGRPN(
        in_channels=4, out_channels=8).aggregate[1].with_activation
    keys = set(LightBlock(4, 8, BN).state_dict())
    assert {'0.conv.weight', '1.conv.weight', '2.conv.weight',
            '2.bn.weight'} <= keys
    assert not LightBlock(4, 8, BN)[2].with_activation
