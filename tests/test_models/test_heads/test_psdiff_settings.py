# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's typed test / train settings: the one place of the keys of
``model.test_cfg`` / ``train_cfg``, their defaults and their checks."""
import copy
import math
import os.path as osp
import pickle

import pytest

from mmpsearch.diffusion import DDIMSampler
from mmpsearch.models.detectors import PSDiff
from mmpsearch.models.heads import (PSDiffHead, PSDiffTestSettings,
                                    PSDiffTrainSettings)
from mmpsearch.utils.cfg_signature import ConfigKeyError
from ..test_detectors import test_psdiff as psdiff_tests

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))

pytestmark = pytest.mark.usefixtures('one_torch_thread')

#: ``DEFAULT_TEST_CFG`` / ``DEFAULT_TRAIN_CFG`` of psdiff_head.py before the
#: settings classes replaced them, written out.
OLD_DEFAULT_TEST_CFG = dict(
    num_proposals=None,
    sampling_steps=8,
    num_passes=None,
    sampler=dict(type=DDIMSampler, eta=1.0),
    seed=0,
    score_thr=0.5,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=100,
    box_renewal=False,
    renewal_thr=0.5,
    use_ensemble=False)
OLD_DEFAULT_TRAIN_CFG = dict(num_passes=1)


def test_defaults_are_the_former_ones_in_the_same_order():
    defaults = PSDiffTestSettings.defaults()
    assert defaults == OLD_DEFAULT_TEST_CFG
    assert list(defaults) == list(OLD_DEFAULT_TEST_CFG)
    assert PSDiffTrainSettings.defaults() == OLD_DEFAULT_TRAIN_CFG
    # new dicts every time: a caller that changes one changes no default
    defaults['nms']['iou_threshold'] = 0.1
    assert PSDiffTestSettings().nms['iou_threshold'] == 0.5
    assert PSDiffTestSettings.from_cfg(None) == PSDiffTestSettings()


def test_cfg_keys_are_the_fields():
    for cls in (PSDiffHead, PSDiff):
        assert cls.CFG_KEYS['test_cfg'] == tuple(OLD_DEFAULT_TEST_CFG)
        assert cls.CFG_KEYS['train_cfg'] == tuple(OLD_DEFAULT_TRAIN_CFG)


def test_every_field_is_documented():
    src = open(
        osp.join(REPO, 'mmpsearch', 'models', 'heads',
                 'psdiff_settings.py')).read().splitlines()
    for cls in (PSDiffTestSettings, PSDiffTrainSettings):
        for key in cls.keys():
            line = next(i for i, s in enumerate(src)
                        if s.startswith(f'    {key}: '))
            assert src[line - 1].strip().startswith('#:'), key


def test_an_unknown_key_is_refused_with_did_you_mean():
    with pytest.raises(ConfigKeyError) as err:
        PSDiffTestSettings.from_cfg(dict(sampling_step=4))
    msg = str(err.value)
    assert "model.test_cfg has unknown key 'sampling_step' " \
        "(did you mean 'sampling_steps'?)" in msg
    assert "known: ['box_renewal', 'max_per_img'" in msg
    with pytest.raises(
            KeyError,
            match=r"unknown keys 'foo', 'scor_thr' "
            r"\(did you mean 'score_thr'\?\)"):
        PSDiffTestSettings.from_cfg(dict(scor_thr=0.1, foo=1))
    with pytest.raises(
            KeyError,
            match=r"model\.train_cfg has unknown key "
            r"'num_pass' \(did you mean 'num_passes'\?\)"):
        PSDiffTrainSettings.from_cfg(dict(num_pass=2))


@pytest.mark.parametrize('key,value,error,match', [
    ('sampling_steps', 2.5, ValueError, 'must be a whole number >= 1'),
    ('num_proposals', 0, ValueError, 'must be a whole number >= 1'),
    ('num_passes', True, ValueError, 'must be a whole number >= 1'),
    ('score_thr', math.nan, ValueError, r'must be a number in \[0, 1\]'),
    ('renewal_thr', 5, ValueError, r'must be a number in \[0, 1\]'),
    ('sampler', 'ddmi', KeyError, 'is not a diffusion sampler'),
    ('nms', dict(type='soft_nms',
                 iou_threshold=0.5), ValueError, 'must be None or dict'),
])
def test_a_bad_value_is_refused_naming_key_and_value(key, value, error, match):
    with pytest.raises(error, match=match) as err:
        PSDiffTestSettings.from_cfg({key: value})
    assert f'model.test_cfg.{key}' in str(err.value)
    assert repr(value) in str(err.value)


def test_good_values_are_kept_as_given():
    s = PSDiffTestSettings.from_cfg(
        dict(
            sampling_steps=2.0,
            sampler='dpm-solver++',
            nms=None,
            num_passes=3,
            seed=None))
    assert s.sampling_steps == 2.0 and isinstance(s.sampling_steps, float)
    assert s.sampler == 'dpm-solver++' and s.nms is None
    with pytest.raises(
            ValueError,
            match=r'model\.train_cfg\.num_passes '
            'must be >= 1, got 0'):
        PSDiffTrainSettings.from_cfg(dict(num_passes=0))


def test_the_head_refuses_at_build_and_when_a_tool_writes():
    with pytest.raises(KeyError, match="did you mean 'sampling_steps'"):
        psdiff_tests.MODELS.build(
            dict(psdiff_tests._cfg(), test_cfg=dict(sampling_step=4)))
    model = psdiff_tests._model()
    cfg = model.test_cfg
    # nested and top-level writes: refused, named, and undone
    with pytest.raises(
            ValueError,
            match=r'model\.test_cfg\.nms\.iou_threshold must be '
            r'a number in \[0, 1\], got 2'):
        cfg.nms.iou_threshold = 2
    assert cfg.nms.iou_threshold == 0.5
    with pytest.raises(
            ValueError,
            match=r'model\.test_cfg\.num_proposals '
            'must be a whole number >= 1, got None'):
        cfg.num_proposals = None
    with pytest.raises(KeyError, match="did you mean 'use_ensemble'"):
        cfg.use_ensembl = True
    assert 'use_ensembl' not in cfg
    with pytest.raises(KeyError, match=r"lacks \['seed'\]"):
        del cfg['seed']
    assert cfg.seed == 0
    # the ways tools change it
    cfg.nms.iou_threshold = 0.3
    cfg.sampling_steps = 1
    assert model.set_test_seed(7) == ['test_cfg.seed'] and cfg.seed == 7
    assert model.bbox_head.test_cfg is cfg
    # copies keep the check
    for other in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert other == cfg
        with pytest.raises(ValueError, match='sampling_steps'):
            other.sampling_steps = 0
