# Copyright (c) mmpsearch contributors. All rights reserved.
"""StrictPretrained: pretrained weights that must fit exactly."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmpsearch.models.weight_init import StrictPretrainedInit

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _resnet(width, init_cfg=None):
    return ResNet(
        depth=18, base_channels=width, out_indices=(3, ), init_cfg=init_cfg)


def _save(tmp_path, width):
    torch.manual_seed(width)
    src = _resnet(width)
    path = str(tmp_path / f'teacher_{width}.pth')
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in src.state_dict().items()
            }
        }, path)
    return src, path


def test_matching_checkpoint_loads_every_weight(tmp_path):
    src, path = _save(tmp_path, 8)
    model = _resnet(
        8,
        dict(type=StrictPretrainedInit, checkpoint=path, prefix='backbone.'))
    model.init_weights()
    for name, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_other_width_is_an_error_not_a_random_model(tmp_path):
    _, path = _save(tmp_path, 16)
    model = _resnet(
        8,
        dict(type=StrictPretrainedInit, checkpoint=path, prefix='backbone.'))
    with pytest.raises(
            RuntimeError,
            match='StrictPretrained.*does not fit '
            r'the model.*\(ResNet\)') as err:
        model.init_weights()
    assert 'conv1.weight (16, 3, 7, 7) vs (8, 3, 7, 7)' in str(err.value)
    assert 'more)' in str(err.value)  # the list is cut short


def test_missing_keys_are_an_error(tmp_path):
    _, path = _save(tmp_path, 8)
    model = _resnet(
        8,
        dict(
            type=StrictPretrainedInit,
            checkpoint=path,
            prefix='backbone.layer1.'))
    with pytest.raises(RuntimeError, match='does not fit'):
        model.init_weights()
