# Copyright (c) mmpsearch contributors. All rights reserved.
from .person_search_metric import PersonSearchMetric

__all__ = ['PersonSearchMetric']
