# Copyright (c) mmpsearch contributors. All rights reserved.
"""RoI extractors under ``--amp``: the RoIs and their FPN levels stay fp32
when the features are fp16 / bf16 (mmdet's ``SingleRoIExtractor`` casts the
RoIs to the features' dtype first). fp16 / bf16 tensors and CPU autocast
stand in for CUDA autocast."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmpsearch.models.roi_extractors import (FP32SingleRoIExtractor,
                                             GatherRoIExtractor)
from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
STRIDES = [4, 8, 16, 32]
H, W = 800, 1344
# 150x450, 300x400 and 80x200 boxes at the right of a 1333 px image:
# scales 260, 346 and 126 px -> levels [2, 2, 1] (finest_scale 56); in
# fp16 the first two areas are above 65504 (inf -> level 3), in bf16 the
# x coordinates round to 4-8 px.
ROIS = torch.tensor([[0., 1003, 101, 1153, 551], [0, 905, 301, 1205, 701],
                     [0, 1187, 503, 1267, 703]])
LEVELS = [2, 2, 1]
LOW = [torch.float16, torch.bfloat16]

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _feats(dtype, channels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(1, channels, H // s, W // s, generator=g).to(dtype)
        for s in STRIDES
    ]


def _spy_levels(extractor, monkeypatch):
    """Record the dtype of the RoIs and the levels of every
    ``map_roi_levels`` call."""
    seen = []
    map_roi_levels = extractor.map_roi_levels

    def spy(rois, num_levels):
        levels = map_roi_levels(rois, num_levels)
        seen.append((rois.dtype, levels.tolist()))
        return levels

    monkeypatch.setattr(extractor, 'map_roi_levels', spy)
    return seen


@pytest.mark.parametrize('dtype', LOW)
def test_gather_extractor_maps_and_samples_in_fp32(dtype, monkeypatch):
    ext = GatherRoIExtractor(
        roi_layer=dict(
            type='RoIAlign', output_size=7, sampling_ratio=2, aligned=True),
        out_channels=4,
        featmap_strides=STRIDES)
    feats = _feats(dtype)
    # the same features in fp32: only the interpolation weights differ
    want = ext([f.float() for f in feats], ROIS)
    seen = _spy_levels(ext, monkeypatch)
    for autocast in (False, True):
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            got = ext(feats, ROIS)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=0, atol=3e-2)
    assert seen == [(torch.float32, LEVELS)] * 2


def _config_extractors(name):
    """The RoI extractors of a shipped config, built."""
    register_all_modules()
    model = Config.fromfile(osp.join(REPO, 'configs', name)).model
    if 'detector' in model:  # the two-step baseline
        cfgs = [model.detector.roi_head.bbox_roi_extractor]
    else:  # DiffPS
        cfgs = [
            model.roi_head.bbox_roi_extractor,
            model.reid_roi_head.roi_extractor
        ]
    return [MODELS.build(cfg) for cfg in cfgs]


@pytest.mark.parametrize('name', [
    'baseline/faster_rcnn_r50_teacher_cuhk.py',
    'baseline/faster_rcnn_r50_teacher_prw.py',
    'baseline/faster_rcnn_r18_teacher_synthetic.py'
])
@pytest.mark.parametrize('dtype', LOW)
def test_baseline_extractor_maps_levels_in_fp32(name, dtype, monkeypatch):
    ext, = _config_extractors(name)
    # mmdet's SingleRoIExtractor maps the RoIs in the features' dtype
    assert isinstance(ext, FP32SingleRoIExtractor)
    assert ext.featmap_strides == STRIDES and ext.finest_scale == 56
    feats = _feats(dtype, ext.out_channels)
    seen = _spy_levels(ext, monkeypatch)
    for autocast in (False, True):
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            got = ext(feats, ROIS)
        assert got.dtype == dtype
    assert seen == [(torch.float32, LEVELS)] * 2
    # the levels are pooled in fp32 (mmcv's RoIAlign has no CPU half
    # kernel): the output is the fp32 one, rounded
    torch.testing.assert_close(got,
                               ext([f.float() for f in feats], ROIS).to(dtype))


@pytest.mark.parametrize(
    'name', ['diffps/diffps_sd21_cuhk.py', 'diffps/diffps_sd21_prw.py'])
@pytest.mark.parametrize('dtype', LOW)
def test_diffps_extractors_take_fp32_rois(name, dtype):
    # DiffPS's extractors read one level: no mapping, but the RoIs that
    # reach RoIAlign stay fp32 (bf16 would round them to 8 px)
    for ext in _config_extractors(name):
        assert isinstance(ext, FP32SingleRoIExtractor)
        layer = ext.roi_layers[0]
        seen = []
        layer.register_forward_pre_hook(lambda _, args: seen.append(
            (args[0].dtype, args[1].dtype)))
        feats = [torch.randn(1, ext.out_channels, H // 8, W // 8).to(dtype)]
        got = ext(feats, ROIS)
        assert seen == [(torch.float32, torch.float32)]
        assert got.dtype == dtype
        want = layer(feats[0].float(), ROIS).to(dtype)
        torch.testing.assert_close(got, want)
