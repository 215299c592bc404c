# Copyright (c) mmpsearch contributors. All rights reserved.
from .base import BasePersonSearcher
from .diffps import DiffPS
from .psdiff import PSDiff
from .two_step import TwoStepPersonSearch

__all__ = ['BasePersonSearcher', 'DiffPS', 'PSDiff', 'TwoStepPersonSearch']
