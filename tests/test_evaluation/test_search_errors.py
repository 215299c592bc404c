# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/search_errors.py: its per-query APs are the
protocol's, and each false match is put in the right kind."""
import numpy as np
import pytest

from mmpsearch.datasets.protocol import GalleryImage, Query, SearchProtocol
from mmpsearch.evaluation.functional import evaluate_person_search
from ..conftest import load_tool
from .ps_eval_synthetic import make_case


def _tool():
    return load_tool('tools/analysis_tools/search_errors.py')


@pytest.mark.parametrize('kind', ['cuhk', 'prw'])
@pytest.mark.parametrize('seed', range(4))
def test_map_is_the_protocols(kind, seed):
    results, protocol = make_case(seed, kind)
    ref = evaluate_person_search(results, protocol, score_thr=0.5)['mAP']
    out = _tool().search_errors(results, protocol, kind, 0.5)
    assert out['mAP'] == pytest.approx(ref, abs=1e-9)
    # removing false matches never lowers a ranking's AP
    assert all(g >= -1e-12 for g in out['gain_if_removed'].values())


def _unit(*v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_kinds_and_gains():
    person = [10, 10, 30, 70]
    other = [100, 10, 120, 70]
    gallery = {
        # holds the query person (id 1) and another person (id 2)
        'a.jpg':
        GalleryImage('a.jpg', np.array([person, other], np.float32),
                     np.array([1, 2])),
        # holds an unlabeled person only
        'b.jpg':
        GalleryImage('b.jpg', np.array([person], np.float32), np.array([-1])),
    }
    query = Query(
        'q.jpg',
        np.array(person, np.float32),
        1,
        gallery=[('a.jpg', np.array(person, np.float32)), ('b.jpg', None)])
    protocol = SearchProtocol('cuhk', gallery, [query], 2)
    e = _unit(1, 0, 0)
    results = dict(
        query=[
            dict(
                img_id='q.jpg', bbox=np.array(person, np.float32), embedding=e)
        ],
        gallery={
            'a.jpg':
            dict(
                bboxes=np.array(
                    [person, [10, 40, 30, 100], other, [200, 200, 220, 230]],
                    np.float32),
                scores=np.array([0.9, 0.8, 0.9, 0.7], np.float32),
                # true 0.6; a half box on the query person 0.95; another
                # person 0.9; background 0.3 (below the true match)
                embeddings=np.stack([
                    _unit(0.6, 0.8, 0),
                    _unit(0.95, 0.31, 0),
                    _unit(0.9, 0, 0.44),
                    _unit(0.3, 0.95, 0)
                ])),
            'b.jpg':
            dict(
                bboxes=np.array([[12, 14, 32, 74], [0, 0, 5, 5]], np.float32),
                # an unlabeled person 0.8 (poorly placed: IoU ~0.75 -> a
                # full match); a detection under the score threshold
                scores=np.array([0.6, 0.4], np.float32),
                embeddings=np.stack([_unit(0.8, 0.6, 0),
                                     _unit(1, 0, 0)])),
        })
    out = _tool().search_errors(results, protocol, 'cuhk', 0.5)
    # the true match ranks 4th of 5: AP 1/4
    assert out['mAP'] == pytest.approx(0.25)
    per = out['outranking_per_query']
    assert per == dict(
        query_person=1, other_person=2, other_person_poor_box=0, background=0)
    gain = out['gain_if_removed']
    assert gain['query_person'] == pytest.approx(1 / 3 - 0.25)
    assert gain['other_person'] == pytest.approx(1 / 2 - 0.25)
    assert gain['background'] == 0 and gain['missed'] == 0
    assert out['found'] == 1
