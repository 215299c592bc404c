# Copyright (c) mmpsearch contributors. All rights reserved.
from .diffps import DiffPS
from .psdiff import PSDiff
from .query_gallery import QueryGalleryMixin
from .two_step import TwoStepPersonSearch

__all__ = ['DiffPS', 'PSDiff', 'QueryGalleryMixin', 'TwoStepPersonSearch']
