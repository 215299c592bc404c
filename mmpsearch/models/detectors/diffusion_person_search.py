# Copyright (c) mmpsearch contributors. All rights reserved.
"""Where ``DiffusionPersonSearch`` was defined: configs dumped into work
dirs name it by this path. It is :class:`PSDiff` in its old config shape
(``mmpsearch.models.detectors.psdiff``)."""
from .psdiff import DiffusionPersonSearch

__all__ = ['DiffusionPersonSearch']
