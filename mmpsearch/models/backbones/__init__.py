# Copyright (c) mmpsearch contributors. All rights reserved.
from .stable_diffusion import StableDiffusionBackbone
from .tiny_sd import make_tiny_sd

__all__ = ['StableDiffusionBackbone', 'make_tiny_sd']
