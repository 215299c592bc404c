# Copyright (c) mmpsearch contributors. All rights reserved.
"""The loaders of the person search configs: sized for a GPU machine on the
real datasets (workers, pinned memory), main-process loading on the
synthetic ones, which train on the CPU."""
import os.path as osp
from glob import glob

import pytest
from mmengine.config import Config

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
BASES = osp.join(REPO, 'configs', '_base_', 'datasets')
REAL_ROOTS = ('data/CUHK-SYSU/', 'data/PRW/')
SYNTHETIC_ROOTS = ('data/synthetic_cuhk/', 'data/synthetic_prw/')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _person_search_configs():
    """Every config whose training set is CUHK-SYSU or PRW (or their
    synthetic versions) itself, by its data root: the dataset bases and
    the method configs built on them."""
    paths = sorted(glob(osp.join(BASES, '*.py'))) + sorted(
        p
        for p in glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
        if '_base_' not in p)
    found = []
    for path in paths:
        cfg = Config.fromfile(path)
        root = cfg.get('train_dataloader', {}).get('dataset',
                                                   {}).get('data_root')
        if root in REAL_ROOTS + SYNTHETIC_ROOTS:
            found.append((osp.relpath(path, REPO), root in REAL_ROOTS, cfg))
    return found


CONFIGS = _person_search_configs()


def test_the_walk_finds_the_dataset_configs():
    names = {(osp.basename(p), real) for p, real, _ in CONFIGS}
    assert {('cuhk_sysu.py', True), ('prw.py', True),
            ('psdiff_r50_cuhk.py', True), ('diffps_sd21_prw.py', True),
            ('synthetic_cuhk.py', False),
            ('psdiff_r18_synthetic.py', False)} <= names


@pytest.mark.parametrize(
    'path,real,cfg', CONFIGS, ids=[p for p, _, _ in CONFIGS])
def test_loaders(path, real, cfg):
    for key in LOADERS:
        loader = cfg[key]
        if real:
            # full-size images: workers and pinned host memory for the GPU
            assert loader['num_workers'] >= 4, (path, key)
            assert loader.get('pin_memory') is True, (path, key)
            assert loader['persistent_workers'] is True, (path, key)
        else:
            # tiny images on a 2-core CPU: the main process, nothing pinned
            assert loader['num_workers'] == 0, (path, key)
            assert not loader.get('pin_memory', False), (path, key)
