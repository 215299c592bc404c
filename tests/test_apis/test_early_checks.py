# Copyright (c) mmpsearch contributors. All rights reserved.
"""Values that used to run something else silently, or fail late, are
refused where they are read: PSDiff's test_cfg counts and sampler name, the
API's topk and image dtype, the demo's query box and --topk before any
gallery image is indexed."""

import numpy as np
import pytest

from mmpsearch.apis import search
from mmpsearch.apis.inference import _read_image
from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules
from ..test_models.test_detectors import test_psdiff as psdiff_tests


@pytest.mark.parametrize('key,value', [('sampling_steps', 2.5),
                                       ('sampling_steps', 0),
                                       ('num_proposals', 0),
                                       ('num_proposals', -3),
                                       ('num_proposals', '8')])
def test_psdiff_refuses_counts_that_are_not_positive_whole_numbers(key, value):
    register_all_modules()
    with pytest.raises(ValueError, match=rf'test_cfg\.{key} must be a whole'):
        MODELS.build(psdiff_tests._cfg(**{key: value}))
    # also when a tool changes test_cfg on a built model (int(2.5) was 2):
    # refused where it is changed, and the value in force stays
    model = psdiff_tests._model()
    before = model.test_cfg[key]
    with pytest.raises(ValueError, match=rf'test_cfg\.{key} must be a whole'):
        model.test_cfg[key] = value
    assert model.test_cfg[key] == before
    with pytest.raises(ValueError, match=rf'test_cfg\.{key} must be a whole'):
        model.test_cfg.update({key: value})
    assert model.bbox_head.test_cfg[key] == before
    model.test_cfg[key] = 2.0  # a whole float is fine
    model.check_test_cfg()


@pytest.mark.parametrize('sampler', ['ddmi', dict(type='RandomSampler')])
def test_psdiff_refuses_an_unknown_sampler_at_build_time(sampler):
    register_all_modules()
    with pytest.raises(
            KeyError, match=r"not a diffusion sampler; known: "
            r".*'DDIMSampler'"):
        MODELS.build(psdiff_tests._cfg(sampler=sampler))
    for ok in ('ddim', 'dpm-solver++', dict(type='DPMSolverSampler')):
        MODELS.build(psdiff_tests._cfg(sampler=ok))


def test_api_refuses_float_images_and_fractional_topk(tmp_path):
    with pytest.raises(ValueError, match='must be uint8'):
        _read_image(np.zeros((8, 8, 3), np.float32))
    assert _read_image(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8, 3)
    for topk in (2.5, 0, True):
        # refused before the searcher is touched
        with pytest.raises(ValueError, match='topk must be a whole number'):
            search(
                None,
                np.zeros((8, 8, 3), np.uint8), [0, 0, 4, 4], [],
                topk=topk)


def test_demo_checks_box_and_topk_before_building_anything(
        tmp_path, monkeypatch):
    import cv2

    import demo.search_demo as demo
    img = str(tmp_path / 'q.jpg')
    cv2.imwrite(img, np.full((40, 30, 3), 128, np.uint8))

    def must_not_run(*args, **kwargs):
        raise AssertionError('the model was built before the checks')

    monkeypatch.setattr(demo, 'init_searcher', must_not_run)
    base = [
        'cfg', 'ckpt', '--query-img', img, '--gallery',
        str(tmp_path), '--out',
        str(tmp_path / 'o.png')
    ]
    with pytest.raises(SystemExit, match='not inside'):
        demo.main(base + ['--query-box', '0', '0', '50', '20'])
    with pytest.raises(SystemExit, match='--topk must be >= 1'):
        demo.main(base + ['--query-box', '0', '0', '10', '20', '--topk', '0'])


def test_psdiff_sampling_does_not_check_test_cfg_again(monkeypatch):
    """test_cfg is checked when built and when changed, not before every
    sampling run."""
    register_all_modules()
    model = psdiff_tests._model()
    head = model.bbox_head

    def boom(*args, **kwargs):
        raise AssertionError('test_cfg checked on the sampling path')

    monkeypatch.setattr(type(head), 'check_test_cfg', boom)
    object.__setattr__(head.test_cfg, '_check', boom)
    torch = psdiff_tests.torch
    steps = model.denoise(
        model.extract_feat(torch.zeros(1, 3, psdiff_tests.H, psdiff_tests.W)),
        [dict(img_shape=(psdiff_tests.H, psdiff_tests.W), img_id='a')])
    assert len(steps) == head.test_cfg.sampling_steps
