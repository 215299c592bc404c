# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest

from mmpsearch.datasets import make_synthetic


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    """A small synthetic CUHK-SYSU tree (``cuhk/``) and PRW tree
    (``prw/``) in the released layouts."""
    root = tmp_path_factory.mktemp('ps_trees')
    for dataset, num_images, num_ids in (('cuhk', 202, 8), ('prw', 40, 10)):
        make_synthetic(
            dataset,
            str(root / dataset),
            num_images=num_images,
            num_ids=num_ids,
            image_size=(64, 64))
    return root
