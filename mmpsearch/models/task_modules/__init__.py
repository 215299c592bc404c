# Copyright (c) mmpsearch contributors. All rights reserved.
from .dynamic_k_assigner import DiffusionDetDynamicKAssigner

__all__ = ['DiffusionDetDynamicKAssigner']
