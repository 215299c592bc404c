# Copyright (c) mmpsearch contributors. All rights reserved.
"""The ResNet-50 teacher configs build with mmengine's Runner (model,
dataloaders, evaluator) on synthetic trees in the released formats."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.evaluation import Accuracy
from mmpretrain.models import (ArcFaceClsHead, GlobalAveragePooling,
                               ImageClassifier, ResNet)

from mmpsearch.datasets import CUHKSYSUDataset, PRWDataset
from mmpsearch.datasets.person_crops import PersonCropDataset
from mmpsearch.datasets.synthetic import make_synthetic
from mmpsearch.utils import register_all_modules

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'teacher'


@pytest.fixture(scope='module')
def tiny_prw(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('teacher_prw') / 'prw'
    make_synthetic(
        'prw', str(root), num_images=24, num_ids=6, image_size=(128, 96))
    return str(root)


@pytest.mark.parametrize('name,scene_type,num_classes', [
    ('teacher_r50_cuhk.py', CUHKSYSUDataset, 5532),
    ('teacher_r50_prw.py', PRWDataset, 482),
])
def test_r50_teacher_config(name, scene_type, num_classes, tiny_cuhk, tiny_prw,
                            tmp_path):
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.default_scope == 'mmpsearch'
    assert cfg.model.type is ImageClassifier
    assert cfg.model.backbone.type is ResNet
    assert cfg.model.backbone.depth == 50
    # ImageNet initialisation (not reachable offline, so switched off below)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.neck.type is GlobalAveragePooling
    assert cfg.model.head.type is ArcFaceClsHead
    assert cfg.model.head.num_classes == num_classes
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[loader].dataset
        assert ds.type is PersonCropDataset
        assert ds.dataset.type is scene_type
        assert ds.dataset.split == 'train'
        assert ds.num_classes == num_classes
    assert cfg.train_dataloader.dataset.subset == 'train'
    assert cfg.val_dataloader.dataset.subset == 'val'

    # Build everything on a synthetic tree of the same format.
    root = tiny_cuhk if scene_type is CUHKSYSUDataset else tiny_prw
    n_ids = len(
        PersonCropDataset(
            dataset=dict(type=scene_type, data_root=root,
                         split='train')).metainfo['person_ids'])
    opts = {'model.backbone.init_cfg': None, 'model.head.num_classes': n_ids}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.update({
            f'{loader}.dataset.dataset.data_root': root,
            f'{loader}.dataset.num_classes': n_ids,
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            f'{loader}.batch_size': 2,
        })
    cfg.merge_from_dict(opts)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    loader = runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    assert tuple(batch['inputs'][0].shape) == (3, 256, 128)
    assert len(runner.build_dataloader(cfg.val_dataloader).dataset) > 0
    evaluator = runner.build_evaluator(cfg.val_evaluator)
    assert isinstance(evaluator.metrics[0], Accuracy)

    # one training step: the ArcFace loss is finite, the embedding 2048-d
    model = runner.model
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'], stage='neck')
    assert tuple(feats[-1].shape) == (2, 2048)
