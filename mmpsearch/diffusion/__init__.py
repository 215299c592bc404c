# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's diffusion, in one place: the noise schedule, the settings the
data pipeline and the model share (T, schedule, s1, s2, N_train, D) and the
reverse-process samplers. It imports nothing of ``mmpsearch.models``, so
that the ``DualNoiseGenerator`` transform does not import the models."""
from .noise_schedule import NoiseSchedule
from .samplers import (DDIMSampler, DiffusionSampler, DPMSolverPPSampler,
                       DPMSolverSampler, SamplingRun)
from .settings import DiffusionSettings

__all__ = [
    'NoiseSchedule', 'DiffusionSettings', 'DiffusionSampler', 'SamplingRun',
    'DDIMSampler', 'DPMSolverSampler', 'DPMSolverPPSampler'
]
