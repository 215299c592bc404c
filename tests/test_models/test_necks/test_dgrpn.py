# Copyright (c) mmpsearch contributors. All rights reserved.
import math

import pytest
import torch

from mmpsearch.models.necks.dgrpn import DGRPN


def _neck(**kwargs) -> DGRPN:
    return DGRPN(in_channels=8, out_channels=16, **kwargs).eval()


def _isolated_peaks(h, w, peaks):
    """A map that is 0 except at the given (y, x, value) pixels."""
    m = torch.zeros(1, 1, h, w)
    for y, x, v in peaks:
        m[0, 0, y, x] = v
    return m


def test_threshold_keeps_only_strong_responses():
    neck = _neck()
    m = torch.tensor([[[[0.0, 2.0], [8.0, 10.0]]]])  # normalised: 0 .2 .8 1
    out = neck.threshold(m)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 0.0], [0.8, 1.0]]]]))


def test_fewer_peaks_than_max_gives_exactly_those_peaks():
    neck = _neck()
    peaks = [(3, 4, 1.0), (15, 20, 0.9), (25, 5, 0.8)]
    m_th = neck.threshold(_isolated_peaks(32, 30, peaks))
    cx, cy, scores, valid = neck.find_peaks(m_th)
    assert cx.shape == (1, 50)  # top-50 slots...
    assert int(valid.sum()) == 3  # ...but only the real peaks count
    got = sorted(
        (int(y), int(x)) for y, x, v in zip(cy[0], cx[0], valid[0]) if v)
    assert got == sorted((y, x) for y, x, _ in peaks)
    assert bool((scores[valid] > 0).all())
    assert bool((scores[~valid] == 0).all())


def test_guidance_is_the_max_of_gaussians_of_the_real_peaks():
    neck = _neck()
    h, w = 24, 28
    peaks = [(4, 5, 1.0), (18, 20, 0.9)]
    with torch.no_grad():
        g = neck.guidance_map(_isolated_peaks(h, w, peaks))
    ys, xs = torch.meshgrid(
        torch.arange(h).float(), torch.arange(w).float(), indexing='ij')
    # single-pixel peaks: spread sqrt(0) -> floor delta = 5; beta = 1
    expected = torch.stack([
        torch.exp(-(xs - x)**2 / 25.0 - (ys - y)**2 / 25.0)
        for y, x, _ in peaks
    ]).amax(0)
    torch.testing.assert_close(g[0, 0], expected)
    # no zero-score position became a peak: far from both peaks G ~ 0
    assert float(g[0, 0, 23, 0]) < 1e-6


def test_spread_in_the_window_with_floor():
    neck = _neck(delta=1.0)
    m = torch.zeros(1, 1, 20, 20)
    m[0, 0, 10, 10] = 1.0
    m[0, 0, 10, 13] = 0.9  # same row, 3 columns away, inside the 9x9 window
    m[0, 0, 10, 18] = 0.95  # outside the window (8 columns away)
    m_th = neck.threshold(m)
    cx = torch.tensor([[10]])
    cy = torch.tensor([[10]])
    sx, sy = neck.peak_spread(m_th, cx, cy)
    assert math.isclose(float(sx), math.sqrt(9 * 0.9), rel_tol=1e-5)
    assert float(sy) == 1.0  # all mass on the peak row: the floor


def test_top_k_caps_the_number_of_peaks():
    neck = _neck()
    peaks = [(4 + 8 * i, 4 + 8 * j, 0.5 + 0.001 * (8 * i + j))
             for i in range(8) for j in range(8)]  # 64 peaks, 8 px apart
    m_th = neck.threshold(_isolated_peaks(64, 64, peaks))
    cx, cy, scores, valid = neck.find_peaks(m_th)
    assert int(valid.sum()) == 50
    # the 50 strongest (the 14 weakest, top-left rows, are dropped)
    kept = {(int(y), int(x)) for y, x in zip(cy[0], cx[0])}
    strongest = sorted(peaks, key=lambda p: -p[2])[:50]
    assert kept == {(y, x) for y, x, _ in strongest}


def test_gamma_zero_gives_the_unguided_feature():
    torch.manual_seed(0)
    neck = _neck()
    feat = torch.randn(2, 8, 12, 18)
    attn = torch.rand(2, 1, 12, 18)
    (f_det, ) = neck(feat, attn)
    torch.testing.assert_close(f_det, neck.aggregate(feat))
    with torch.no_grad():
        neck.gamma.fill_(0.5)
    (f_det, ) = neck(feat, attn)
    f = neck.aggregate(feat)
    g = neck.guidance_map(attn)
    torch.testing.assert_close(f_det, f + 0.5 * g * f)
    assert not torch.allclose(f_det, f)


def test_learnable_gamma_and_beta_get_gradients():
    neck = DGRPN(in_channels=8, out_channels=16, gamma_init=0.1)
    feat = torch.randn(2, 8, 12, 18)
    attn = torch.rand(2, 1, 12, 18)
    neck(feat, attn)[0].sum().backward()
    assert neck.gamma.grad is not None and float(neck.gamma.grad.abs()) > 0
    assert neck.beta.grad is not None and float(neck.beta.grad.abs()) > 0


def test_attention_map_is_resized_and_kernels_checked():
    neck = _neck()
    (f_det, ) = neck(torch.randn(1, 8, 12, 18), torch.rand(1, 1, 6, 9))
    assert f_det.shape == (1, 16, 12, 18)
    with pytest.raises(ValueError, match='odd'):
        DGRPN(in_channels=8, out_channels=16, peak_kernel=6)
