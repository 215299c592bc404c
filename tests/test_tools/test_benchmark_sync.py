# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/benchmark.py times the device it was given."""
import torch

from ..conftest import load_tool


def test_timer_synchronises_the_given_device(monkeypatch):
    bench = load_tool('tools/analysis_tools/benchmark.py')
    synced = []
    monkeypatch.setattr(
        torch.cuda, 'synchronize', lambda device=None: synced.append(device))
    device = bench.parse_args(['cfg.py', '--device', 'cuda:1']).device
    out, seconds = bench._timed(lambda: 42, device)
    assert out == 42 and seconds >= 0
    # before and after the timed call, on cuda:1, not the current device
    assert synced == ['cuda:1', 'cuda:1']
    synced.clear()
    bench._timed(lambda: None, 'cpu')
    assert synced == []
