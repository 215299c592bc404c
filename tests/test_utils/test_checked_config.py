# Copyright (c) mmpsearch contributors. All rights reserved.
"""Settings checked where they change (:class:`CheckedConfigDict`): at build
time and on every write, not before every run."""
import copy
import math
import pickle
from functools import partial

import pytest
from mmengine.config import ConfigDict

from mmpsearch.utils.checked_config import (CheckedConfigDict,
                                            check_thresholds_when_changed)
from mmpsearch.utils.thresholds import check_cfg_thresholds

NAN = math.nan
CHECK = partial(check_cfg_thresholds, prefix='model.test_cfg')


def _cfg():
    return CheckedConfigDict(
        ConfigDict(
            score_thr=0.5,
            rcnn=dict(score_thr=0.1, nms=dict(type='nms', iou_threshold=0.5)),
            stages=[dict(score_thr=0.2)]),
        check=CHECK)


def test_refused_at_build_time():
    with pytest.raises(
            ValueError,
            match=r'model.test_cfg.rcnn.score_thr '
            r'must be a number in \[0, 1\], got 2'):
        CheckedConfigDict(dict(rcnn=dict(score_thr=2)), check=CHECK)


@pytest.mark.parametrize('write,message', [
    (lambda c: setattr(c, 'score_thr', NAN), 'model.test_cfg.score_thr'),
    (lambda c: c.__setitem__('score_thr', 5), 'model.test_cfg.score_thr'),
    (lambda c: setattr(c.rcnn.nms, 'iou_threshold', 2),
     'model.test_cfg.rcnn.nms.iou_threshold'),
    (lambda c: c.update(dict(rcnn=dict(score_thr=-1))),
     'model.test_cfg.rcnn.score_thr'),
    (lambda c: setattr(c.stages[0], 'score_thr', NAN),
     'model.test_cfg.stages.0.score_thr'),
    (lambda c: setattr(c, 'extra', dict(score_thr=3)),
     'model.test_cfg.extra.score_thr'),
])
def test_a_refused_write_raises_and_is_undone(write, message):
    cfg = _cfg()
    before = cfg.to_dict()
    with pytest.raises(ValueError, match=message):
        write(cfg)
    assert cfg.to_dict() == before


def test_accepted_writes_and_shared_children():
    cfg = _cfg()
    rcnn = cfg.rcnn  # a head holds this object, as mmdet's do
    rcnn.score_thr = 0.3
    cfg.rcnn.nms = dict(type='nms', iou_threshold=0.7)
    with pytest.raises(ValueError, match='rcnn.nms.iou_threshold'):
        rcnn.nms.iou_threshold = NAN  # a dict set after the build too
    assert cfg.rcnn is rcnn and cfg.to_dict()['rcnn'] == dict(
        score_thr=0.3, nms=dict(type='nms', iou_threshold=0.7))
    del cfg.score_thr
    assert 'score_thr' not in cfg


@pytest.mark.parametrize(
    'dup', [copy.copy, copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))])
def test_copies_keep_the_check(dup):
    other = dup(_cfg())
    assert isinstance(other, CheckedConfigDict)
    with pytest.raises(ValueError, match='model.test_cfg.rcnn.score_thr'):
        other.rcnn.score_thr = NAN


class _Head:

    def __init__(self, test_cfg):
        self.test_cfg = test_cfg


class _TwoStage:
    """The attributes of an mmdet two-stage detector the check reads."""

    def __init__(self, test_cfg):
        self.test_cfg = ConfigDict(test_cfg)
        self.rpn_head = _Head(self.test_cfg.rpn)  # shared, as mmdet does
        self.roi_head = _Head(ConfigDict(score_thr=0.05))  # its own


def test_detector_heads_keep_sharing_their_test_cfg():
    det = _TwoStage(
        dict(rpn=dict(nms=dict(iou_threshold=0.7)), rcnn=dict(score_thr=0.05)))
    check_thresholds_when_changed(det, 'model.test_cfg')
    assert det.rpn_head.test_cfg is det.test_cfg.rpn
    with pytest.raises(ValueError, match='model.test_cfg.rpn.nms.iou_'):
        det.rpn_head.test_cfg.nms.iou_threshold = NAN
    det.test_cfg.rpn.nms.iou_threshold = 0.6
    assert det.rpn_head.test_cfg.nms.iou_threshold == 0.6
    # a head's own test_cfg is checked under the detector's key for it
    with pytest.raises(ValueError, match='model.test_cfg.rcnn.score_thr'):
        det.roi_head.test_cfg.score_thr = 5
    with pytest.raises(ValueError, match='model.test_cfg.rcnn.score_thr'):
        check_thresholds_when_changed(
            _TwoStage(dict(rpn=dict(), rcnn=dict(score_thr=NAN))),
            'model.test_cfg')
