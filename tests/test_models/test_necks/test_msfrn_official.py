# Copyright (c) mmpsearch contributors. All rights reserved.
"""MSFRN against the official DiffPS structure (``Frq_AggregationNetwork``,
``FRM``, ``SRB``, ``LPM`` in ``models/aggregation_network.py`` of
github.com/PerceptualAI-Lab/DiffPS), and the earlier variant through the
options."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmpsearch.models.necks.msfrn import (MSFRN, ChannelGate,
                                          FrequencyRefinementModule)

SMALL = dict(
    in_channels=((16, ), (12, 12), (8, 8, 8, 8)), channels=16, out_channels=24)
# today's behaviour before the official structure became the default
OLD = dict(
    channel_gate='se', fuse_single_map=True, fuse_bias=True, out_bias=True)


def _feats(batch=2):
    return [[torch.randn(batch, 16, 4, 6)],
            [torch.randn(batch, 12, 8, 12) for _ in range(2)],
            [torch.randn(batch, 8, 16, 24) for _ in range(4)]]


def _convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_default_levels_follow_the_official_network():
    msfrn = MSFRN(**SMALL)
    # official: LPM (3 convs) per level; conv_level2 / conv_level3 after the
    # concat of the 2 / 4 maps; nothing after the single level-1 map
    assert [len(_convs(block)) for block in msfrn.light] == [3, 3, 3]
    assert [len(_convs(fuse)) for fuse in msfrn.fuse] == [0, 1, 1]
    assert isinstance(msfrn.fuse[0], nn.Identity)
    assert [tuple(f.weight.shape) for f in msfrn.fuse[1:]] == [(16, 32, 1, 1),
                                                               (16, 64, 1, 1)]
    # official: every conv of the network is bias=False except the SRB
    # channel attention
    gates = [m for m in msfrn.modules() if isinstance(m, ChannelGate)]
    assert len(gates) == 6  # 2 FRMs x (LH, HL, HH)
    gate_convs = {id(c) for g in gates for c in _convs(g)}
    for conv in _convs(msfrn):
        assert (conv.bias is not None) == (id(conv) in gate_convs)
    assert msfrn.out_conv.bias is None
    assert len(_convs(msfrn)) == 9 + 2 + 2 * 3 * 3 + 1


def test_default_gate_is_one_biased_conv_then_sigmoid():
    frm = FrequencyRefinementModule(16)
    for block in frm.refine:
        dw, pw, gate = block
        assert dw.groups == 16 and dw.bias is None
        assert pw.conv.bias is None and isinstance(pw.norm, nn.BatchNorm2d)
        assert isinstance(gate, ChannelGate)
        assert [type(m) for m in gate.fc] == [nn.Conv2d, nn.Sigmoid]
        conv = gate.fc[0]
        assert tuple(conv.weight.shape) == (16, 16, 1, 1)
        assert tuple(conv.bias.shape) == (16, )
    gate = frm.refine[0][2]
    x = torch.randn(2, 16, 5, 3)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    expected = x * torch.sigmoid(
        F.conv2d(pooled, gate.fc[0].weight, gate.fc[0].bias))
    torch.testing.assert_close(gate(x), expected)


def test_default_frm_forward_matches_the_official_order():
    torch.manual_seed(0)
    frm = FrequencyRefinementModule(8)
    with torch.no_grad():
        frm.scales.copy_(torch.tensor([0.5, -1.0, 2.0]))
        for block in frm.refine:  # non-trivial BN statistics
            block[1].norm.running_mean.uniform_(-1, 1)
            block[1].norm.running_var.uniform_(0.5, 2)
    frm.eval()
    x = torch.randn(2, 8, 6, 10)

    def srb(block, band):  # SRB.forward: relu(bn(pw(dw(x)))) * attention
        dw, pw, gate = block
        out = F.conv2d(band, dw.weight, padding=1, groups=8)
        out = F.conv2d(out, pw.conv.weight)
        bn = pw.norm
        out = F.batch_norm(out, bn.running_mean, bn.running_var, bn.weight,
                           bn.bias, False, 0.0, bn.eps).relu()
        att = torch.sigmoid(
            F.conv2d(
                out.mean((2, 3), keepdim=True), gate.fc[0].weight,
                gate.fc[0].bias))
        return out * att

    ll, *highs = frm.dwt(x)
    highs = [g * srb(b, h) for g, b, h in zip(frm.scales, frm.refine, highs)]
    expected = frm.idwt(ll, *highs) + x
    with torch.no_grad():
        torch.testing.assert_close(frm(x), expected, atol=1e-5, rtol=1e-5)


def test_default_forward_has_no_fuse_on_the_single_map_level():
    torch.manual_seed(0)
    msfrn = MSFRN(**SMALL).eval()
    feats = _feats()
    with torch.no_grad():
        y = msfrn.light[0](feats[0][0])  # official: level1_out, no conv
        cur = msfrn.fuse[1](
            torch.cat([msfrn.light[1](m) for m in feats[1]], 1))
        y = F.interpolate(y, size=(8, 12), mode='bilinear') + cur
        y = msfrn.frm[0](msfrn.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        cur = msfrn.fuse[2](
            torch.cat([msfrn.light[2](m) for m in feats[2]], 1))
        y = msfrn.frm[1](
            F.interpolate(y, size=(16, 24), mode='bilinear') + cur)
        torch.testing.assert_close(msfrn(feats), msfrn.out_conv(y))


def test_old_structure_is_reachable_through_the_options():
    msfrn = MSFRN(**SMALL, **OLD)
    assert [len(_convs(fuse)) for fuse in msfrn.fuse] == [1, 1, 1]
    assert tuple(msfrn.fuse[0].weight.shape) == (16, 16, 1, 1)
    assert all(fuse.bias is not None for fuse in msfrn.fuse)
    assert msfrn.out_conv.bias is not None
    for frm in msfrn.frm:
        for block in frm.refine:
            gate = block[2]
            assert [type(m) for m in gate.fc
                    ] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.Sigmoid]
            # reduction 16, at least 4 hidden channels
            assert tuple(gate.fc[0].weight.shape) == (4, 16, 1, 1)
            assert tuple(gate.fc[2].weight.shape) == (16, 4, 1, 1)
    wide = FrequencyRefinementModule(128, channel_gate='se')
    assert tuple(wide.refine[0][2].fc[0].weight.shape) == (8, 128, 1, 1)
    # the options toggle independently
    assert MSFRN(**SMALL, fuse_bias=True).out_conv.bias is None
    assert MSFRN(**SMALL, out_bias=True).fuse[1].bias is None


@pytest.mark.parametrize('options', [{}, OLD], ids=['official', 'old'])
def test_output_shape_is_unchanged(options):
    msfrn = MSFRN(**SMALL, **options)
    out = msfrn(_feats())
    assert out.shape == (2, 24, 16, 24)
    out.sum().backward()
    assert msfrn.frm[1].refine[2][2].fc[0].weight.grad is not None


def test_bad_options_name_the_argument():
    with pytest.raises(
            ValueError,
            match=r"channel_gate must be one of "
            r"\('conv', 'se'\), got 'eca'"):
        MSFRN(**SMALL, channel_gate='eca')
    with pytest.raises(
            ValueError, match='gate_reduction must be a positive '
            'int, got 0'):
        FrequencyRefinementModule(8, channel_gate='se', gate_reduction=0)
    with pytest.raises(
            ValueError, match='reduction must be None or a '
            'positive int'):
        ChannelGate(8, reduction=2.0)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_at_sd21_widths():
    # C = 1024; every BN / LayerNorm has 2C parameters (weight, bias).
    # LightBlock (official LPM) with input width I: 1x1 I*C + BN 2C,
    #   depthwise 3x3 9C + BN 2C, 1x1 C*C + BN 2C  =  I*C + C^2 + 15C
    #   1280: 1,310,720 + 1,048,576 + 15,360 = 2,374,656
    #    640:   655,360 + 1,048,576 + 15,360 = 1,719,296
    #    320:   327,680 + 1,048,576 + 15,360 = 1,391,616   sum 5,485,568
    # fuse (official conv_level2 / conv_level3, no bias, none on level 1):
    #   2C*C + 4C*C = 2,097,152 + 4,194,304                 = 6,291,456
    # LayerNorm: 2C                                         =     2,048
    # SRB: depthwise 3x3 9C (9,216) + 1x1 C^2 (1,048,576) + BN 2C (2,048)
    #   + attention 1x1 C^2 + C (1,049,600)                 = 2,109,440
    # FRM: 3 SRB + 3 gammas = 6,328,320 + 3 = 6,328,323; two FRMs
    #                                                       = 12,656,646
    # final 1x1 conv, no bias: C^2                          = 1,048,576
    # total 5,485,568 + 6,291,456 + 2,048 + 12,656,646 + 1,048,576
    official = 25_484_294
    # old variant: fuse + C bias each and a C*C + C conv on level 1
    #   (1,049,600 + 2,098,176 + 4,195,328 = 7,343,104); SE gate with
    #   C/16 = 64 hidden: C*64 + 64 + 64*C + C = 132,160, so SRB 1,192,000,
    #   FRM 3,576,003, two 7,152,006; output conv C^2 + C = 1,049,600
    #   5,485,568 + 7,343,104 + 2,048 + 7,152,006 + 1,049,600
    old = 21_032_326
    sd21 = dict(
        in_channels=((1280, ), (640, 640), (320, 320, 320, 320)),
        channels=1024,
        out_channels=1024)
    n_official = _count(MSFRN(**sd21))
    n_old = _count(MSFRN(**sd21, **OLD))
    print(f'MSFRN @ SD 2.1: official {n_official:,} | old {n_old:,}')
    assert n_official == official
    assert n_old == old
