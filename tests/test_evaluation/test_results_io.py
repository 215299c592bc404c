# Copyright (c) mmpsearch contributors. All rights reserved.
import os
import pickle

import numpy as np
import pytest

from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.results_io import (UnsafeResultsFileError,
                                             load_search_results,
                                             save_search_results,
                                             validate_search_results)
from .hand_cases import cuhk_case


def test_round_trip(tmp_path):
    results, protocol = cuhk_case()
    path = str(tmp_path / 'res.pkl')
    save_search_results(results, path)
    loaded = load_search_results(path, protocol)
    assert list(loaded['gallery']) == list(results['gallery'])
    for k, v in results['gallery'].items():
        for key in ('bboxes', 'scores', 'embeddings'):
            np.testing.assert_array_equal(loaded['gallery'][k][key], v[key])
    assert evaluate_person_search(loaded, protocol) == \
        evaluate_person_search(results, protocol)


def test_refuses_to_overwrite(tmp_path):
    results, _ = cuhk_case()
    path = tmp_path / 'res.pkl'
    path.write_bytes(b'keep me')
    with pytest.raises(FileExistsError, match='already exists'):
        save_search_results(results, str(path))
    assert path.read_bytes() == b'keep me'
    save_search_results(results, str(path), overwrite=True)
    assert load_search_results(str(path))['query'][0]['img_id'] == 'q.jpg'


def test_numpy_pickle_protocols_load(tmp_path):
    results, protocol = cuhk_case()
    for proto in (3, 4, 5):
        path = tmp_path / f'res{proto}.pkl'
        with open(path, 'wb') as f:
            pickle.dump(results, f, protocol=proto)
        load_search_results(str(path), protocol)


class _Payload:

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / 'pwned'
    payload = _Payload()
    payload.marker = str(marker)
    results, _ = cuhk_case()
    results['extra'] = payload
    path = tmp_path / 'evil.pkl'
    with open(path, 'wb') as f:
        pickle.dump(results, f)
    with pytest.raises(UnsafeResultsFileError, match='refusing to load'):
        load_search_results(str(path))
    assert not marker.exists()


def test_numpy_scalar_and_objects_refused(tmp_path):
    path = tmp_path / 'obj.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'gallery': {}, 'query': [np.float32(1.0)]}, f)
    with pytest.raises(UnsafeResultsFileError, match='scalar'):
        load_search_results(str(path))


def test_not_a_pickle(tmp_path):
    path = tmp_path / 'garbage.pkl'
    path.write_bytes(b'\x80\x04garbage')
    with pytest.raises(ValueError, match='not a readable results pickle'):
        load_search_results(str(path))
    with pytest.raises(FileNotFoundError):
        load_search_results(str(tmp_path / 'missing.pkl'))


def test_lacking_a_gallery_image(tmp_path):
    results, protocol = cuhk_case()
    del results['gallery']['d.jpg']
    with pytest.raises(KeyError, match="lacks 1 gallery image.*'d.jpg'"):
        validate_search_results(results, protocol)
    path = str(tmp_path / 'res.pkl')
    save_search_results(results, path)  # fine without a protocol
    with pytest.raises(KeyError, match='d.jpg'):
        load_search_results(path, protocol)
    with pytest.raises(KeyError, match='d.jpg'):
        evaluate_person_search(results, protocol)


def test_extra_gallery_image():
    results, protocol = cuhk_case()
    results['gallery']['zzz.jpg'] = results['gallery']['a.jpg']
    with pytest.raises(KeyError, match="not in the cuhk protocol.*zzz.jpg"):
        validate_search_results(results, protocol)


@pytest.mark.parametrize('mutate, error, match', [
    (lambda r: r['gallery']['a.jpg'].update(
        bboxes=np.zeros((2, 5), np.float32)), ValueError,
     r"'a.jpg' \"bboxes\": expected shape \(2, 4\), got \(2, 5\)"),
    (lambda r: r['gallery']['a.jpg'].update(scores=np.zeros(2, np.float64)),
     TypeError, "'a.jpg' \"scores\": expected dtype float32"),
    (lambda r: r['gallery']['a.jpg'].update(
        embeddings=np.zeros((2, 3), np.float32)), ValueError,
     r"'a.jpg' \"embeddings\": expected shape \(2, 2\), got \(2, 3\)"),
    (lambda r: r['gallery']['a.jpg'].pop('scores'), KeyError,
     "'a.jpg': missing key 'scores'"),
    (lambda r: r['gallery']['a.jpg'].update(embeddings=[[1.0, 0.0], [0.0, 1.0]]
                                            ), TypeError,
     'expected a numpy float32 array'),
    (lambda r: r['query'][1].update(embedding=np.zeros(3, np.float32)),
     ValueError, 'query 1: embedding of width 3, expected 2'),
    (lambda r: r['query'][0].update(bbox=np.zeros((1, 4), np.float32)),
     ValueError, r'query 0 "bbox": expected shape \(4,\)'),
    (lambda r: r['query'][0].pop('img_id'), KeyError,
     "query 0: missing key 'img_id'"),
    (lambda r: r.pop('query'), KeyError, "missing key 'query'"),
    (lambda r: r['query'].__setitem__(2, [1, 2]), TypeError,
     "query 2: expected a dict with keys .* got list"),
    (lambda r: r['gallery'].__setitem__('a.jpg', None), TypeError,
     "'a.jpg': expected a dict with keys .* got NoneType"),
    (lambda r: r['gallery']['b.jpg']['embeddings'].__setitem__(
        (0, 0), np.nan), ValueError,
     r"'b.jpg': embeddings has NaN or infinite values in rows \[0\]"),
])
def test_bad_fields(mutate, error, match):
    results, protocol = cuhk_case()
    mutate(results)
    with pytest.raises(error, match=match):
        validate_search_results(results, protocol)


def test_wrong_number_or_order_of_queries():
    results, protocol = cuhk_case()
    results['query'].pop()
    with pytest.raises(
            ValueError, match='6 queries, but the cuhk protocol '
            'has 7'):
        validate_search_results(results, protocol)
    results, protocol = cuhk_case()
    results['query'][2]['img_id'] = 'a.jpg'
    with pytest.raises(ValueError, match="query 2 is in image 'a.jpg'"):
        validate_search_results(results, protocol)
    results, protocol = cuhk_case()
    results['query'][2]['bbox'] = results['query'][2]['bbox'] + 30
    with pytest.raises(ValueError, match='query 2 .* has box'):
        validate_search_results(results, protocol)
