# Copyright (c) mmpsearch contributors. All rights reserved.
"""Thresholds must be numbers in [0, 1].

``scores >= nan`` is False for every detection and ``scores >= 5`` drops
them all, so a NaN or out-of-range score threshold does not fail: it prints
zeros. These checks refuse such a value where it is read, naming the option.
"""
import math
import numbers
from typing import Any

#: Keys of a model's ``test_cfg`` whose values are fractions: detection
#: score thresholds and NMS IoU thresholds (mmdet's ``nms.iou_threshold``),
#: and PSDiff's box-renewal threshold.
UNIT_INTERVAL_KEYS = ('score_thr', 'iou_threshold', 'renewal_thr')


def check_unit_interval(value: Any, name: str) -> float:
    """``value`` as a float, or ValueError naming ``name`` when it is not a
    real number in [0, 1] (NaN, inf, 5, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(float(value)) or not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')
    return float(value)


def check_cfg_thresholds(cfg: Any, prefix: str) -> None:
    """Check every ``score_thr`` / ``iou_threshold`` / ``renewal_thr`` key
    anywhere in ``cfg`` (nested dicts and lists, e.g. mmdet's
    ``test_cfg.rcnn.score_thr``); ``prefix`` is its path for the message,
    e.g. ``'model.test_cfg'``."""
    if cfg is None:
        return
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            path = f'{prefix}.{key}'
            if key in UNIT_INTERVAL_KEYS:
                check_unit_interval(value, path)
            else:
                check_cfg_thresholds(value, path)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            check_cfg_thresholds(value, f'{prefix}.{i}')
