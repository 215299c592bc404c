# Copyright (c) mmpsearch contributors. All rights reserved.
import copy

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData

import mmpsearch.datasets
from mmpsearch.evaluation import PersonSearchMetric
from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.results_io import load_search_results
from mmpsearch.registry import METRICS
from .eval_utils import results_to_samples
from .hand_cases import EXPECTED_CUHK, cuhk_case, prw_case


def _samples(results):
    """The test loop's outputs, the query split in shuffled order."""
    order = np.random.default_rng(0).permutation(len(results['query']))
    return results_to_samples(results, order)


@pytest.fixture
def cuhk_protocols(monkeypatch):
    """``load_cuhk_protocol`` replaced by the hand-made protocol; size 50
    keeps only the first image of every gallery list."""
    results, protocol = cuhk_case()
    calls = []

    def fake_load(data_root, gallery_size=100):
        calls.append((data_root, gallery_size))
        p = copy.deepcopy(protocol)
        p.gallery_size = gallery_size
        if gallery_size == 50:
            for q in p.queries:
                q.gallery = q.gallery[:1]
        return p

    monkeypatch.setattr(
        mmpsearch.datasets, 'load_cuhk_protocol', fake_load, raising=False)
    return results, protocol, calls


def _evaluate(metric, samples, batch=3):
    evaluator = Evaluator(metric)
    for i in range(0, len(samples), batch):
        evaluator.process(data_samples=samples[i:i + batch], data_batch=None)
    return evaluator.evaluate(len(samples))


def test_metric_cuhk(cuhk_protocols, tmp_path):
    results, protocol, calls = cuhk_protocols
    out_file = str(tmp_path / 'out' / 'results.pkl')
    metric = METRICS.build(
        dict(
            type='PersonSearchMetric',
            dataset_type='cuhk',
            data_root='data/cuhk',
            gallery_size=[100, 50],
            results_file=out_file))
    assert isinstance(metric, PersonSearchMetric)
    metrics = _evaluate(metric, _samples(results))
    assert calls == [('data/cuhk', 100), ('data/cuhk', 50)]
    expected = np.array(EXPECTED_CUHK, dtype=float)
    assert metrics['search/mAP'] == pytest.approx(expected[:, 0].mean())
    assert metrics['search/top1'] == pytest.approx(2 / 7)
    assert metrics['search/top5'] == pytest.approx(5 / 7)
    assert metrics['search/top10'] == pytest.approx(5 / 7)
    for key in ('det_ap', 'det_recall', 'labeled_det_ap', 'labeled_det_recall',
                'mAP_g50', 'top1_g50', 'top5_g50', 'top10_g50'):
        assert 0.0 <= metrics[f'search/{key}'] <= 1.0
    # Size 50: only a.jpg for query 0 -> 1 of 1 found at rank 2 -> AP 1/2.
    assert metrics['search/mAP_g50'] != metrics['search/mAP']
    # The dumped results score to the same numbers offline.
    saved = load_search_results(out_file, protocol)
    offline = evaluate_person_search(saved, protocol)
    for k, v in offline.items():
        assert metrics[f'search/{k}'] == pytest.approx(v, abs=1e-12)
    assert offline == evaluate_person_search(results, protocol)
    # An existing results file is not overwritten.
    with pytest.raises(FileExistsError, match='already exists'):
        PersonSearchMetric('cuhk', 'data/cuhk', results_file=out_file)
    metric = PersonSearchMetric(
        'cuhk', 'data/cuhk', results_file=out_file, overwrite=True)
    _evaluate(metric, _samples(results))


def test_metric_accepts_data_samples_directly(cuhk_protocols):
    results, _, _ = cuhk_protocols
    metric = PersonSearchMetric('cuhk', 'root', prefix='cuhk')
    metric.process(None, _samples(results))
    metrics = metric.evaluate(len(metric.results))
    assert metrics['cuhk/top1'] == pytest.approx(2 / 7)
    # The protocol is read once and kept.
    metric.process(None, _samples(results))
    assert metric.evaluate(len(metric.results)) == metrics


def test_metric_prw_cross_camera(monkeypatch):
    results, protocol = prw_case()
    monkeypatch.setattr(
        mmpsearch.datasets,
        'load_prw_protocol',
        lambda root: protocol,
        raising=False)
    metric = PersonSearchMetric('prw', 'data/prw', cross_camera=True)
    with pytest.warns(UserWarning, match='left out'):
        metrics = _evaluate(metric, _samples(results))
    assert metrics['search/mAP'] == pytest.approx(5 / 18)
    assert metrics['search/mAP_cross_cam'] == pytest.approx(1 / 6)
    assert metrics['search/top5_cross_cam'] == 1.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(dataset_type='cuhk', gallery_size=123), 'unknown CUHK-SYSU gallery '
     'size 123'),
    (dict(dataset_type='cuhk', gallery_size=[100, 100]), 'repeat'),
    (dict(dataset_type='market'), 'dataset_type'),
    (dict(dataset_type='prw', gallery_size=50), 'CUHK-SYSU only'),
    (dict(dataset_type='cuhk', cross_camera=True), 'PRW only'),
    (dict(dataset_type='cuhk', score_thr=5), 'score_thr'),
])
def test_metric_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PersonSearchMetric(data_root='x', **kwargs)


def _predictions(n: int, embeddings: bool = True) -> InstanceData:
    """``n`` zero boxes of score 1 with zero 2-d embeddings (or none)."""
    pred = InstanceData(bboxes=torch.zeros(n, 4), scores=torch.ones(n))
    if embeddings:
        pred.embeddings = torch.zeros(n, 2)
    return pred


def test_metric_bad_outputs(cuhk_protocols):
    results, _, _ = cuhk_protocols
    samples = _samples(results)
    metric = PersonSearchMetric('cuhk', 'root')
    bad = samples[-1]
    bad.pred_instances = _predictions(2)
    with pytest.raises(ValueError, match='expected exactly 1'):
        metric.process(None, [bad])
    no_emb = samples[0]
    no_emb.pred_instances = _predictions(1, embeddings=False)
    with pytest.raises(KeyError, match="lack 'embeddings'"):
        metric.process(None, [no_emb])
    train = DetDataSample(metainfo=dict(img_id='x.jpg', split='train'))
    train.pred_instances = _predictions(0)
    with pytest.raises(ValueError, match="split 'train'"):
        metric.process(None, [train])


def test_metric_missing_outputs(cuhk_protocols):
    results, _, _ = cuhk_protocols
    samples = _samples(results)
    # A gallery image never processed -> named in the error.
    gallery_missing = [
        s for s in samples if s.metainfo.get('img_id') != 'd.jpg'
        or s.metainfo['split'] != 'gallery'
    ]
    metric = PersonSearchMetric('cuhk', 'root')
    metric.process(None, gallery_missing)
    with pytest.raises(KeyError, match='d.jpg'):
        metric.evaluate(len(metric.results))
    # A query index missing -> error.
    metric = PersonSearchMetric('cuhk', 'root')
    metric.process(None,
                   [s for s in samples if s.metainfo.get('query_index') != 3])
    with pytest.raises(ValueError, match=r'missing e.g. \[3\]'):
        metric.evaluate(len(metric.results))
