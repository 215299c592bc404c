# Copyright (c) mmpsearch contributors. All rights reserved.
"""Memory layout of the feature maps: mmcv 2.1's ``RoIAlign`` (CPU and CUDA
kernels) reads its input pointer as contiguous NCHW without calling
``.contiguous()``, so a channels-last map (a permuted view of Stable
Diffusion's tokens) gives unrelated RoI features and no error. Every
backbone and neck of the project hands out contiguous NCHW maps, and the
DiffPS RoI heads read the same numbers whatever layout they are given."""
from typing import Callable, Dict, Iterator, Tuple

import pytest
import torch
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from mmpsearch.utils.setup_env import register_all_modules
from ..conftest import leaves

PACKAGES = ('mmpsearch.models.backbones', 'mmpsearch.models.necks')


def _channels_last(shape: Tuple[int, ...]) -> Tensor:
    """A (B, C, H, W) map laid out as the backbone's token maps were: a
    permuted (B, H, W, C) tensor, not contiguous."""
    b, c, h, w = shape
    x = torch.randn(b, h, w, c).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    return x


def _tensors(out) -> Iterator[Tensor]:
    return (x for x in leaves(out) if isinstance(x, Tensor))


# ----------------------------------------- every backbone and neck
def _backbone(request) -> Tuple[nn.Module, tuple]:
    backbone = request.getfixturevalue('tiny_backbone')
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 128, 192, generator=g) * 2 - 1
    return backbone, (img, )


def _dgrpn(request) -> Tuple[nn.Module, tuple]:
    from mmpsearch.models.necks import DGRPN
    neck = DGRPN(in_channels=8, out_channels=16, tau=0.5, delta=1.0)
    neck.gamma.data.fill_(0.5)  # the guided sum, not F alone
    attn = torch.rand(2, 1, 12, 16)
    return neck, (_channels_last((2, 8, 12, 16)), attn)


def _msfrn(request) -> Tuple[nn.Module, tuple]:
    from mmpsearch.models.necks import MSFRN
    neck = MSFRN(
        in_channels=((16, ), (8, 8), (8, 8)), channels=8, out_channels=8)
    feats = [[_channels_last((2, 16, 3, 4))],
             [_channels_last((2, 8, 6, 8)) for _ in range(2)],
             [_channels_last((2, 8, 12, 16)) for _ in range(2)]]
    return neck, (feats, )


def _sd_feature_pyramid(request) -> Tuple[nn.Module, tuple]:
    from mmpsearch.models.necks import SDFeaturePyramid
    neck = SDFeaturePyramid(
        dgrpn=dict(in_channels=8, out_channels=16),
        reid_in_channels=((16, ), (8, 8)),
        reid_strides=(32, 16),
        out_channels=8,
        extra_level='conv')
    feats = dict(
        det_feat=_channels_last((2, 8, 16, 16)),
        attn_map=torch.rand(2, 1, 16, 16),
        reid_feats=[[_channels_last((2, 16, 4, 4))],
                    [_channels_last((2, 8, 8, 8)) for _ in range(2)]])
    return neck, (feats, )


#: A tiny instance and its inputs (channels-last where a map comes in) for
#: every backbone and neck the project registers.
TINY: Dict[str, Callable] = {
    'StableDiffusionBackbone': _backbone,
    'DGRPN': _dgrpn,
    'MSFRN': _msfrn,
    'SDFeaturePyramid': _sd_feature_pyramid,
}


def _registered() -> Dict[str, type]:
    register_all_modules(init_default_scope=False)
    return {
        name: cls
        for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith(PACKAGES)
    }


def test_every_backbone_and_neck_has_a_tiny_instance():
    registered = _registered()
    assert {'StableDiffusionBackbone', 'DGRPN', 'MSFRN',
            'SDFeaturePyramid'} <= set(registered)
    assert set(registered) == set(TINY), (
        'a backbone or neck without a tiny instance in this test: add one '
        'to TINY')


@pytest.mark.parametrize('name', sorted(TINY))
def test_outputs_are_contiguous_nchw(name, request):
    torch.manual_seed(0)
    module, inputs = TINY[name](request)
    assert isinstance(module, _registered()[name])
    module.eval()
    with torch.no_grad():
        out = module(*inputs)
    maps = [t for t in _tensors(out) if t.dim() == 4]
    assert maps, name
    for t in _tensors(out):
        assert t.is_contiguous(), (name, tuple(t.shape), t.stride())


# ------------------------------------------------- the DiffPS RoI heads
def test_model_roi_features_are_those_of_contiguous_maps(tiny_diffps):
    """Training step: the box and ReID RoI features the model computes
    equal those RoIAlign gives on ``.contiguous()`` copies of the maps the
    necks made (today's code: F_det reached the box head channels-last)."""
    model, batch = tiny_diffps
    model.train()
    seen = {}

    def keep(key):

        def hook(module, args, output):
            seen[key] = (args, output)

        return hook

    hooks = [
        (model.neck, 'det_maps'),
        (model.reid_neck, 'reid_map'),
        (model.roi_head.bbox_roi_extractor, 'bbox'),
        (model.reid_roi_head.roi_extractor, 'reid'),
    ]
    handles = [m.register_forward_hook(keep(k)) for m, k in hooks]
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            model.loss(batch['inputs'], batch['data_samples'])
    finally:
        for h in handles:
            h.remove()
    det_maps = seen['det_maps'][1]
    reid_map = seen['reid_map'][1]
    for key, maps in (('bbox', tuple(det_maps)), ('reid', (reid_map, ))):
        (_, rois), feats = seen[key][0][:2], seen[key][1]
        assert len(rois) > 0, key
        extractor = dict(
            bbox=model.roi_head.bbox_roi_extractor,
            reid=model.reid_roi_head.roi_extractor)[key]
        with torch.no_grad():
            expected = extractor(tuple(m.contiguous() for m in maps), rois)
        assert float(expected.abs().max()) > 0, key
        torch.testing.assert_close(
            feats, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f'{key}: {m}')


def test_roi_heads_read_channels_last_maps_as_contiguous_ones(tiny_diffps):
    """The heads' own guard: a channels-last map gives the RoI features
    (and so the scores and embeddings) of its contiguous copy."""
    model, batch = tiny_diffps
    model.eval()
    with torch.no_grad():
        det_maps, reid_map, parts = model.extract_all(batch['inputs'])
    boxes = [
        torch.tensor([[8., 16., 72., 120.], [40., 8., 120., 100.]]),
        torch.tensor([[16., 24., 96., 112.]]),
    ]
    rois = torch.cat([
        torch.cat([b.new_full((len(b), 1), i), b], 1)
        for i, b in enumerate(boxes)
    ])
    cl_det = tuple(m.to(memory_format=torch.channels_last) for m in det_maps)
    cl_reid = reid_map.to(memory_format=torch.channels_last)
    assert not cl_det[0].is_contiguous() and not cl_reid.is_contiguous()
    with torch.no_grad():
        got = model.roi_head._bbox_forward(cl_det, rois)
        ref = model.roi_head._bbox_forward(
            tuple(m.contiguous() for m in det_maps), rois)
        emb = model.reid_roi_head.predict(cl_reid, parts, boxes)
        emb_ref = model.reid_roi_head.predict(reid_map.contiguous(), parts,
                                              boxes)
    for key in ('bbox_feats', 'cls_score', 'bbox_pred'):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb, emb_ref, rtol=1e-5, atol=1e-6)
