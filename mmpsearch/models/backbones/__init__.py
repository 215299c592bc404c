# Copyright (c) mmpsearch contributors. All rights reserved.
from .stable_diffusion import StableDiffusionBackbone

__all__ = ['StableDiffusionBackbone']
