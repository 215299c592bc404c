# Copyright (c) mmpsearch contributors. All rights reserved.
from .noise_schedule import NoiseSchedule
from .samplers import (DDIMSampler, DiffusionSampler, DPMSolverPPSampler,
                       DPMSolverSampler, SamplingRun)

__all__ = [
    'NoiseSchedule', 'DiffusionSampler', 'SamplingRun', 'DDIMSampler',
    'DPMSolverSampler', 'DPMSolverPPSampler'
]
