# Copyright (c) mmpsearch contributors. All rights reserved.
from .fp32_single_roi_extractor import FP32SingleRoIExtractor
from .gather_roi_extractor import GatherRoIExtractor, RoIFeatureTable

__all__ = ['FP32SingleRoIExtractor', 'GatherRoIExtractor', 'RoIFeatureTable']
