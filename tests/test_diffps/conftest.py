# Copyright (c) mmpsearch contributors. All rights reserved.
"""Shared fixtures of the DiffPS tests: one tiny random Stable Diffusion
folder and one backbone on it per session."""
import pytest

from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.models.backbones.tiny_sd import make_tiny_sd


@pytest.fixture(scope='session')
def tiny_sd_dir(tmp_path_factory) -> str:
    return make_tiny_sd(str(tmp_path_factory.mktemp('tiny_sd')))


@pytest.fixture(scope='session')
def tiny_backbone(tiny_sd_dir) -> StableDiffusionBackbone:
    backbone = StableDiffusionBackbone(tiny_sd_dir)
    backbone.eval()
    return backbone


@pytest.fixture(autouse=True, scope='package')
def _one_torch_thread():
    """On a busy 2-core machine two intra-op threads contend with the other
    processes and make these CPU tests several times slower; one thread is
    steady. Restored afterwards."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
