# Copyright (c) mmpsearch contributors. All rights reserved.
"""``--cfg-options`` checks of :func:`mmpsearch.utils.config.load_config`."""
import pytest

from mmpsearch.utils.config import load_config
from .conftest import REPO

PSDIFF = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')


def test_field_override_reaches_the_model():
    cfg = load_config(PSDIFF, {'model.test_cfg.num_proposals': 7})
    assert cfg.model.test_cfg.num_proposals == 7


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(KeyError, match="did you mean 'train_cfg'"):
        load_config(PSDIFF, {'trian_cfg.max_iters': 2})


def test_file_variable_is_refused_and_its_uses_are_named():
    # teacher_embeds was copied into the pipeline when the file was read:
    # overriding the variable alone would silently train on the old file.
    with pytest.raises(KeyError) as err:
        load_config(PSDIFF, {'teacher_embeds': '/elsewhere.npz'})
    msg = str(err.value)
    assert 'would change nothing' in msg
    assert 'train_dataloader.dataset.pipeline.4.teacher_embeds' in msg
    # the diffusion settings: one dict, given to the pipeline and the head
    with pytest.raises(KeyError, match="'diffusion' is a variable"):
        load_config(PSDIFF, {'diffusion.num_proposals': 8})


def test_file_variable_of_a_list_is_refused():
    with pytest.raises(KeyError, match="'train_pipeline' is a variable"):
        load_config(PSDIFF, {'train_pipeline.0.type': 'Foo'})


def test_runner_key_may_be_added():
    cfg = load_config(PSDIFF, {'load_from': 'x.pth'})
    assert cfg.load_from == 'x.pth'
