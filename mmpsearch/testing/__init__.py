# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the tests (and anyone writing tests for a model on mmpsearch) build
their inputs from, as ``mmdet.testing``: person-search batches
(:func:`demo_ps_inputs`), a tiny random Stable Diffusion folder
(:func:`make_tiny_sd`), hand-built CUHK-SYSU / PRW trees in the released
format (:mod:`.released_trees`), a searcher whose boxes are the
annotations (:class:`OracleColourSearcher`), a toy regressor for the
tools, a digest of a folder's files (:func:`tree_digest`), one random
image through a model's data preprocessor (:func:`preprocessed_image`) and
random weights without mmengine's report (:func:`quiet_init_weights`).
Not imported by ``import mmpsearch``: importing this module registers the
oracle and toy modules."""
from ._utils import demo_ps_inputs
from .batches import preprocessed_image, unscaled_metainfo
from .files import tree_digest
from .oracle_searcher import OracleColourSearcher
from .released_trees import write_cuhk, write_cuhk_subset, write_prw
from .tiny_sd import TINY_UNET_CONFIG, make_tiny_sd
from .toy_modules import ToyRegressionDataset, ToyRegressor
from .weights import quiet_init_weights

__all__ = [
    'demo_ps_inputs', 'OracleColourSearcher', 'write_cuhk',
    'write_cuhk_subset', 'write_prw', 'TINY_UNET_CONFIG', 'make_tiny_sd',
    'ToyRegressionDataset', 'ToyRegressor', 'tree_digest',
    'preprocessed_image', 'unscaled_metainfo', 'quiet_init_weights'
]
