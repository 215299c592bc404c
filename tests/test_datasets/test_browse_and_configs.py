# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/browse_dataset.py and the dataset base configs."""
import os
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmengine.runner import Runner

from mmpsearch.datasets import CUHKSYSUDataset, PRWDataset
from .conftest import SMALL

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', '_base_', 'datasets')


def run_browse(monkeypatch, *args):
    monkeypatch.setattr(sys, 'argv', ['browse_dataset.py'] + list(args))
    runpy.run_path(
        osp.join(REPO, 'tools', 'analysis_tools', 'browse_dataset.py'),
        run_name='__main__')


@pytest.mark.parametrize('split', ['train', 'gallery', 'query'])
def test_browse_dataset_writes_pngs(tmp_path, monkeypatch, synthetic_cuhk,
                                    split):
    root, _ = synthetic_cuhk
    out = str(tmp_path / 'vis')
    run_browse(monkeypatch, osp.join(CFG_DIR,
                                     'synthetic_cuhk.py'), '--output-dir', out,
               '--num', '3', '--split', split, '--data-root', root)
    files = sorted(os.listdir(out))
    assert len(files) == 3 and all(f.endswith('.png') for f in files)
    ds = CUHKSYSUDataset(data_root=root, split=split)
    for k, name in enumerate(files):
        info = ds.get_data_info(k)
        assert name == f'{split}_{k:04d}_{info["img_id"][:-4]}.png'
        assert osp.getsize(osp.join(out, name)) > 0
        drawn = cv2.imread(osp.join(out, name))
        assert drawn.shape == (SMALL[1], SMALL[0], 3)
        orig = cv2.imread(info['img_path'])
        assert np.abs(drawn.astype(int) - orig).mean() > 1  # boxes drawn
        # the left edge of every box is painted green (labeled) or red
        for inst in info['instances']:
            x1, y1, x2, y2 = (int(round(v)) for v in inst['bbox'])
            ym = (y1 + y2) // 2
            col = drawn[ym, max(x1 - 1, 0):x1 + 2].astype(int)  # BGR
            if inst['person_id'] >= 0:
                assert (col[:, 1] - np.maximum(col[:, 0], col[:, 2])).max() \
                    > 80
            else:
                assert (col[:, 2] - np.maximum(col[:, 0], col[:, 1])).max() \
                    > 80


@pytest.mark.parametrize('name,cls,root,scale', [
    ('cuhk_sysu', CUHKSYSUDataset, 'data/CUHK-SYSU/', (1333, 800)),
    ('prw', PRWDataset, 'data/PRW/', (1333, 800)),
    ('synthetic_cuhk', CUHKSYSUDataset, 'data/synthetic_cuhk/', (320, 240)),
    ('synthetic_prw', PRWDataset, 'data/synthetic_prw/', (320, 240)),
])
def test_config_contents(name, cls, root, scale):
    cfg = Config.fromfile(osp.join(CFG_DIR, f'{name}.py'))
    train = cfg.train_dataloader.dataset
    assert train.type is cls and train.split == 'train'
    assert train.data_root == root
    steps = [t['type'].__name__ for t in train.pipeline]
    assert steps == [
        'LoadImageFromFile', 'LoadPersonSearchAnnotations', 'Resize',
        'RandomFlip', 'PackPersonSearchInputs'
    ]
    assert tuple(train.pipeline[2].scale) == scale
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.batch_size == 1 and not loader.sampler.shuffle
        assert loader.dataset.type is ConcatDataset
        members = loader.dataset.datasets
        assert [m.split for m in members] == ['gallery', 'query']
        assert all(m.type is cls and m.test_mode and m.data_root == root
                   for m in members)
        steps = [t['type'].__name__ for t in members[0].pipeline]
        assert steps == [
            'LoadImageFromFile', 'Resize', 'LoadPersonSearchAnnotations',
            'PackPersonSearchInputs'
        ]
    for ev in (cfg.val_evaluator, cfg.test_evaluator):
        assert ev.type == 'PersonSearchMetric' and ev.data_root == root
        assert ev.dataset_type == ('cuhk' if cls is CUHKSYSUDataset else 'prw')
        assert ev.gallery_size == 100


def test_synthetic_config_builds_and_loads(synthetic_cuhk):
    root, summary = synthetic_cuhk
    cfg = Config.fromfile(osp.join(CFG_DIR, 'synthetic_cuhk.py'))
    cfg.train_dataloader.dataset.data_root = root
    for m in cfg.test_dataloader.dataset.datasets:
        m.data_root = root
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    assert len(batch['inputs']) == cfg.train_dataloader.batch_size
    sample = batch['data_samples'][0]
    assert sample.metainfo['split'] == 'train'
    assert len(sample.gt_instances.person_ids) == len(
        sample.gt_instances.bboxes)

    loader = Runner.build_dataloader(cfg.test_dataloader)
    n_gal, n_q = summary['num_gallery_images'], summary['num_queries']
    assert len(loader.dataset) == n_gal + n_q
    last_gallery = loader.dataset[n_gal - 1]['data_samples']
    first_query = loader.dataset[n_gal]['data_samples']
    assert last_gallery.metainfo['split'] == 'gallery'
    assert first_query.metainfo['split'] == 'query'
    assert first_query.metainfo['query_index'] == 0
    assert first_query.gt_instances.person_ids.tolist() == [0]
    assert len(first_query.gt_instances.bboxes) == 1
