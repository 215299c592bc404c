# Copyright (c) mmpsearch contributors. All rights reserved.
from mmpsearch.diffusion import NoiseSchedule
from .samplers import (DDIMSampler, DiffusionSampler, DPMSolverPPSampler,
                       DPMSolverSampler, SamplingRun)

__all__ = [
    'NoiseSchedule', 'DiffusionSampler', 'SamplingRun', 'DDIMSampler',
    'DPMSolverSampler', 'DPMSolverPPSampler'
]
