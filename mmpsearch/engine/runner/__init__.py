# Copyright (c) mmpsearch contributors. All rights reserved.
from .multi_seed_test_loop import (MultiSeedTestLoop, SeedsError, check_seeds,
                                   results_files, seed_results_files,
                                   use_multi_seed_test_loop)

__all__ = [
    'MultiSeedTestLoop', 'SeedsError', 'check_seeds', 'results_files',
    'seed_results_files', 'use_multi_seed_test_loop'
]
