# Copyright (c) mmpsearch contributors. All rights reserved.
import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from mmpsearch.models.heads.sfan import SFAN
from mmpsearch.models.necks.msfrn import (MSFRN, FrequencyRefinementModule,
                                          HaarDWT, HaarIDWT)

SMALL_RES = dict(depth=18, stage=1, stride=2, init_cfg=None)


@pytest.mark.parametrize('shape', [(2, 3, 8, 12), (1, 2, 7, 5)])
def test_idwt_of_dwt_is_the_identity(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    y = HaarIDWT()(*HaarDWT()(x), size=x.shape[-2:])
    torch.testing.assert_close(y, x)


def test_dwt_matches_pywavelets():
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    ll, lh, hl, hh = HaarDWT()(x)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), 'haar')
    for ours, ref in [(ll, ca), (lh, ch), (hl, cv), (hh, cd)]:
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_dwt_is_differentiable():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: HaarDWT()(t)[1], (x, ))
    assert torch.autograd.gradcheck(lambda t: HaarIDWT()(t, t, t, t), (x, ))


def test_frm_with_zero_band_scales_keeps_low_frequencies():
    frm = FrequencyRefinementModule(8).eval()
    with torch.no_grad():
        frm.scales.zero_()
    x = torch.randn(1, 8, 6, 8)
    ca, _ = pywt.dwt2(x.double().numpy(), 'haar')
    low = pywt.idwt2((ca, (None, None, None)), 'haar')
    torch.testing.assert_close(
        frm(x), x + torch.from_numpy(low).float(), atol=1e-5, rtol=1e-5)


def test_msfrn_fuses_levels_to_the_finest_map():
    msfrn = MSFRN(
        in_channels=((16, ), (12, 12), (8, 8, 8)),
        channels=16,
        out_channels=24)
    feats = [[torch.randn(2, 16, 4, 6)],
             [torch.randn(2, 12, 8, 12) for _ in range(2)],
             [torch.randn(2, 8, 16, 24) for _ in range(3)]]
    out = msfrn(feats)
    assert out.shape == (2, 24, 16, 24)
    out.sum().backward()
    assert msfrn.frm[0].scales.grad is not None
    with pytest.raises(
            ValueError,
            match=r'level 1: expected maps with '
            r'channels \[12, 12\], got \[12, 10\]'):
        msfrn([feats[0], [feats[1][0], torch.randn(2, 10, 8, 12)], feats[2]])


def _sfan(in_channels=64, text_channels=64) -> SFAN:
    return SFAN(
        in_channels=in_channels,
        text_channels=text_channels,
        res_layer=SMALL_RES,
        embed_dim=24)


def test_sfan_alpha_zero_is_identity_and_alpha_one_the_formula():
    torch.manual_seed(0)
    sfan = _sfan()
    feats = torch.randn(3, 64, 24, 12)
    parts = torch.randn(4, 64)
    torch.testing.assert_close(sfan.aggregate(feats, parts), feats)
    with torch.no_grad():
        sfan.alpha.fill_(1.0)
        sfan.part_logits.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    sim = torch.einsum('nchw,pc->nphw', F.normalize(feats, dim=1),
                       F.normalize(parts, dim=1))
    s = sim.softmax(dim=1)
    w = torch.tensor([0.0, 1.0, 2.0, 3.0]).softmax(0)
    expected = sum(w[c] * s[:, c:c + 1] * feats for c in range(4))
    torch.testing.assert_close(
        sfan.aggregate(feats, parts), expected, atol=1e-5, rtol=1e-5)


def test_sfan_projects_text_only_when_widths_differ():
    assert isinstance(_sfan(64, 64).text_proj, torch.nn.Identity)
    sfan = _sfan(64, 96)  # SD 1.5-like: text and visual widths differ
    assert isinstance(sfan.text_proj, torch.nn.Linear)
    emb = sfan(torch.randn(3, 64, 24, 12), torch.randn(4, 96))
    assert emb.shape == (3, 24)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match=r'\(4, 96\)'):
        sfan(torch.randn(3, 64, 24, 12), torch.randn(4, 64))
    with pytest.raises(ValueError, match='takes 64 channels'):
        _sfan(32, 32)


def test_sfan_single_roi_in_training():
    sfan = _sfan().train()
    emb = sfan(torch.randn(1, 64, 24, 12), torch.randn(4, 64))
    emb.sum().backward()
    assert emb.shape == (1, 24)
    assert sfan.alpha.grad is not None
