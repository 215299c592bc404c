# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the tests (and anyone writing tests for a model on mmpsearch) build
their inputs from, as ``mmdet.testing``: person-search batches
(:func:`demo_ps_inputs`), a tiny random Stable Diffusion folder
(:func:`make_tiny_sd`), hand-built CUHK-SYSU / PRW trees in the released
format (:mod:`.released_trees`), a searcher whose boxes are the
annotations (:class:`OracleColourSearcher`), a toy regressor for the
tools and a digest of a folder's files (:func:`tree_digest`). Not imported
by ``import mmpsearch``: importing this module registers the oracle and toy
modules."""
from ._utils import demo_ps_inputs
from .files import tree_digest
from .oracle_searcher import OracleColourSearcher
from .released_trees import write_cuhk, write_cuhk_subset, write_prw
from .tiny_sd import TINY_UNET_CONFIG, make_tiny_sd
from .toy_modules import ToyRegressionDataset, ToyRegressor

__all__ = [
    'demo_ps_inputs', 'OracleColourSearcher', 'write_cuhk',
    'write_cuhk_subset', 'write_prw', 'TINY_UNET_CONFIG', 'make_tiny_sd',
    'ToyRegressionDataset', 'ToyRegressor', 'tree_digest'
]
