# Copyright (c) mmpsearch contributors. All rights reserved.
"""The settings a person-search number was measured with, and the seeds of
a model's test-time randomness.

``tools/test.py --json`` and ``tools/analysis_tools/eval_search.py --json``
write the metrics with a ``"settings"`` object beside them (see
``docs/en/results_format.md``)::

    {"mAP": ..., ..., "settings": {
        "dataset": "cuhk", "score_thr": 0.5, "gallery_sizes": [100],
        "camera": null, "cbgm": false, "cbgm_k1": null, "cbgm_k2": null,
        "subset": null,
        "model": "PSDiff", "sampling_steps": 8, "num_passes": 3,
        "num_proposals": 300, "sampler": "DDIMSampler",
        "use_ensemble": false, "box_renewal": true,
        "model_score_thr": 0.5, "seeds": [0],
        "seed_keys": ["model.test_cfg.seed"]}}

The model keys come from the model for ``tools/test.py`` and from the
``"meta"`` entry of the results file for ``eval_search.py`` (``tools/test.py
--out`` stores them there); they are null where unknown or where the model
has no such setting.

Test-time seeds: the model says where its test-time randomness is seeded
(``BasePersonSearcher.test_seed_keys`` / ``set_test_seed``). PSDiff:
``test_cfg.seed`` (its initial boxes / embeddings and the sampler noise). A
Stable Diffusion backbone (DiffPS, PSDiff on SD) with a posterior sample or
forward noise: ``backbone.noise_seed``. A model with both gets the same seed
in both. The two-step baseline has no test-time randomness: no keys.
"""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

SETTINGS_KEY = 'settings'
#: Where ``tools/test.py --out`` keeps the model settings in a results file.
RESULTS_META_KEY = 'meta'
EVAL_SETTING_KEYS = ('dataset', 'score_thr', 'gallery_sizes', 'camera', 'cbgm',
                     'cbgm_k1', 'cbgm_k2', 'subset')
MODEL_SETTING_KEYS = ('model', 'sampling_steps', 'num_passes', 'num_proposals',
                      'sampler', 'use_ensemble', 'box_renewal',
                      'model_score_thr', 'seeds', 'seed_keys')
ALL_FRAMES = 'all frames'
CROSS_CAMERA = 'cross-camera'


def _plain(value: Any) -> Any:
    """``value`` as JSON-friendly builtins (numpy / torch numbers, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    item = getattr(value, 'item', None)
    if callable(item):
        return _plain(item())
    return str(value)


def evaluation_settings(dataset: Optional[str],
                        score_thr: Optional[float],
                        gallery_sizes: Optional[Sequence[int]] = None,
                        camera: Optional[str] = None,
                        cbgm: Any = None,
                        cbgm_k1: Optional[int] = None,
                        cbgm_k2: Optional[int] = None,
                        subset: Optional[str] = None) -> dict:
    """The protocol settings (``EVAL_SETTING_KEYS``).

    ``gallery_sizes`` is null for PRW (its gallery is all test frames but
    the query's own), ``camera`` null for CUHK-SYSU. ``cbgm`` may be a bool
    or a dict with ``k1`` / ``k2``; k1 / k2 are null when CBGM is off.
    """
    if isinstance(cbgm, dict):
        cbgm_k1 = cbgm.get('k1', cbgm_k1)
        cbgm_k2 = cbgm.get('k2', cbgm_k2)
        cbgm = True
    cbgm = bool(cbgm)
    if dataset == 'prw':
        gallery_sizes = None
        camera = camera or ALL_FRAMES
    elif dataset == 'cuhk':
        camera = None
    return _plain(
        dict(
            dataset=dataset,
            score_thr=score_thr,
            gallery_sizes=list(gallery_sizes) if gallery_sizes else None,
            camera=camera,
            cbgm=cbgm,
            cbgm_k1=cbgm_k1 if cbgm else None,
            cbgm_k2=cbgm_k2 if cbgm else None,
            subset=subset or None))


def metric_settings(metric: Any) -> dict:
    """:func:`evaluation_settings` of a ``PersonSearchMetric`` (attributes
    read with defaults, so a metric without CBGM / subsets works)."""
    dataset = getattr(metric, 'dataset_type', None)
    camera = None
    if dataset == 'prw':
        camera = ALL_FRAMES
        if getattr(metric, 'cross_camera', False):
            # the unsuffixed keys stay the standard protocol
            camera = f'{ALL_FRAMES}; *_cross_cam keys: {CROSS_CAMERA}'
    return evaluation_settings(
        dataset,
        getattr(metric, 'score_thr', None),
        getattr(metric, 'gallery_sizes', None),
        camera,
        cbgm=getattr(metric, 'cbgm', None),
        cbgm_k1=getattr(metric, 'cbgm_k1', None),
        cbgm_k2=getattr(metric, 'cbgm_k2', None),
        subset=getattr(metric, 'subset', None))


def unwrap_model(model: Any) -> Any:
    """The model inside a DDP / MMDistributedDataParallel wrapper."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def seed_keys(model: Any) -> List[str]:
    """Where ``model``'s test-time randomness is seeded (attribute paths
    under the model, e.g. ``'test_cfg.seed'``), as the model says
    (``BasePersonSearcher.test_seed_keys``); empty if it has none."""
    keys = getattr(unwrap_model(model), 'test_seed_keys', None)
    return list(keys()) if callable(keys) else []


def set_seed(model: Any, seed: int) -> List[str]:
    """Seed every test-time randomness of ``model`` with ``seed``
    (``BasePersonSearcher.set_test_seed``); returns the keys set."""
    model = unwrap_model(model)
    return model.set_test_seed(seed) if seed_keys(model) else []


def model_settings(model: Any, seeds: Optional[Sequence[int]] = None) -> dict:
    """The model's test-time settings (``MODEL_SETTING_KEYS``), as the model
    reports them (``BasePersonSearcher.test_settings``; all null for a
    model that does not).

    ``seeds``: the seeds the numbers average over (``tools/test.py
    --seeds``); by default the one the model holds now. Null for a model
    without test-time randomness (and for PSDiff with ``seed=None``, which
    draws from torch's global generator).
    """
    model = unwrap_model(model)
    keys = seed_keys(model)
    report = getattr(model, 'test_settings', None)
    settings = dict(report()) if callable(report) else {}
    if seeds is None and keys:
        seeds = model.test_seed()
        seeds = [seeds] if isinstance(seeds, int) else seeds
    return _plain(
        dict(
            model=type(model).__name__,
            **{k: settings.get(k)
               for k in MODEL_SETTING_KEYS[1:-2]},
            seeds=list(seeds) if isinstance(seeds, (list, tuple)) else seeds,
            seed_keys=[f'model.{k}' for k in keys] or None))


def settings_from_meta(meta: Any) -> dict:
    """The model settings stored in a results file's ``"meta"`` (all null
    when the file has none, e.g. one written by another tool)."""
    meta = meta if isinstance(meta, dict) else {}
    return {k: _plain(meta.get(k)) for k in MODEL_SETTING_KEYS}


def seed_path(path: str, seed: int) -> str:
    """``path`` with ``_seed{seed}`` before its extension
    (``results.pkl`` -> ``results_seed0.pkl``)."""
    root, ext = osp.splitext(path)
    return f'{root}_seed{int(seed)}{ext}'


def mean_std(runs: Sequence[Dict[str, Any]]) -> tuple:
    """Per numeric key of ``runs`` (dicts with the same keys): the mean and
    the sample standard deviation (ddof=1; None for a single run)."""
    keys = [
        k for k in runs[0] if all(
            isinstance(r.get(k), (int, float, np.number))
            and not isinstance(r.get(k), bool) for r in runs)
    ]
    mean, std = {}, {}
    for k in keys:
        values = np.asarray([float(r[k]) for r in runs], np.float64)
        mean[k] = float(values.mean())
        std[k] = float(values.std(ddof=1)) if len(values) > 1 else None
    return mean, std
