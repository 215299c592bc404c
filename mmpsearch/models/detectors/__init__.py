# Copyright (c) mmpsearch contributors. All rights reserved.
from .diffps import DiffPS
from .psdiff import DiffusionPersonSearch, PSDiff
from .query_gallery import QueryGalleryMixin
from .two_step import TwoStepPersonSearch

__all__ = [
    'DiffPS', 'PSDiff', 'DiffusionPersonSearch', 'QueryGalleryMixin',
    'TwoStepPersonSearch'
]
