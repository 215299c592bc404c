# Copyright (c) mmpsearch contributors. All rights reserved.
import warnings

import numpy as np
import pytest

from mmpsearch.evaluation.functional import (average_precision, count_at_least,
                                             eval_detection, eval_search_cuhk,
                                             eval_search_prw,
                                             evaluate_person_search,
                                             pack_gallery_detections,
                                             paired_iou, search_iou_threshold)
from mmpsearch.evaluation.functional.gallery import unique_rows
from .hand_cases import EXPECTED_CUHK, cuhk_case, detection_case, prw_case
from .ps_eval_reference import ref_ap, ref_detection, ref_search
from .ps_eval_synthetic import make_case


def _run(results, protocol, cross_camera=False, score_thr=0.5):
    pack = pack_gallery_detections(results['gallery'], list(protocol.gallery),
                                   score_thr)
    q = np.stack([x['embedding'] for x in results['query']])
    if protocol.name == 'cuhk':
        return eval_search_cuhk(pack, q, protocol)
    return eval_search_prw(pack, q, protocol, cross_camera)


# ----------------------------------------------------------- hand-computed


def test_cuhk_hand_case():
    results, protocol = cuhk_case()
    out = _run(results, protocol)
    expected = np.array(EXPECTED_CUHK, dtype=float)
    np.testing.assert_allclose(out['ap'], expected[:, 0], atol=1e-7)
    np.testing.assert_array_equal(out['hits'], expected[:, 1:].astype(bool))
    np.testing.assert_array_equal(out['num_gt'], [3, 1, 1, 1, 1, 2, 1])
    np.testing.assert_array_equal(out['num_tp'], [1, 1, 0, 1, 0, 1, 1])
    assert out['mAP'] == pytest.approx(expected[:, 0].mean(), abs=1e-7)
    assert out['top1'] == pytest.approx(2 / 7)
    assert out['top5'] == pytest.approx(5 / 7)
    # The plain reference agrees on the same case.
    ap, hits, num_gt = ref_search(results, protocol)
    np.testing.assert_allclose(out['ap'], ap, atol=1e-7)
    np.testing.assert_array_equal(out['hits'], hits)


def test_score_threshold_changes_the_ranking():
    """With threshold 0.3 the sim-1 false alarm of c.jpg (score 0.4) is
    kept and ranks first for the first query."""
    results, protocol = cuhk_case()
    out = _run(results, protocol, score_thr=0.3)
    assert out['ap'][0] == pytest.approx(1 / 5 * 1 / 3)
    assert out['ap'][3] == pytest.approx(1.0)


def test_prw_hand_case_standard_and_cross_camera():
    results, protocol = prw_case()
    with pytest.warns(UserWarning, match='1 of 2 queries'):
        out = _run(results, protocol)
    # .96 F, .923 F, .8 TP, .6 TP; 2 of the 3 frames holding id 7 found.
    assert out['ap'][0] == pytest.approx((1 / 3 + 2 / 4) / 2 * 2 / 3)
    np.testing.assert_array_equal(out['hits'][0], [False, True, True])
    np.testing.assert_array_equal(out['num_gt'], [3, 0])
    assert out['mAP'] == pytest.approx(5 / 18)  # query 1 is left out
    assert out['top5'] == 1.0
    with pytest.warns(UserWarning):
        cross = _run(results, protocol, cross_camera=True)
    # Camera 1 is skipped: .96 F, .923 F, .6 TP; 1 of 2 frames found.
    assert cross['ap'][0] == pytest.approx(1 / 3 * 1 / 2)
    np.testing.assert_array_equal(cross['num_gt'], [2, 0])
    for scores, kw in ((out, {}), (cross, dict(cross_camera=True))):
        ap, hits, num_gt = ref_search(results, protocol, **kw)
        np.testing.assert_allclose(scores['ap'], ap, atol=1e-7)
        np.testing.assert_array_equal(scores['hits'], hits)
        np.testing.assert_array_equal(scores['num_gt'], num_gt)


def test_no_query_with_a_ground_truth_is_an_error():
    results, protocol = prw_case()
    protocol.queries = protocol.queries[1:]
    results['query'] = results['query'][1:]
    with pytest.raises(ValueError, match='no query has a gallery image'):
        _run(results, protocol)


def test_query_absent_from_all_detections():
    results, protocol = cuhk_case()
    for item in results['gallery'].values():
        item['scores'][:] = 0.1  # everything below the threshold
    out = _run(results, protocol)
    assert out['mAP'] == 0.0 and out['top10'] == 0.0
    assert not out['hits'].any()


def test_detection_hand_case():
    results, protocol = detection_case()
    pack = pack_gallery_detections(results['gallery'], list(protocol.gallery))
    det = eval_detection(pack, protocol)
    # TPs: the exact boxes of both persons; i3's detection is a false alarm.
    # Ranking .95 F, .9 T, .8 F, .7 T, .6 F -> AP .5, recall 2/3.
    assert det['recall'] == pytest.approx(2 / 3)
    assert det['ap'] == pytest.approx(0.5 * 2 / 3)
    lab = eval_detection(pack, protocol, labeled_only=True)
    # Labeled: persons 0 (i1) and 1 (i2); i3 has none and is left out.
    assert lab['recall'] == pytest.approx(0.5)
    assert lab['ap'] == pytest.approx(0.5)
    assert (det['recall'],
            det['ap']) == pytest.approx(ref_detection(results, protocol))
    assert (lab['recall'], lab['ap']) == pytest.approx(
        ref_detection(results, protocol, labeled_only=True))


def test_detection_one_to_one_on_argmax_ties():
    """A detection equally close to two persons matches the first; a
    second identical detection then matches nobody."""
    from mmpsearch.datasets.protocol import SearchProtocol
    from .hand_cases import dets, image
    box = [0, 0, 10, 10]
    protocol = SearchProtocol('cuhk',
                              {'x.jpg': image('x.jpg', [box, box], [0, 1])},
                              [])
    results = {'x.jpg': dets((box, 0.0, 0.9), (box, 0.0, 0.8))}
    pack = pack_gallery_detections(results, ['x.jpg'])
    det = eval_detection(pack, protocol)
    assert det['recall'] == pytest.approx(0.5)
    assert det['ap'] == pytest.approx(0.5)


# ------------------------------------------------------------- primitives


def test_iou_and_threshold():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(paired_iou(a, b), [1 / 3, 0, 0])
    np.testing.assert_allclose(
        search_iou_threshold([[0, 0, 10, 20], [0, 0, 100, 200]]), [1 / 3, 0.5])


@pytest.mark.parametrize('seed', range(40))
def test_average_precision_matches_plain_tie_grouped_ap(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    values = rng.standard_normal(int(rng.integers(1, 6))).astype(np.float32)
    score = rng.choice(values, n)
    label = rng.random(n) < 0.4
    assert average_precision(label, score) == pytest.approx(
        ref_ap(label, score), abs=1e-12)


def test_average_precision_groups_ties():
    # One tie group holding the positive: precision 1/2, not 1 or 1/2 by
    # order.
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision(
        [1, 0, 1], [0.9, 0.5, 0.5]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision([0, 0], [0.1, 0.2]) == 0.0


def test_count_at_least():
    rng = np.random.default_rng(0)
    rows = np.sort(rng.integers(0, 5, (6, 9)).astype(np.float32), axis=1)
    rows[2, :4] = -np.inf
    r = rng.integers(0, 6, 50)
    v = rng.integers(0, 6, 50).astype(np.float32)
    expected = [(rows[i] >= x).sum() for i, x in zip(r, v)]
    np.testing.assert_array_equal(count_at_least(rows, r, v), expected)


def test_unique_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 5)).astype(np.float32)
    x[7] = x[3]
    x[40] = x[3]
    u, inv = unique_rows(x)
    assert u.shape == (48, 5)
    np.testing.assert_array_equal(u[inv], x)
    assert inv[3] == inv[7] == inv[40] == 3
    u, inv = unique_rows(x[[0, 1, 2]])
    np.testing.assert_array_equal(inv, [0, 1, 2])


# ------------------------------------------------- against the reference


def _compare(results, protocol, cross_camera=False):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ap, hits, num_gt = ref_search(
            results, protocol, cross_camera=cross_camera)
        if not (num_gt > 0).any():
            with pytest.raises(ValueError):
                _run(results, protocol, cross_camera)
            return
        out = _run(results, protocol, cross_camera)
    np.testing.assert_array_equal(out['num_gt'], num_gt)
    np.testing.assert_allclose(out['ap'], ap, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out['hits'], hits)
    valid = num_gt > 0
    assert out['mAP'] == pytest.approx(ap[valid].mean(), abs=1e-9)


@pytest.mark.parametrize('seed', range(25))
def test_cuhk_matches_reference(seed):
    # Exact similarities with many ties (8 values in D=8, or 33 in D=32).
    dim, nnz = (8, 4) if seed % 2 else (32, 16)
    results, protocol = make_case(seed, 'cuhk', dim=dim, nnz=nnz)
    _compare(results, protocol)


@pytest.mark.parametrize('seed', range(25))
def test_prw_matches_reference(seed):
    dim, nnz = (8, 4) if seed % 2 else (32, 16)
    results, protocol = make_case(seed, 'prw', dim=dim, nnz=nnz)
    _compare(results, protocol)
    _compare(results, protocol, cross_camera=True)


@pytest.mark.parametrize('seed', range(6))
def test_gaussian_embeddings_match_reference(seed):
    for kind in ('cuhk', 'prw'):
        results, protocol = make_case(100 + seed, kind, exact=False, dim=16)
        _compare(results, protocol)


@pytest.mark.parametrize('seed', range(12))
def test_detection_matches_reference(seed):
    results, protocol = make_case(seed, 'cuhk')
    pack = pack_gallery_detections(results['gallery'], list(protocol.gallery))
    for labeled_only in (False, True):
        det = eval_detection(pack, protocol, labeled_only=labeled_only)
        recall, ap = ref_detection(
            results, protocol, labeled_only=labeled_only)
        assert det['recall'] == pytest.approx(recall, abs=1e-12)
        assert det['ap'] == pytest.approx(ap, abs=1e-12)


def test_blocks_do_not_change_the_result():
    results, protocol = make_case(3, 'prw', n_img=30, n_query=25)
    pack = pack_gallery_detections(results['gallery'], list(protocol.gallery))
    q = np.stack([x['embedding'] for x in results['query']])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        one = eval_search_prw(pack, q, protocol, block_elems=1)
        many = eval_search_prw(pack, q, protocol, block_elems=1 << 30)
    np.testing.assert_array_equal(one['ap'], many['ap'])
    np.testing.assert_array_equal(one['hits'], many['hits'])


def test_order_of_images_and_detections_does_not_matter():
    results, protocol = make_case(5, 'cuhk')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = _run(results, protocol)
        rng = np.random.default_rng(0)
        for item in results['gallery'].values():
            p = rng.permutation(item['scores'].shape[0])
            for k in ('bboxes', 'scores', 'embeddings'):
                item[k] = item[k][p]
        for q in protocol.queries:
            q.gallery = [q.gallery[i] for i in rng.permutation(len(q.gallery))]
        names = list(protocol.gallery)[::-1]
        protocol.gallery = {n: protocol.gallery[n] for n in names}
        out = _run(results, protocol)
    np.testing.assert_allclose(out['ap'], ref['ap'], atol=1e-12)
    np.testing.assert_array_equal(out['hits'], ref['hits'])


def test_evaluate_person_search_keys():
    results, protocol = cuhk_case()
    out = evaluate_person_search(results, protocol)
    assert list(out) == [
        'mAP', 'top1', 'top5', 'top10', 'det_ap', 'det_recall',
        'labeled_det_ap', 'labeled_det_recall'
    ]
    assert all(0.0 <= v <= 1.0 for v in out.values())
    results, protocol = prw_case()
    with pytest.warns(UserWarning):
        out = evaluate_person_search(results, protocol, cross_camera=True)
    assert out['mAP'] == pytest.approx(5 / 18)
    assert out['mAP_cross_cam'] == pytest.approx(1 / 6)


def test_pairwise_iou_is_paired_iou_of_every_pair():
    from mmpsearch.evaluation.functional.box_ops import pairwise_iou
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    out = pairwise_iou(a, b)
    assert out.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert out[i, j] == paired_iou(a[i:i + 1], b[j:j + 1])[0]
    assert out[0, 0] == 1 and out[1, 0] == pytest.approx(25 / 175)
    assert pairwise_iou(a, np.zeros((0, 4))).shape == (3, 0)
    assert pairwise_iou(np.zeros((0, 4)), b).shape == (0, 2)
