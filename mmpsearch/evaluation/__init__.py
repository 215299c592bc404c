# Copyright (c) mmpsearch contributors. All rights reserved.
from .functional import evaluate_person_search
from .metrics import PersonSearchMetric
from .results_io import (load_search_results, save_search_results,
                         validate_search_results)

__all__ = [
    'PersonSearchMetric', 'evaluate_person_search', 'load_search_results',
    'save_search_results', 'validate_search_results'
]
