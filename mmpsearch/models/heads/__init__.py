# Copyright (c) mmpsearch contributors. All rights reserved.
# GatherRoIExtractor moved to models/roi_extractors; it is still importable
# here because configs dumped into work dirs before the move name it as
# type='mmpsearch.models.heads.GatherRoIExtractor'.
from ..roi_extractors import GatherRoIExtractor  # noqa: F401
from .cdl_head import CDLHead
from .psdiff_head import PSDiffHead
from .sfan import SFAN

__all__ = ['CDLHead', 'PSDiffHead', 'SFAN']
