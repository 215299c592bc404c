# Copyright (c) mmpsearch contributors. All rights reserved.
"""Shared fixtures of the model tests: one backbone on the tiny random
Stable Diffusion per session, one small CUHK-layout tree, the tiny DiffPS
with a training batch per module, every test on one torch thread, and the
checks every training test on Stable Diffusion makes."""
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from torch import nn

from mmpsearch.datasets.synthetic import make_synthetic
from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.registry import DATASETS, MODELS
from mmpsearch.utils.setup_env import register_all_modules

DIFFPS_CONFIG = str(
    Path(__file__).resolve().parents[1] / 'data' / 'configs' /
    'diffps_sd21_synthetic.py')


@pytest.fixture(scope='session')
def tiny_backbone(tiny_sd_dir) -> StableDiffusionBackbone:
    backbone = StableDiffusionBackbone(tiny_sd_dir)
    backbone.eval()
    return backbone


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every DiffPS test on one torch thread (see tests/conftest.py)."""
    yield


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('synthetic_cuhk'))
    # the smallest CUHK-layout tree with a TestG100 gallery
    make_synthetic(
        'cuhk', root, num_images=202, num_ids=6, image_size=(160, 120))
    return root


@pytest.fixture(scope='module')
def tiny_diffps(tiny_sd_dir, synthetic_root) -> Tuple:
    """The DiffPS of tests/data/configs/diffps_sd21_synthetic.py on the
    tiny random Stable Diffusion (seed 0, in training mode) and one
    preprocessed training batch of two images of :func:`synthetic_root`."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(DIFFPS_CONFIG)
    cfg.model.backbone.sd_path = tiny_sd_dir
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    cfg.train_dataloader.dataset.data_root = synthetic_root
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(
        pseudo_collate([dataset[0], dataset[1]]), training=True)
    return model.train(), batch


def roi_align_extractor(extractor: type, out_channels: int,
                        strides: List[int]) -> dict:
    """The config of a RoI extractor of class ``extractor`` that samples
    7 x 7 ``RoIAlign`` features (2 samples a bin, aligned) from maps of
    ``strides``."""
    return dict(
        type=extractor,
        roi_layer=dict(
            type='RoIAlign', output_size=7, sampling_ratio=2, aligned=True),
        out_channels=out_channels,
        featmap_strides=strides)


@contextmanager
def query_key_outputs(attn: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """A dict that receives, while the block runs, the outputs of the
    query and key projections (``to_q``, ``to_k``) of the attention
    ``attn``, detached, as ``'q'`` and ``'k'``."""
    seen: Dict[str, torch.Tensor] = {}

    def keep(key):

        def hook(module, args, output):
            seen[key] = output.detach()

        return hook

    handles = [
        attn.to_q.register_forward_hook(keep('q')),
        attn.to_k.register_forward_hook(keep('k'))
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def train_runner(cfg: Config) -> Runner:
    """Build the Runner of ``cfg`` and train it, keeping a copy of the
    Stable Diffusion weights from before training in ``_sd_before``."""
    runner = Runner.from_cfg(cfg)
    runner._sd_before = [
        p.detach().clone() for p in runner.model.backbone.frozen_parameters()
    ]
    runner.train()
    return runner


def loss_history(runner: Runner, key: str = 'loss') -> List[float]:
    return [
        float(v) for v in runner.message_hub.get_scalar(f'train/{key}').data[0]
    ]


def assert_stable_diffusion_frozen(runner: Runner) -> None:
    """No SD parameter is a model parameter, in the optimizer or its state,
    has a gradient or changed; the UNet stays in eval mode; checkpoints hold
    no SD weights."""
    model = runner.model
    sd = model.backbone.frozen_parameters()
    assert len(sd) > 0
    sd_ids = {id(p) for p in sd}
    assert not sd_ids & {id(p) for p in model.parameters()}
    optimizer = runner.optim_wrapper.optimizer
    opt_params = [p for g in optimizer.param_groups for p in g['params']]
    assert len(opt_params) > 0
    assert not sd_ids & {id(p) for p in opt_params}
    assert not sd_ids & {id(p) for p in optimizer.state}
    assert all(p.grad is None and not p.requires_grad for p in sd)
    for p, q in zip(sd, runner._sd_before):
        assert torch.equal(p, q)
    assert not model.backbone.unet.training
    assert not any(k.startswith('backbone.') for k in model.state_dict())
    assert np.isfinite(loss_history(runner)).all()


def gallery_and_query_outputs(runner: Runner) -> Tuple:
    """The model's outputs for the first (gallery) and the last (query)
    image of the config's test set, and the query's given box."""
    dataset = DATASETS.build(runner.cfg.test_dataloader.dataset)
    gallery, query = dataset[0], dataset[len(dataset) - 1]
    assert gallery['data_samples'].metainfo['split'] == 'gallery'
    assert query['data_samples'].metainfo['split'] == 'query'
    with torch.no_grad():
        g_out, q_out = runner.model.test_step(pseudo_collate([gallery, query]))
    info = dataset.get_data_info(len(dataset) - 1)
    return g_out, q_out, torch.tensor(info['instances'][0]['bbox'])


def assert_gallery_results_format(pred: InstanceData, ori_shape: tuple,
                                  dim: int, tol: float) -> int:
    """``pred`` holds n > 0 boxes (n, 4) in the original image's pixels
    (``tol`` past its right / bottom edge at most), scores (n, ) and unit
    embeddings (n, dim); returns n."""
    n = len(pred)
    assert n > 0
    assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n, )
    assert pred.embeddings.shape == (n, dim)
    torch.testing.assert_close(pred.embeddings.norm(dim=1), torch.ones(n))
    h, w = ori_shape  # boxes in original pixels
    assert float(pred.bboxes[:, 2].max()) <= w + tol
    assert float(pred.bboxes[:, 3].max()) <= h + tol
    assert float(pred.bboxes.min()) >= 0
    return n


@pytest.fixture
def host_reads(monkeypatch) -> List[str]:
    """A list that records each Python-visible read of a tensor's value
    (``int()``, ``bool()``, ``__index__``, ``item()``, ``tolist()``): the host
    syncs of the code under test, counted on the CPU."""
    reads: List[str] = []
    for name in ('__int__', '__bool__', '__index__', 'item', 'tolist'):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return reads
