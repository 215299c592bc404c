# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest

from mmpsearch.datasets import make_synthetic
from mmpsearch.utils.setup_env import register_all_modules

# Small scenes keep the suite fast; the layout and formats do not depend on
# the size.
SMALL = (160, 120)


@pytest.fixture(scope='session', autouse=True)
def _registered():
    register_all_modules()


@pytest.fixture(scope='session')
def synthetic_cuhk(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic_cuhk'))
    summary = make_synthetic(
        'cuhk', root, num_images=202, num_ids=12, seed=3, image_size=SMALL)
    return root, summary


@pytest.fixture(scope='session')
def synthetic_prw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic_prw'))
    summary = make_synthetic(
        'prw', root, num_images=48, num_ids=8, seed=3, image_size=SMALL)
    return root, summary
