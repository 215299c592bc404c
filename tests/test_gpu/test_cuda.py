# Copyright (c) mmpsearch contributors. All rights reserved.
"""Checks that need a CUDA GPU. Marked ``gpu``: never selected by default
(setup.cfg: ``-m 'not gpu'``) nor in CI; ``make gpu-check`` runs them::

    python -m pytest -m gpu tests/test_gpu
"""
import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torchvision.ops import box_iou

from mmpsearch.registry import MODELS
from mmpsearch.testing import preprocessed_image
from mmpsearch.utils import register_all_modules
from ..conftest import REPO

pytestmark = pytest.mark.gpu

PSDIFF = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 convolutions and matmuls on the GPU too (no TF32), so that CPU
    and GPU agree to float rounding."""
    conv, mm = (torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = conv
    torch.backends.cuda.matmul.allow_tf32 = mm


def test_a_gpu_is_visible():
    # the suite hides the GPUs unless -m gpu selects these tests
    assert torch.cuda.is_available(), 'run with -m gpu on a CUDA machine'


def test_mmcv_ops_are_compiled_for_torch_cuda():
    sys.path.insert(0, str(REPO / 'scripts'))
    try:
        import mmcv_check
    finally:
        sys.path.pop(0)
    import mmcv
    from mmcv.ops import batched_nms, get_compiling_cuda_version
    target = mmcv_check.ops_target(True, torch.version.cuda)
    assert mmcv_check.check_ops(mmcv.__version__, mmcv.__version__,
                                get_compiling_cuda_version(), target) is None
    # and the CUDA kernel runs (a CPU-only build raises "nms_impl:
    # implementation for device cuda:0 not found")
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]]).cuda()
    scores = torch.tensor([0.9, 0.8, 0.7]).cuda()
    _, keep = batched_nms(boxes, scores,
                          torch.zeros(3).cuda(),
                          dict(type='nms', iou_threshold=0.5))
    assert keep.tolist() == [0, 2]


def _psdiff():
    register_all_modules()
    cfg = Config.fromfile(PSDIFF)
    cfg.model.backbone.init_cfg = None  # random weights, no teacher file
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def _inputs(model, device, h=240, w=320):
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(3, h, w, generator=gen) * 255).to(device)
    return preprocessed_image(model, image, 'gpu_check.jpg')


def test_psdiff_predicts_on_cuda_as_on_cpu():
    cpu = _psdiff()
    gpu = copy.deepcopy(cpu).cuda()
    with torch.no_grad():
        inputs = _inputs(cpu, 'cpu')
        ref = cpu.predict(inputs['inputs'], inputs['data_samples'])[0]
        inputs = _inputs(gpu, 'cuda')
        out = gpu.predict(inputs['inputs'], inputs['data_samples'])[0]
    ref, out = ref.pred_instances, out.pred_instances
    assert out.bboxes.is_cuda and out.embeddings.is_cuda
    assert len(ref) > 0
    # the noise is drawn on the CPU: the same search on both devices, up
    # to float rounding (NMS may order near-equal scores differently)
    assert abs(len(out) - len(ref)) <= max(2, len(ref) // 20)
    out = out.cpu()
    k = min(10, len(ref))
    iou = box_iou(ref.bboxes[:k], out.bboxes)
    best = iou.argmax(dim=1)
    assert (iou.max(dim=1).values > 0.99).all(), iou.max(dim=1).values
    torch.testing.assert_close(
        out.scores[best], ref.scores[:k], atol=1e-3, rtol=1e-3)
    cos = F.cosine_similarity(out.embeddings[best], ref.embeddings[:k])
    assert (cos > 0.999).all(), cos
