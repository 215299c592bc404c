# Copyright (c) mmpsearch contributors. All rights reserved.
"""mmpsearch.testing.demo_ps_inputs feeds the models as a dataset would."""
import pytest
import torch

from mmpsearch.registry import MODELS
from mmpsearch.testing import demo_ps_inputs
from mmpsearch.utils.setup_env import register_all_modules
from ..test_models.test_detectors.test_psdiff import D, N, _cfg


def _model():
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = MODELS.build(_cfg())
    model.init_weights()
    return model


def test_train_batch_gives_finite_psdiff_losses():
    model = _model()
    data = model.data_preprocessor(
        demo_ps_inputs(
            split='train', diffusion=dict(num_proposals=N, embed_dims=D)),
        True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0


def test_query_batch_gives_the_query_box_back():
    model = _model().eval()
    batch = demo_ps_inputs(batch_size=2, num_persons=3, split='query')
    given = [
        s.gt_instances.bboxes.tensor.clone() for s in batch['data_samples']
    ]
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
    for sample, box in zip(out, given):
        assert torch.equal(sample.pred_instances.bboxes, box)
        assert sample.pred_instances.embeddings.shape == (1, D)


def test_gallery_samples_and_bad_arguments():
    batch = demo_ps_inputs(batch_size=3, num_persons=2, seed=1)
    for s in batch['data_samples']:
        boxes = s.gt_instances.bboxes.tensor
        assert s.split == 'gallery' and len(boxes) == 2
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
        assert s.gt_instances.person_ids.tolist() == [0, -1]
    with pytest.raises(ValueError, match='split'):
        demo_ps_inputs(split='test')
    with pytest.raises(ValueError, match='embed_dims'):
        demo_ps_inputs(split='train', diffusion=dict(num_proposals=4))
