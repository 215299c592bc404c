# Copyright (c) mmpsearch contributors. All rights reserved.
from .diffps import DiffPS
from .diffusion_person_search import DiffusionPersonSearch
from .two_step import TwoStepPersonSearch

__all__ = ['DiffPS', 'DiffusionPersonSearch', 'TwoStepPersonSearch']
