# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/eval_search.py end to end, on tiny trees in the
released CUHK-SYSU / PRW formats (written by ``make_synthetic``)."""
import json
import re
import warnings

import numpy as np
import pytest

from mmpsearch.datasets import load_cuhk_protocol, load_prw_protocol
from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.results_io import save_search_results
from .eval_utils import load_eval_search
from .eval_utils import search_results as _results
from .ps_eval_reference import ref_search

KEYS = [
    'mAP', 'top1', 'top5', 'top10', 'det_ap', 'det_recall', 'labeled_det_ap',
    'labeled_det_recall'
]


def test_cuhk_perfect_results(trees, tmp_path, capsys):
    root = str(trees / 'cuhk')
    res = str(tmp_path / 'res.pkl')
    protocol = load_cuhk_protocol(root, 100)
    save_search_results(_results(protocol), res)
    out = str(tmp_path / 'm.json')
    summary = load_eval_search().main(
        [res, '--dataset', 'cuhk', '--data-root', root, '--json', out])
    with open(out) as f:
        written = json.load(f)
    assert written == summary
    assert list(written) == KEYS + ['settings']  # run_settings.py
    for k in KEYS[:-2]:
        assert written[k] == pytest.approx(1.0), k
    assert written['labeled_det_recall'] == pytest.approx(1.0)
    # Labeled only: detections of unlabeled persons are false positives (as
    # in the public code); all scores tie, so AP = the labeled share of the
    # persons in images holding a labeled person.
    pids = [
        g.person_ids for g in protocol.gallery.values()
        if (g.person_ids >= 0).any()
    ]
    share = sum((p >= 0).sum() for p in pids) / sum(p.size for p in pids)
    assert share < 1
    assert written['labeled_det_ap'] == pytest.approx(share)
    table = capsys.readouterr().out
    assert 'gallery 100' in table and '100.00' in table


def test_cuhk_several_sizes_match_reference(trees, tmp_path):
    root = str(trees / 'cuhk')
    p100, p50 = load_cuhk_protocol(root, 100), load_cuhk_protocol(root, 50)
    results = _results(p100, np.random.default_rng(0))
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    out = str(tmp_path / 'm.json')
    load_eval_search().main([
        res, '--dataset', 'cuhk', '--data-root', root, '--gallery-size', '50',
        '100', '--json', out
    ])
    with open(out) as f:
        written = json.load(f)
    assert list(written) == ['50', '100', 'settings']
    assert written['settings']['gallery_sizes'] == [50, 100]
    for size, protocol in (('50', p50), ('100', p100)):
        assert list(written[size]) == KEYS
        ap, hits, num_gt = ref_search(results, protocol)
        assert written[size]['mAP'] == pytest.approx(ap.mean(), abs=1e-9)
        assert written[size]['top1'] == pytest.approx(hits[:, 0].mean())
        assert written[size]['top10'] == pytest.approx(hits[:, 2].mean())
    assert written['50']['det_ap'] == written['100']['det_ap']


def test_prw_cross_camera(trees, tmp_path):
    root = str(trees / 'prw')
    protocol = load_prw_protocol(root)
    results = _results(protocol, np.random.default_rng(1))
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    cli = load_eval_search()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        standard = cli.main([res, '--dataset', 'prw', '--data-root', root])
        cross = cli.main(
            [res, '--dataset', 'prw', '--data-root', root, '--cross-camera'])
        for summary, cc in ((standard, False), (cross, True)):
            ap, hits, num_gt = ref_search(results, protocol, cross_camera=cc)
            valid = num_gt > 0
            assert summary['mAP'] == pytest.approx(ap[valid].mean(), abs=1e-9)
            assert summary['top5'] == pytest.approx(hits[valid, 1].mean())
        direct = evaluate_person_search(results, protocol)
    assert {
        k: v
        for k, v in standard.items() if k != 'settings'
    } == {
        k: direct[k]
        for k in KEYS
    }
    assert standard['settings']['camera'] == 'all frames'
    assert cross['settings']['camera'] == 'cross-camera'
    assert standard['settings']['gallery_sizes'] is None
    assert cross['det_ap'] == standard['det_ap']


def test_cli_errors(trees, tmp_path):
    root = str(trees / 'cuhk')
    protocol = load_cuhk_protocol(root, 100)
    cli = load_eval_search()
    results = _results(protocol)
    missing = next(iter(results['gallery']))
    del results['gallery'][missing]
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    with pytest.raises(KeyError, match=missing):
        cli.main([res, '--dataset', 'cuhk', '--data-root', root])
    with pytest.raises(SystemExit, match='unknown CUHK-SYSU gallery size'):
        cli.main([
            res, '--dataset', 'cuhk', '--data-root', root, '--gallery-size',
            '77'
        ])
    with pytest.raises(
            SystemExit,
            match=re.escape('--gallery-size: gallery sizes [50, 50] repeat')):
        cli.main([
            res, '--dataset', 'cuhk', '--data-root', root, '--gallery-size',
            '50', '50'
        ])
    with pytest.raises(SystemExit, match='PRW only'):
        cli.main(
            [res, '--dataset', 'cuhk', '--data-root', root, '--cross-camera'])
    with pytest.raises(SystemExit, match='does not exist'):
        cli.main([
            str(tmp_path / 'nope.pkl'), '--dataset', 'cuhk', '--data-root',
            root
        ])
