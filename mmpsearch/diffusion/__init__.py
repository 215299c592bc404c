# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the data pipeline and the models both need of PSDiff's diffusion:
the noise schedule and the shared settings (T, schedule, s1, s2, N_train,
D). Kept outside ``mmpsearch.models`` so that the ``DualNoiseGenerator``
transform does not import the models."""
from .noise_schedule import NoiseSchedule
from .settings import DiffusionSettings

__all__ = ['NoiseSchedule', 'DiffusionSettings']
