# Copyright (c) mmpsearch contributors. All rights reserved.
from .gather_roi_extractor import GatherRoIExtractor, RoIFeatureTable

__all__ = ['GatherRoIExtractor', 'RoIFeatureTable']
