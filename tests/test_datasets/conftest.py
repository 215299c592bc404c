# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest

from mmpsearch.datasets import make_synthetic
from mmpsearch.utils.setup_env import register_all_modules

# Small scenes keep the suite fast; the layout and formats do not depend on
# the size.
SMALL = (160, 120)


def dataset_infos(cls, root: str, split: str, **kwargs) -> list:
    """The data info of every sample of ``cls(data_root=root,
    split=split, **kwargs)``, a dataset class."""
    ds = cls(data_root=root, split=split, **kwargs)
    return [ds.get_data_info(i) for i in range(len(ds))]


def boxes_ids(info: dict) -> tuple:
    """The boxes and the person ids of a data info's instances."""
    return ([i['bbox'] for i in info['instances']],
            [i['person_id'] for i in info['instances']])


@pytest.fixture(scope='session', autouse=True)
def _registered():
    register_all_modules()


def small_synthetic(tmp_path_factory, name: str, dataset: str, num_images: int,
                    num_ids: int) -> tuple:
    """A :data:`SMALL` synthetic ``dataset`` tree (seed 3) in a new folder
    ``name``: its root and ``make_synthetic``'s summary."""
    root = str(tmp_path_factory.mktemp(name))
    summary = make_synthetic(
        dataset,
        root,
        num_images=num_images,
        num_ids=num_ids,
        seed=3,
        image_size=SMALL)
    return root, summary


@pytest.fixture(scope='session')
def synthetic_cuhk(tmp_path_factory):
    return small_synthetic(tmp_path_factory, 'synthetic_cuhk', 'cuhk', 202, 12)


@pytest.fixture(scope='session')
def synthetic_prw(tmp_path_factory):
    return small_synthetic(tmp_path_factory, 'synthetic_prw', 'prw', 48, 8)
