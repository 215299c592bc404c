# Copyright (c) mmpsearch contributors. All rights reserved.
"""ReIDDynamicConv's chunking: by ``chunk_size`` on the CPU, one chunk on
CUDA, with the same result."""
import pytest
import torch
from mmdet.models.layers import DynamicConv

from mmpsearch.models.layers import reid_dynamic_conv
from mmpsearch.models.layers.reid_dynamic_conv import (ReIDDynamicConv,
                                                       proposal_chunk_size)

C = 16


@pytest.mark.parametrize('device', ['cuda', 'cuda:1', torch.device('cuda')])
def test_one_chunk_on_cuda(device):
    # torch.device('cuda') is only a name: no GPU is needed to build it
    for n in (1, 64, 65, 300, 2000):
        assert proposal_chunk_size(device, n, 64) == n


@pytest.mark.parametrize('device', ['cpu', torch.device('cpu')])
def test_chunk_size_on_cpu(device):
    for n in (1, 64, 300):
        assert proposal_chunk_size(device, n, 64) == 64
    assert proposal_chunk_size(device, 300, 7) == 7


def test_one_chunk_equals_chunks_of_64(monkeypatch):
    torch.manual_seed(0)
    conv = ReIDDynamicConv(
        in_channels=C, feat_channels=8, param_rank=4,
        input_feat_shape=7).eval()
    assert conv.chunk_size == 64
    fr, roi = torch.randn(200, C), torch.randn(200, C, 7, 7)

    calls = []
    mmdet_forward = DynamicConv.forward

    def counting_forward(self, param_feature, input_feature):
        calls.append(len(param_feature))
        return mmdet_forward(self, param_feature, input_feature)

    monkeypatch.setattr(DynamicConv, 'forward', counting_forward)
    with torch.no_grad():
        chunked = conv(fr, roi)
    assert calls == [64, 64, 64, 8]

    # what the layer does when the features are on a CUDA device
    calls.clear()
    seen = []

    def as_on_cuda(device, num_proposals, cpu_chunk_size):
        seen.append(torch.device(device).type)
        return proposal_chunk_size('cuda', num_proposals, cpu_chunk_size)

    monkeypatch.setattr(reid_dynamic_conv, 'proposal_chunk_size', as_on_cuda)
    with torch.no_grad():
        whole = conv(fr, roi)
    assert seen == ['cpu'] and calls == [200]
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-5)
