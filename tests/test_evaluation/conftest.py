# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest

from mmpsearch.datasets import make_synthetic


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    """A small synthetic CUHK-SYSU tree (``cuhk/``) and PRW tree
    (``prw/``) in the released layouts."""
    root = tmp_path_factory.mktemp('ps_trees')
    make_synthetic(
        'cuhk',
        str(root / 'cuhk'),
        num_images=202,
        num_ids=8,
        image_size=(64, 64))
    make_synthetic(
        'prw',
        str(root / 'prw'),
        num_images=40,
        num_ids=10,
        image_size=(64, 64))
    return root
