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


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every DiffPS test on one torch thread (see tests/conftest.py)."""
    yield
