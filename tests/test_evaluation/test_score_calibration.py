# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/score_calibration.py on a hand case."""
import numpy as np
import pytest

from ..conftest import load_tool


def _tool():
    return load_tool('tools/analysis_tools/score_calibration.py')


def test_true_duplicate_and_false_detections():
    gt = {
        'a.jpg': np.array([[0, 0, 10, 20], [50, 0, 60, 20]], np.float32),
        'b.jpg': np.array([[0, 0, 10, 20]], np.float32),
        'c.jpg': np.zeros((0, 4), np.float32),
    }
    gallery = {
        # person a0: true 0.8, a duplicate 0.6 (IoU 0.82) and one 0.3;
        # person a1: only a box at IoU 0.33 -> not covered; a false 0.7
        'a.jpg':
        dict(
            bboxes=np.array([[0, 0, 10, 20], [0, 1, 10, 20.5], [0, 0, 9, 18],
                             [55, 0, 65, 20], [80, 80, 90, 90]], np.float32),
            scores=np.array([0.8, 0.6, 0.3, 0.9, 0.7], np.float32)),
        # person b0: true 0.4, under the threshold
        'b.jpg':
        dict(
            bboxes=np.array([[0, 0, 10, 20]], np.float32),
            scores=np.array([0.4], np.float32)),
        # no person: a false detection 0.55
        'c.jpg':
        dict(
            bboxes=np.array([[0, 0, 5, 5]], np.float32),
            scores=np.array([0.55], np.float32)),
    }
    out = _tool().calibration(gallery, gt, thr=0.5)
    assert out['num_persons'] == 3
    assert out['covered'] == pytest.approx(2 / 3)
    assert out['true_passing'] == pytest.approx(1 / 3)  # only a0's 0.8
    assert out['true_score_quantiles']['0.5'] == pytest.approx(0.6)
    assert out['duplicates_per_person'] == pytest.approx(2 / 3)
    assert out['duplicates_passing_per_person'] == pytest.approx(1 / 3)
    # a1's IoU-0.33 box (0.9), the far box (0.7), c's box (0.55)
    assert out['false_passing_per_image'] == pytest.approx(3 / 3)
    ids = {
        'a.jpg': np.array([3, -1]),
        'b.jpg': np.array([-1]),
        'c.jpg': np.zeros(0)
    }
    split = _tool().calibration(gallery, gt, thr=0.5, gt_ids=ids)
    assert split['labeled_persons'] == 1 and split['labeled_passing'] == 1
    assert split['unlabeled_persons'] == 2
    assert split['unlabeled_covered'] == 0.5
    assert split['unlabeled_passing'] == 0
    with pytest.raises(ValueError, match='no persons'):
        _tool().calibration({}, {'c.jpg': np.zeros((0, 4))})


def test_crowded_persons_are_matched_one_to_one():
    # B's box overlaps A at IoU 0.67: it is B's true detection, not A's
    # duplicate, and A's box cannot be the true detection of both
    gt = {'a.jpg': np.array([[0, 0, 10, 20], [2, 0, 12, 20]], np.float32)}
    both = {
        'a.jpg':
        dict(
            bboxes=np.array([[0, 0, 10, 20], [2, 0, 12, 20]], np.float32),
            scores=np.array([0.9, 0.8], np.float32))
    }
    out = _tool().calibration(both, gt)
    assert out['covered'] == 1.0 and out['duplicates_per_person'] == 0
    assert out['true_score_quantiles']['0.5'] == pytest.approx(0.85)
    one = {
        'a.jpg':
        dict(
            bboxes=np.array([[0, 0, 10, 20]], np.float32),
            scores=np.array([0.9], np.float32))
    }
    out = _tool().calibration(one, gt)
    assert out['covered'] == 0.5 and out['true_passing'] == 0.5
