# Copyright (c) mmpsearch contributors. All rights reserved.
"""Results files get the checks GalleryIndex applies (one function,
``mmpsearch.utils.detections``), a results path that is a folder is named
as one, CBGM's k1 / k2 are bounded by what the results hold, and CBGM on a
perfect results file lowers mAP on purpose (SeqNet's rule,
docs/en/refusals.md)."""
import numpy as np
import pytest

from mmpsearch.apis import GalleryIndex
from mmpsearch.datasets import load_cuhk_protocol, load_prw_protocol
from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.results_io import (load_search_results,
                                             save_search_results,
                                             validate_search_results)
from .eval_utils import load_eval_search
from .hand_cases import cuhk_case
from .test_eval_search_cli import _results as perfect_results


def _set(img, key, index, value):
    return lambda r: r['gallery'][img][key].__setitem__(index, value)


def _zero_width(r):
    for g in r['gallery'].values():
        g['embeddings'] = g['embeddings'][:, :0].copy()
    for q in r['query']:
        q['embedding'] = q['embedding'][:0].copy()


# Each used to be scored (numbers changed silently) or failed raw.
BAD_DETECTIONS = [
    # x1 > x2: a negative area, IoU 0 with every person (det_ap fell)
    (_set('a.jpg', 'bboxes', (0, 0), 150.0), "gallery image 'a.jpg': bboxes"
     ' row 0 = [150.0, 0.0, 100.0, 200.0] has x2 < x1 or y2 < y1'),
    # far outside any image: scored as a false alarm
    (_set('a.jpg', 'bboxes', (1, 0), -10000.0),
     "gallery image 'a.jpg': bboxes row 1 = [-10000.0, 300.0, 400.0, 500.0]"
     ' is far outside any image'),
    (_set('a.jpg', 'bboxes', (1, 2), 3e38), "gallery image 'a.jpg': bboxes"
     ' row 1 = [300.0, 300.0, 3.0000000054977558e+38, 500.0] is far outside'),
    # scores outside [0, 1] crossed the score threshold
    (_set('a.jpg', 'scores', 0,
          1.5), "gallery image 'a.jpg': scores row 0 = 1.5 is outside [0, 1]"),
    (_set('a.jpg', 'scores', 0, -0.5),
     "gallery image 'a.jpg': scores row 0 = -0.5 is outside [0, 1]"),
    # zero-width embeddings: a raw numpy reshape error
    (_zero_width, 'query 0: embedding has width 0; expected D >= 1'),
    # an all-zero query is as similar to everything: the file order ranked
    (lambda r: r['query'][3].update(embedding=np.zeros(2, np.float32)),
     'query 3: embedding is all zeros (norm 0)'),
]


@pytest.mark.parametrize('mutate, text', BAD_DETECTIONS)
def test_bad_detections_are_refused_naming_image_row_and_value(
        tmp_path, mutate, text):
    results, protocol = cuhk_case()
    mutate(results)
    with pytest.raises(ValueError) as e:
        validate_search_results(results, protocol, source='res.pkl')
    assert str(e.value).startswith('res.pkl: ') and text in str(e.value)
    # scoring validates first: no number comes out
    with pytest.raises(ValueError, match='res|results'):
        evaluate_person_search(results, protocol)
    # and a file with them is not written
    with pytest.raises(ValueError):
        save_search_results(results, str(tmp_path / 'bad.pkl'))
    assert not (tmp_path / 'bad.pkl').exists()


@pytest.mark.parametrize('row, text', [
    (dict(bboxes=[[9, 5, 5, 30]]), 'bboxes row 0 = [9.0, 5.0, 5.0, 30.0] '
     'has x2 < x1 or y2 < y1'),
    (dict(bboxes=[[-10000, 5, 5, 30]]), 'bboxes row 0 = [-10000.0, 5.0, '
     '5.0, 30.0] is far outside any image'),
    (dict(scores=[1.5]), 'scores row 0 = 1.5 is outside [0, 1]'),
    (dict(embeddings=np.ones((1, 0))), 'embeddings has shape (1, 0); '
     'expected D >= 1'),
])
def test_gallery_index_refuses_the_same_rows_with_the_same_words(row, text):
    arrays = dict(
        bboxes=[[0, 0, 5, 9]],
        scores=[0.9],
        embeddings=np.ones((1, 3)),
        image_inds=[0])
    arrays.update(row)
    with pytest.raises(ValueError) as e:
        GalleryIndex(['a.jpg'], **arrays)
    assert str(e.value).startswith(f'GalleryIndex: {text}'), str(e.value)
    if 'embeddings' in row:  # in a results file: the queries' width first
        return
    # a results file's image with that row: the same words after its name
    results, _ = cuhk_case()
    results['gallery']['zz.jpg'] = dict(
        bboxes=np.asarray(arrays['bboxes'], np.float32),
        scores=np.asarray(arrays['scores'], np.float32),
        embeddings=np.ones((1, 2), np.float32))
    with pytest.raises(ValueError) as e:
        validate_search_results(results)
    assert f"gallery image 'zz.jpg': {text}" in str(e.value)


def test_legitimate_boxes_near_the_border_are_kept():
    results, protocol = cuhk_case()
    # a little outside the image, as unclipped detectors give
    results['gallery']['a.jpg']['bboxes'][1] = [-20.5, -3, 400, 500]
    results['gallery']['a.jpg']['scores'][:] = [0.0, 1.0]
    validate_search_results(results, protocol)


def test_a_results_path_that_is_a_folder_is_named_as_one(tmp_path, trees):
    folder = tmp_path / 'res.pkl'
    folder.mkdir()
    with pytest.raises(
            FileNotFoundError,
            match=f'{folder} is a folder, not a file; expected a results file'
    ):
        load_search_results(str(folder))
    cli = load_eval_search()
    with pytest.raises(SystemExit, match=f'{folder} is a folder'):
        cli.main([
            str(folder), '--dataset', 'cuhk', '--data-root',
            str(trees / 'cuhk')
        ])


# ------------------------------------------------------------- CBGM bounds
def test_cbgm_k_beyond_what_the_results_hold_is_refused(trees, tmp_path):
    root = str(trees / 'cuhk')
    protocol = load_cuhk_protocol(root, 100)
    results = perfect_results(protocol)
    n_det = sum(len(g['scores']) for g in results['gallery'].values())
    most = max(
        len(results['gallery'][q['img_id']]['scores'])
        for q in results['query'])
    # k2 = 100000 allocated a (Q, k2, D) context: a 7 GB MemoryError
    with pytest.raises(
            ValueError,
            match=rf'cbgm_k2 100000: .* no query image of the '
            rf'results holds more than {most} detections .* '
            rf'expected cbgm_k2 <= {most + 1}'):
        evaluate_person_search(results, protocol, cbgm=True, cbgm_k2=100000)
    with pytest.raises(
            ValueError,
            match=rf'cbgm_k1 {n_det + 1}: .* holds '
            rf'{n_det} detections .* <= {n_det}'):
        evaluate_person_search(results, protocol, cbgm=True, cbgm_k1=n_det + 1)
    # the largest values it can hold, and SeqNet's, are scored
    evaluate_person_search(
        results, protocol, cbgm=True, cbgm_k1=n_det, cbgm_k2=most + 1)
    evaluate_person_search(results, protocol, cbgm=True, cbgm_k1=10, cbgm_k2=3)
    # the CLI names its option and the file, before scoring
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    cli = load_eval_search()
    for opt, value in (('--cbgm-k2', '100000'), ('--cbgm-k1', str(n_det + 1))):
        with pytest.raises(
                SystemExit,
                match=rf'{opt} {value}: .*{res}.* expected '
                rf'{opt} <= '):
            cli.main([
                res, '--dataset', 'cuhk', '--data-root', root, '--cbgm', opt,
                value
            ])


@pytest.mark.parametrize('kind', ['cuhk', 'prw'])
def test_cbgm_lowers_a_perfect_results_file_by_design(trees, kind):
    """SeqNet's rule lifts the query's matched detection to the largest
    matched weight: with perfect embeddings a companion's match is 1.0, so
    wrong detections tie the true match (docs/en/refusals.md)."""
    protocol = load_cuhk_protocol(str(trees / 'cuhk'), 100) \
        if kind == 'cuhk' else load_prw_protocol(str(trees / 'prw'))
    results = perfect_results(protocol)
    plain = evaluate_person_search(results, protocol)
    rerank = evaluate_person_search(results, protocol, cbgm=True)
    assert plain['mAP'] == 1.0 and plain['top1'] == 1.0
    assert rerank['mAP'] < 0.6
