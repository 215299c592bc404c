# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff trains and predicts without any mmcv op, so that it runs on a
GPU with any mmcv build (a CPU-only one included): every function,
autograd ``Function`` and ``nn.Module`` of ``mmcv.ops``, wherever it was
imported, and every entry point of the compiled ``mmcv._ext`` raise while
the tiny PSDiff runs one ``loss`` and one ``predict``."""
import importlib
import inspect
import os.path as osp
import sys
from typing import List

import mmcv.ops
import pytest
import torch
from mmengine.config import Config

from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules
from .test_psdiff import REPO, _cfg, _predict, _test_samples, _train_batch

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _forbidden(name: str, calls: List[str]):

    def forbidden(*args, **kwargs):
        calls.append(name)
        raise AssertionError(f'PSDiff called the mmcv op {name}')

    return forbidden


def _forbid_mmcv_ops(monkeypatch) -> List[str]:
    """Make every mmcv op raise; returns the list of the ones called."""
    calls: List[str] = []
    # the compiled kernels: mmcv.ops' modules call them as attributes of
    # this one module (``ext_module.nms(...)``)
    ext = importlib.import_module('mmcv._ext')
    for name in dir(ext):
        if not name.startswith('__') and callable(getattr(ext, name)):
            monkeypatch.setattr(ext, name,
                                _forbidden(f'mmcv._ext.{name}', calls))
    # the Python layer: classes are patched in place, functions under every
    # name a loaded module holds them by (``from mmcv.ops import ...``)
    ops = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod_name == 'mmcv.ops' or mod_name.startswith('mmcv.ops.'):
            for name, obj in vars(mod).items():
                if getattr(obj, '__module__', None) and \
                        obj.__module__.startswith('mmcv.ops'):
                    ops[id(obj)] = (f'{obj.__module__}.{name}', obj)
    functions = {}
    for key, (name, obj) in ops.items():
        if inspect.isclass(obj) and issubclass(obj, torch.autograd.Function):
            monkeypatch.setattr(obj, 'forward',
                                staticmethod(_forbidden(name, calls)))
        elif inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
            monkeypatch.setattr(obj, 'forward', _forbidden(name, calls))
        elif inspect.isfunction(obj):
            functions[key] = name
    for mod in list(sys.modules.values()):
        for attr, value in list(getattr(mod, '__dict__', {}).items()):
            if id(value) in functions and value is ops[id(value)][1]:
                monkeypatch.setattr(mod, attr,
                                    _forbidden(functions[id(value)], calls))
    return calls


def _shipped_recipe_cfg():
    # the criterion (dynamic-k matching, IoU-aware QFL targets), training
    # passes and NMS of psdiff_r50_cuhk.py on the tiny model
    register_all_modules()
    shipped = Config.fromfile(
        osp.join(REPO, 'configs/psdiff/psdiff_r50_cuhk.py')).model
    cfg = _cfg(nms=shipped.test_cfg.nms.to_dict())
    cfg['bbox_head']['criterion'] = shipped.bbox_head.criterion.to_dict()
    cfg['train_cfg'] = shipped.train_cfg.to_dict()
    return cfg


@pytest.mark.parametrize('recipe', ['paper', 'shipped'])
def test_psdiff_loss_and_predict_use_no_mmcv_op(recipe, monkeypatch):
    torch.manual_seed(0)
    # the paper's criterion (Hungarian matching, mmdet's FocalLoss) is the
    # tiny model's default
    cfg = _shipped_recipe_cfg() if recipe == 'shipped' else _cfg(
        nms=dict(type='nms', iou_threshold=0.5))
    model = MODELS.build(cfg)
    model.init_weights()
    calls = _forbid_mmcv_ops(monkeypatch)
    # the guard works: a function, a kernel and a module of mmcv.ops raise
    boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]])
    scores = torch.tensor([0.9, 0.8])
    with pytest.raises(AssertionError, match='mmcv op'):
        mmcv.ops.batched_nms(boxes, scores, torch.zeros(2),
                             dict(type='nms', iou_threshold=0.5))
    with pytest.raises(AssertionError, match='mmcv op'):
        # mmcv.ops.nms is the function; its module holds the kernels
        importlib.import_module('mmcv.ops.nms').ext_module.nms(
            boxes, scores, iou_threshold=0.5, offset=0)
    with pytest.raises(AssertionError, match='mmcv op'):
        mmcv.ops.RoIAlign(7)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 5))
    assert calls == [
        'mmcv.ops.nms.batched_nms', 'mmcv._ext.nms',
        'mmcv.ops.roi_align.RoIAlign'
    ]
    calls.clear()

    model.train()
    images, samples = _train_batch()
    losses = model.loss(images, samples)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    # a gallery image (sampling steps, NMS) and a query image
    images, samples = _test_samples(('gallery', 'query'))
    gallery, query = _predict(model, images, samples)
    assert len(gallery) > 1 and len(query) == 1
    assert calls == []
