# Copyright (c) mmpsearch contributors. All rights reserved.
"""DualNoiseGenerator: PSDiff eq. 10 and its bookkeeping."""
import numpy as np
import pytest
import torch
from mmdet.datasets.transforms import Resize
from mmdet.structures.bbox import HorizontalBoxes

from mmpsearch.datasets.teacher_cache import save_teacher_embeddings
from mmpsearch.datasets.transforms import (DualNoiseGenerator,
                                           PackPersonSearchInputs)
from mmpsearch.diffusion import NoiseSchedule

S1, S2, D = 2.0, 3.0, 64
IMG_W, IMG_H = 200, 100
BOXES = np.array([[10, 10, 50, 90], [60, 5, 100, 95], [120, 20, 150, 80],
                  [150, 0, 200, 100], [0, 40, 30, 100]], np.float32)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture()
def teacher(tmp_path):
    rng = np.random.RandomState(0)
    embeds = rng.randn(len(BOXES), D).astype(np.float32) * 5  # not unit
    path = str(tmp_path / 'teacher.npz')
    save_teacher_embeddings(path, ['a.jpg', 'empty.jpg'],
                            [BOXES, np.zeros((0, 4), np.float32)],
                            [embeds, np.zeros((0, D), np.float32)])
    return path, embeds


def _results(boxes=BOXES, img_id='a.jpg', shape=(IMG_H, IMG_W)):
    return dict(
        img_id=img_id,
        img_shape=shape,
        instances=[
            dict(bbox=b.tolist(), bbox_label=0, person_id=i, ignore_flag=0)
            for i, b in enumerate(boxes)
        ],
        gt_bboxes=HorizontalBoxes(boxes.copy()),
        gt_bboxes_labels=np.zeros(len(boxes), np.int64),
        gt_ignore_flags=np.zeros(len(boxes), bool))


def _start(boxes, shape=(IMG_H, IMG_W)):
    """(2 b_0 - 1) s1 with b_0 = cx cy w h normalised by the image."""
    h, w = shape
    b = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2,
                        boxes[:, 2:] - boxes[:, :2]], 1) / [w, h, w, h]
    return (2 * b - 1) * S1


@pytest.mark.parametrize('t', [0, 5, 500, 990, 999])
def test_statistics_match_eq10(teacher, t):
    path, embeds = teacher
    np.random.seed(t)
    gen = DualNoiseGenerator(
        path,
        diffusion=dict(
            num_proposals=2000,
            box_snr_scale=S1,
            embed_snr_scale=S2,
            embed_dims=D),
        pad_mode='repeat',
        timestep_range=(t, t + 1))
    out = gen(_results())
    abar = NoiseSchedule(1000, 'cosine').alpha_bar(t)
    inds = out['noise_gt_inds']
    assert out['diffusion_t'] == t
    assert (inds >= 0).all() and set(inds) == set(range(len(BOXES)))

    # b_t = s1 sqrt(abar) (2 b_0 - 1) + sqrt(1 - abar) eps
    mean_b = np.sqrt(abar) * _start(BOXES)[inds]
    res_b = (out['noisy_bboxes'] - mean_b).ravel()
    # e_t = s2 sqrt(abar) Norm(e_0) + sqrt(1 - abar) eps
    unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    res_e = (out['noisy_embeds'] - np.sqrt(abar) * S2 * unit[inds]).ravel()
    for res in (res_b, res_e):
        var = 1 - abar
        n = len(res)
        # mean within 5 standard errors, variance within 5 of its s.e.
        assert abs(res.mean()) < 5 * np.sqrt(var / n)
        assert abs(res.var() / var - 1) < 5 * np.sqrt(2 / n)
    # the noise is not shared between the two modalities or the entries
    assert abs(np.corrcoef(res_b[:4000], res_e[:4000])[0, 1]) < 0.1


def test_outputs_and_bookkeeping(teacher):
    path, embeds = teacher
    np.random.seed(0)
    gen = DualNoiseGenerator(
        path, diffusion=dict(num_proposals=8), timestep_range=(0, 1))
    out = gen(_results())
    assert out['noisy_bboxes'].shape == (8, 4)
    assert out['noisy_embeds'].shape == (8, D)
    assert out['noisy_bboxes'].dtype == np.float32
    # random padding after the ground truth (DiffusionDet)
    np.testing.assert_array_equal(out['noise_gt_inds'],
                                  [0, 1, 2, 3, 4, -1, -1, -1])
    # at t = 0 b_t is the normalised, scaled ground truth
    np.testing.assert_allclose(
        out['noisy_bboxes'][:5], _start(BOXES), atol=0.05)
    pad = out['noisy_bboxes'][5:]
    assert np.all(np.abs(pad) <= S1 * 1.2)
    # the teacher targets: one unit vector per box, in the boxes' order
    unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    np.testing.assert_allclose(out['gt_teacher_embeds'], unit, atol=1e-6)


def test_centred_teacher_targets(teacher):
    path, embeds = teacher
    np.random.seed(0)
    gen = DualNoiseGenerator(
        path,
        diffusion=dict(num_proposals=8),
        timestep_range=(0, 1),
        center_teacher=True)
    out = gen(_results())
    # Norm(Norm(e_0) - mu), mu over every box of the file
    unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    centred = unit - unit.mean(0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(out['gt_teacher_embeds'], centred, atol=1e-5)
    # the noisy embeddings are made from the same (centred) targets
    np.testing.assert_allclose(
        out['noisy_embeds'][:5], S2 * centred, atol=0.05)
    assert not np.allclose(centred, unit, atol=0.05)


def test_more_ground_truth_than_proposals(teacher):
    path, _ = teacher
    gen = DualNoiseGenerator(path, diffusion=dict(num_proposals=3))
    out = gen(_results())
    inds = out['noise_gt_inds']
    assert len(inds) == 3 and len(set(inds)) == 3 and inds.min() >= 0


def test_image_without_person(teacher):
    path, _ = teacher
    gen = DualNoiseGenerator(path, diffusion=dict(num_proposals=6))
    out = gen(_results(np.zeros((0, 4), np.float32), img_id='empty.jpg'))
    assert (out['noise_gt_inds'] == -1).all()
    assert np.isfinite(out['noisy_bboxes']).all()
    assert np.isfinite(out['noisy_embeds']).all()
    assert out['noisy_embeds'].shape == (6, D)
    assert out['gt_teacher_embeds'].shape == (0, D)


def test_boxes_are_normalised_after_resize_and_packed(teacher):
    path, embeds = teacher
    np.random.seed(1)
    results = _results()
    results['img'] = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    results = Resize(scale=(400, 200), keep_ratio=True)(results)
    assert results['img_shape'] == (200, 400)
    gen = DualNoiseGenerator(
        path, diffusion=dict(num_proposals=8), timestep_range=(0, 1))
    results = gen(results)
    # normalising the resized boxes by the resized image gives the same b_0
    np.testing.assert_allclose(
        results['noisy_bboxes'][:5], _start(BOXES), atol=0.05)
    packed = PackPersonSearchInputs()(results)
    sample = packed['data_samples']
    assert sample.diffusion_t == 0
    assert tuple(sample.noisy_instances.bboxes.shape) == (8, 4)
    assert tuple(sample.noisy_instances.embeds.shape) == (8, D)
    assert sample.noisy_instances.gt_inds.tolist()[:5] == [0, 1, 2, 3, 4]
    assert torch.allclose(
        sample.gt_instances.teacher_embeds,
        torch.from_numpy(embeds /
                         np.linalg.norm(embeds, axis=1, keepdims=True)),
        atol=1e-6)


def test_errors_are_clear(teacher, tmp_path):
    path, _ = teacher
    with pytest.raises(ValueError, match='pad_mode'):
        DualNoiseGenerator(path, pad_mode='zeros')
    with pytest.raises(ValueError, match='teacher_embeds'):
        DualNoiseGenerator('')
    with pytest.raises(ValueError, match='embed_dims'):
        DualNoiseGenerator(path, diffusion=dict(embed_dims=D + 1))(_results())
    with pytest.raises(FileNotFoundError, match='extract_teacher'):
        DualNoiseGenerator(str(tmp_path / 'missing.npz'))(_results())
    # a box-dropping transform before the generator
    res = _results()
    res['gt_bboxes'] = HorizontalBoxes(BOXES[:3].copy())
    with pytest.raises(ValueError, match='dropped boxes'):
        DualNoiseGenerator(path)(res)
    # annotations that are not the ones the teacher saw
    moved = BOXES.copy()
    moved[0] += 5
    with pytest.raises(ValueError, match='other annotations'):
        DualNoiseGenerator(path)(_results(moved))
    with pytest.raises(KeyError, match='no teacher embeddings'):
        DualNoiseGenerator(path)(_results(img_id='b.jpg'))


@pytest.mark.parametrize('pad_mode', ['random', 'repeat'])
def test_noise_and_eq10_in_float32(teacher, pad_mode):
    """The noise is drawn and eq. 10 computed in float32 (what the model
    consumes), from NumPy's seeded stream: the values are those of the same
    draws in float64, rounded."""
    path, embeds = teacher
    gen = DualNoiseGenerator(
        path,
        diffusion=dict(num_proposals=8, box_snr_scale=S1, embed_snr_scale=S2),
        pad_mode=pad_mode,
        timestep_range=(300, 301))
    dtypes = []
    q_sample = gen.q_sample

    def spy(x0, t, noise):
        dtypes.append((x0.dtype, noise.dtype))
        out = q_sample(x0, t, noise)
        dtypes.append(out.dtype)
        return out

    gen.q_sample = spy
    np.random.seed(7)
    out = gen(_results())
    f32 = np.dtype(np.float32)
    assert dtypes == [(f32, f32), f32] * 2
    assert out['noisy_bboxes'].dtype == f32
    assert out['noisy_embeds'].dtype == f32

    # the same draws in float64 (the transform's order: the padding's
    # boxes and embeddings, t, then eps_1 and eps_2)
    np.random.seed(7)
    num_pad = 3 if pad_mode == 'random' else 0
    pad_boxes = np.random.randn(num_pad, 4) / 6.0 + 0.5
    pad_boxes[:, 2:] = np.clip(pad_boxes[:, 2:], 1e-4, None)
    pad_embeds = np.random.randn(num_pad, D)
    t = np.random.randint(300, 301)
    eps_b, eps_e = np.random.randn(8, 4), np.random.randn(8, D)
    inds = out['noise_gt_inds']
    np.testing.assert_array_equal(inds >= 0, np.arange(8) < 8 - num_pad)
    start_b = np.concatenate(
        [_start(BOXES)[inds[inds >= 0]], (2 * pad_boxes - 1) * S1])
    unit = np.concatenate([embeds[inds[inds >= 0]], pad_embeds])
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    abar = NoiseSchedule(1000, 'cosine').alpha_bar(t)
    np.testing.assert_allclose(
        out['noisy_bboxes'],
        np.sqrt(abar) * start_b + np.sqrt(1 - abar) * eps_b,
        rtol=1e-5,
        atol=1e-5)
    np.testing.assert_allclose(
        out['noisy_embeds'],
        np.sqrt(abar) * S2 * unit + np.sqrt(1 - abar) * eps_e,
        rtol=1e-5,
        atol=1e-5)


def test_check_model_refuses_another_T(teacher):
    """The pipeline's T and the model's are compared once, before training
    (TeacherEmbeddingsCheckHook), not on every batch."""
    path, _ = teacher
    gen = DualNoiseGenerator(path, diffusion=dict(num_timesteps=500))
    gen.check_model(500)
    with pytest.raises(
            ValueError,
            match=r'draws diffusion_t from \[0, 500\)'
            r' but the model has T = 1000: the pipeline and '
            r'model.bbox_head.diffusion disagree on T'):
        gen.check_model(1000)
