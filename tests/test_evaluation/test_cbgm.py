# Copyright (c) mmpsearch contributors. All rights reserved.
"""Context Bipartite Graph Matching (CBGM, SeqNet AAAI 2021): hand cases
where the context decides, a plain loop-by-loop reference on random
results, the uninformative-context case, and the option plumbing of the
functional evaluation, ``PersonSearchMetric`` and ``eval_search.py``."""
import copy
import json
import warnings

import numpy as np
import pytest
from mmengine.evaluator import Evaluator
from scipy.optimize import linear_sum_assignment

import mmpsearch.datasets
from mmpsearch.datasets import load_cuhk_protocol, load_prw_protocol
from mmpsearch.datasets.protocol import GalleryImage, Query, SearchProtocol
from mmpsearch.evaluation import PersonSearchMetric
from mmpsearch.evaluation.functional import (CBGM, CBGM_DEFAULTS,
                                             eval_search_cuhk, eval_search_prw,
                                             evaluate_person_search,
                                             pack_gallery_detections,
                                             resolve_cbgm_k)
from mmpsearch.evaluation.results_io import save_search_results
from .eval_utils import load_eval_search, results_to_samples
from .ps_eval_reference import ref_gallery_entries, ref_iou, ref_query_scores
from .ps_eval_synthetic import split_query_gallery

SEARCH = ('mAP', 'top1', 'top5', 'top10')

# ------------------------------------------------------ plain reference


def _unit(x):
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x.astype(np.float64))
    return (x / max(n, 1e-12)).astype(np.float32)


def ref_cbgm_search(results,
                    protocol,
                    k1,
                    k2,
                    score_thr=0.5,
                    cross_camera=False,
                    cbgm=True,
                    iou_thr=0.4,
                    topk=(1, 5, 10)):
    """SeqNet's ``eval_search_cuhk`` / ``eval_search_prw`` with
    ``cbgm=True``, one query, one image, one detection at a time; returns
    per-query AP (times recall), top-k hits and the number of gallery images
    holding the query."""
    kept = {}
    for img_id, item in results['gallery'].items():
        dets = []
        for box, score, emb in zip(item['bboxes'], item['scores'],
                                   item['embeddings']):
            if score >= score_thr:
                dets.append((box, float(score), _unit(emb)))
        kept[img_id] = dets
    aps, hits, num_gts = [], [], []
    for qi, query in enumerate(protocol.queries):
        q_feat = _unit(results['query'][qi]['embedding'])
        entries = ref_gallery_entries(protocol, query, cross_camera)
        # 1. plain similarities of every gallery image (listed once)
        name2sim, name2gt, count_gt = {}, {}, 0
        for img_id, gt in entries:
            if gt is not None:
                count_gt += 1
            if img_id in name2sim:
                continue
            name2sim[img_id] = [
                float(np.dot(f, q_feat)) for _, _, f in kept[img_id]
            ]
            name2gt[img_id] = gt
        # 2. CBGM
        if cbgm:
            all_sims = sorted([s for sims in name2sim.values() for s in sims],
                              reverse=True)
            thr = all_sims[k1 - 1] if len(all_sims) >= k1 else -np.inf
            others = [(score, j, f)
                      for j, (box, score, f) in enumerate(kept[query.img_id])
                      if ref_iou(box, query.box) <= iou_thr]
            others.sort(key=lambda t: (-t[0], t[1]))
            context = [q_feat] + [f for _, _, f in others[:k2 - 1]]
            for img_id, sims in name2sim.items():
                if not sims or max(sims) < thr:
                    continue  # holds none of the top-k1 detections
                feats = [f for _, _, f in kept[img_id]]
                graph = np.zeros((len(context), len(feats)))
                for i, c in enumerate(context):
                    for j, f in enumerate(feats):
                        graph[i,
                              j] = sims[j] if i == 0 else float(np.dot(c, f))
                rows, cols = linear_sum_assignment(graph, maximize=True)
                matched = [(i, j) for i, j in zip(rows, cols)]
                best = max(graph[i, j] for i, j in matched)
                for i, j in matched:
                    if i == 0:
                        sims[j] = best
        # 3. labels, AP and top-k as without CBGM
        images = [(sims, [box for box, _, _ in kept[img_id]], name2gt[img_id])
                  for img_id, sims in name2sim.items()]
        num_gts.append(count_gt)
        ap, hit = ref_query_scores(images, count_gt, topk)
        aps.append(ap)
        hits.append(hit)
    return np.array(aps), np.array(hits, bool), np.array(num_gts)


def _search(results, protocol, k1=None, k2=None, cbgm=True, **kw):
    """``eval_search_*`` with (or without) CBGM."""
    pack = pack_gallery_detections(results['gallery'], list(protocol.gallery),
                                   kw.pop('score_thr', 0.5))
    q = np.stack([x['embedding'] for x in results['query']])
    rerank = None
    if cbgm:
        k1, k2 = resolve_cbgm_k(protocol.name, k1, k2)
        rerank = CBGM.from_results(results, k1, k2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if protocol.name == 'cuhk':
            return eval_search_cuhk(pack, q, protocol, cbgm=rerank)
        return eval_search_prw(pack, q, protocol, cbgm=rerank, **kw)


# ------------------------------------------------------------ hand cases


def _f32(x):
    return np.asarray(x, np.float32)


def _e(*coef):
    """An embedding of the orthonormal basis e0..e3 (normalised later)."""
    return [float(c) for c in coef] + [0.0] * (4 - len(coef))


def _dets(*items):
    """``(box, embedding, score)`` triples -> a gallery results entry."""
    n = len(items)
    return dict(
        bboxes=_f32([b for b, _, _ in items]).reshape(n, 4),
        embeddings=_f32([e for _, e, _ in items]).reshape(n, 4),
        scores=_f32([s for _, _, s in items]).reshape(n))


def _img(img_id, boxes=(), pids=(), cam=-1):
    return GalleryImage(img_id,
                        _f32(boxes).reshape(-1, 4),
                        np.asarray(pids, np.int64).reshape(-1), cam)


L, R, FAR = [0, 0, 50, 100], [100, 0, 150, 100], [300, 0, 350, 100]


def look_alike_case(kind='cuhk'):
    """The query (e0) walks with a companion (e2). Two look-alikes: ``a``
    (similarity 12/13, beside a stranger) and the true person in ``b``
    (similarity 0.8, beside the companion, similarity 0.96 to it). Plain
    ranking puts ``a`` first; CBGM lifts the true person to 0.96."""
    names = ['q', 'a', 'b'] if kind == 'cuhk' else \
        ['c1s1_0', 'c2s1_0', 'c3s1_0']
    q, a, b = (n + '.jpg' for n in names)
    cam = (lambda c: c) if kind == 'prw' else (lambda c: -1)
    gallery = {
        q: _img(q, [L, R], [0, 1], cam(1)),
        a: _img(a, [L, [200, 0, 250, 100]], [-1, -1], cam(2)),
        b: _img(b, [L, R], [0, 1], cam(3)),
    }
    res = {
        # The query's own detection (IoU 1 with the query box: no context),
        # its companion, and a person scoring under the threshold.
        q:
        _dets((L, _e(1), 0.99), (R, _e(0, 0, 1), 0.9),
              (FAR, _e(0, 0, 0, 1), 0.3)),
        a:
        _dets((L, _e(12, 5), 0.9), ([200, 0, 250, 100], _e(0, 1), 0.9)),
        b:
        _dets((L, _e(4, 3), 0.9), (R, _e(0, 0, 24, 7), 0.9)),
    }
    if kind == 'cuhk':
        queries = [Query(q, _f32(L), 0, -1, [(a, None), (b, _f32(L))])]
        protocol = SearchProtocol('cuhk', gallery, queries, 100)
    else:
        queries = [Query(q, _f32(L), 0, 1)]
        protocol = SearchProtocol('prw', gallery, queries)
    results = dict(
        gallery=res,
        query=[dict(img_id=q, bbox=_f32(L), embedding=_f32(_e(1)))])
    return results, protocol


def test_context_decides_cuhk():
    results, protocol = look_alike_case()
    plain = _search(results, protocol, cbgm=False)
    # .923 F (a), .8 T (b), 0, 0: the true person is second.
    assert plain['ap'][0] == pytest.approx(0.5)
    assert plain['hits'][0].tolist() == [False, True, True]
    out = _search(results, protocol)  # SeqNet's k1 = 10, k2 = 3
    # b: {true-query .8, companion-companion .96} -> the true person .96.
    assert out['ap'][0] == pytest.approx(1.0)
    assert out['hits'][0].tolist() == [True, True, True]
    ap, hits, _ = ref_cbgm_search(results, protocol, 10, 3)
    np.testing.assert_allclose(out['ap'], ap, atol=1e-12)
    np.testing.assert_array_equal(out['hits'], hits)
    # Through the public entry point, detection keys unchanged.
    full = evaluate_person_search(results, protocol, cbgm=True)
    base = evaluate_person_search(results, protocol)
    assert (full['mAP'], full['top1']) == pytest.approx((1.0, 1.0))
    assert (base['mAP'], base['top1']) == pytest.approx((0.5, 0.0))
    assert full['det_ap'] == base['det_ap']


def test_context_decides_prw_and_cross_camera():
    results, protocol = look_alike_case('prw')
    for cross in (False, True):
        plain = _search(results, protocol, cbgm=False, cross_camera=cross)
        out = _search(results, protocol, cross_camera=cross)  # 30 / 4
        assert plain['hits'][0, 0] == 0 and out['hits'][0, 0] == 1
        assert out['ap'][0] == pytest.approx(1.0)
    cross = evaluate_person_search(
        results, protocol, cross_camera=True, cbgm=True)
    assert cross['top1_cross_cam'] == 1.0 and cross['top1'] == 1.0


@pytest.mark.parametrize(
    'k1, k2, top1',
    [
        (1, 3, False),  # only a's image (the top detection) is re-scored
        (2, 3, True),  # the top 2 detections: a's and b's images
        (10, 1, False),  # no context: the query alone, nothing changes
        (10, 2, True),  # the companion, not the query's own detection
    ])
def test_k1_and_k2(k1, k2, top1):
    results, protocol = look_alike_case()
    out = _search(results, protocol, k1, k2)
    assert out['hits'][0, 0] == top1
    assert out['ap'][0] == pytest.approx(1.0 if top1 else 0.5)
    ap, hits, _ = ref_cbgm_search(results, protocol, k1, k2)
    np.testing.assert_allclose(out['ap'], ap, atol=1e-12)
    np.testing.assert_array_equal(out['hits'], hits)


def test_query_context_is_taken_from_the_query_image():
    results, protocol = look_alike_case()
    ctx = CBGM.from_results(results, 10, 3)
    # The query, then the companion; the query's own detection overlaps the
    # query box (IoU 1 > 0.4) and the 0.3-score person is dropped.
    assert ctx.length.tolist() == [2]
    np.testing.assert_allclose(ctx.context[0, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(ctx.context[0, 1], [0, 0, 1, 0])
    np.testing.assert_array_equal(ctx.context[0, 2], 0)
    # A lower score threshold admits the weak person, after the companion.
    low = CBGM.from_results(results, 10, 3, score_thr=0.2)
    assert low.length.tolist() == [3]
    np.testing.assert_allclose(low.context[0, 2], [0, 0, 0, 1])
    # Without the overlap rule the query's own detection (score .99) would
    # be the first context person.
    own = CBGM.from_results(results, 10, 2, iou_thr=1.0)
    np.testing.assert_allclose(own.context[0, 1], [1, 0, 0, 0])


def unmatched_query_case():
    """Context: the query (e0), c1 (e1, score .9), c2 (e2, score .8). In
    ``x`` the true person (.6 to the query, .8 to c2) stands beside another
    (.6 to the query, .8 to c1); an impostor in ``y`` has .7."""
    gallery = {
        'q.jpg': _img('q.jpg', [L, R, FAR], [0, 1, 2]),
        'x.jpg': _img('x.jpg', [L, R], [-1, 0]),
        'y.jpg': _img('y.jpg', [L], [-1]),
    }
    res = {
        'q.jpg': _dets((R, _e(0, 1), 0.9), (FAR, _e(0, 0, 1), 0.8)),
        'x.jpg': _dets((L, _e(.6, .8), 0.9), (R, _e(.6, 0, .8), 0.9)),
        'y.jpg': _dets((L, _e(.7, 0, 0, np.sqrt(.51)), 0.9)),
    }
    queries = [
        Query('q.jpg', _f32(L), 0, -1, [('x.jpg', _f32(R)), ('y.jpg', None)])
    ]
    results = dict(
        gallery=res,
        query=[dict(img_id='q.jpg', bbox=_f32(L), embedding=_f32(_e(1)))])
    return results, SearchProtocol('cuhk', gallery, queries, 100)


def test_unmatched_query_keeps_its_similarity():
    results, protocol = unmatched_query_case()
    # k2 = 3: two detections, three context persons; the best matching is
    # {other-c1, true-c2} (1.6), the query stays unmatched: .7 F, .6 F,
    # .6 T (the tie is broken against the query).
    out = _search(results, protocol, 10, 3)
    assert out['ap'][0] == pytest.approx(1 / 3)
    assert out['hits'][0, 0] == 0
    assert out['ap'][0] == pytest.approx(
        _search(results, protocol, cbgm=False)['ap'][0])
    # k2 = 2: {other-c1 .8, true-query .6} (1.4): the query's match gets
    # the largest matched weight, .8, and ranks first.
    out = _search(results, protocol, 10, 2)
    assert out['ap'][0] == pytest.approx(1.0)
    assert out['hits'][0, 0] == 1
    for k2 in (2, 3):
        ap, hits, _ = ref_cbgm_search(results, protocol, 10, k2)
        np.testing.assert_allclose(
            _search(results, protocol, 10, k2)['ap'], ap, atol=1e-12)


def test_missing_query_image_entry_is_named():
    results, protocol = look_alike_case()
    del results['gallery']['q.jpg']
    del protocol.gallery['q.jpg']  # a protocol without the query images
    # Plain search does not need it ...
    assert evaluate_person_search(results, protocol)['top1'] == 0.0
    # ... CBGM does, and says which image is missing.
    with pytest.raises(KeyError, match=r"'q\.jpg' of query 0"):
        evaluate_person_search(results, protocol, cbgm=True)
    with pytest.raises(KeyError, match=r'q\.jpg'):
        CBGM.from_results(results, 10, 3)


def test_defaults_and_bad_k():
    assert CBGM_DEFAULTS == {'cuhk': (10, 3), 'prw': (30, 4)}
    assert resolve_cbgm_k('cuhk') == (10, 3)
    assert resolve_cbgm_k('prw') == (30, 4)
    assert resolve_cbgm_k('prw', 5, None) == (5, 4)
    assert resolve_cbgm_k('cuhk', np.int64(7), 2) == (7, 2)
    results, protocol = look_alike_case()
    for bad in (0, -3, 2.5, '3', True):
        with pytest.raises(ValueError, match='cbgm_k1'):
            evaluate_person_search(results, protocol, cbgm=True, cbgm_k1=bad)
        with pytest.raises(ValueError, match='cbgm_k2'):
            evaluate_person_search(results, protocol, cbgm=True, cbgm_k2=bad)
        with pytest.raises(ValueError, match='PersonSearchMetric: cbgm_k1'):
            PersonSearchMetric('cuhk', 'root', cbgm=True, cbgm_k1=bad)
        with pytest.raises(ValueError, match='PersonSearchMetric: cbgm_k2'):
            PersonSearchMetric('prw', 'root', cbgm=True, cbgm_k2=bad)
    with pytest.raises(ValueError, match='cbgm is False'):
        evaluate_person_search(results, protocol, cbgm_k1=3)
    with pytest.raises(ValueError, match='cbgm is False'):
        PersonSearchMetric('cuhk', 'root', cbgm_k2=3)
    metric = PersonSearchMetric('prw', 'root', cbgm=True, cbgm_k2=2)
    assert (metric.cbgm, metric.cbgm_k1, metric.cbgm_k2) == (True, 30, 2)


# --------------------------------------------------------- random results


def make_groups_case(seed,
                     kind='cuhk',
                     n_img=16,
                     n_query=10,
                     dim=16,
                     alone=False):
    """Random results where persons walk in groups (so the context says
    something), every embedding distinct (Gaussian noise around the
    identity's prototype), jittered boxes, false alarms and scores on both
    sides of 0.5. ``alone``: one person per image, no false alarm."""
    rng = np.random.default_rng(seed)
    n_pid = 12
    protos = rng.standard_normal((n_pid, dim))
    groups = [
        list(rng.choice(n_pid, int(rng.integers(2, 4)), replace=False))
        for _ in range(6)
    ]
    gallery, res, persons = {}, {}, []
    for i in range(n_img):
        img_id = f'c{i % 3 + 1}s1_{i:04d}.jpg'
        if alone:
            pids = [int(rng.integers(n_pid))]
        else:
            pids = []
            for g in rng.choice(
                    len(groups), int(rng.integers(1, 3)), replace=False):
                pids += [p for p in groups[g] if rng.random() < 0.8]
            pids = list(dict.fromkeys(pids))[:5] or [int(rng.integers(n_pid))]
            if rng.random() < 0.3:
                pids.append(-1)
        boxes = np.array([[60 * j, 0, 60 * j + 40, 100]
                          for j in range(len(pids))], np.float32)
        cam = i % 3 + 1 if kind == 'prw' else -1
        gallery[img_id] = _img(img_id, boxes, pids, cam)
        dets, embs, scores = [], [], []
        for box, p in zip(boxes, pids):
            if not alone and rng.random() < 0.15:
                continue  # missed
            dets.append(box + rng.uniform(-6, 6, 4).astype(np.float32))
            base = protos[p] if p >= 0 else rng.standard_normal(dim)
            embs.append(base + 0.9 * rng.standard_normal(dim))
            scores.append(1.0 if alone else rng.uniform(0.35, 1.0))
            if p >= 0:
                persons.append((img_id, box, p, cam))
        for _ in range(0 if alone else int(rng.integers(0, 3))):
            x = float(rng.uniform(0, 400))
            dets.append(np.array([x, 150, x + 30, 220], np.float32))
            embs.append(rng.standard_normal(dim))
            scores.append(rng.uniform(0.2, 0.9))
        n = len(dets)
        res[img_id] = dict(
            bboxes=_f32(dets).reshape(n, 4),
            scores=_f32(scores).reshape(n),
            embeddings=_f32(embs).reshape(n, dim))
    queries, q_res = [], []
    for k in rng.choice(len(persons), n_query, replace=False):
        img_id, box, p, cam = persons[int(k)]
        listed = None
        if kind == 'cuhk':
            pos, neg = split_query_gallery(gallery, img_id, p)
            listed = pos + [entry for entry in neg if rng.random() < 0.6]
        queries.append(Query(img_id, box.copy(), p, cam, listed))
        q_res.append(
            dict(
                img_id=img_id,
                bbox=box.copy(),
                embedding=_f32(protos[p] + 0.9 * rng.standard_normal(dim))))
    protocol = SearchProtocol(kind, gallery, queries,
                              100 if kind == 'cuhk' else None)
    return dict(gallery=res, query=q_res), protocol


CASES = [(seed, kind, cross) for seed in range(8)
         for kind, cross in (('cuhk', False), ('prw', False), ('prw', True))]


@pytest.mark.parametrize('seed, kind, cross', CASES)
def test_matches_plain_reference(seed, kind, cross):
    results, protocol = make_groups_case(seed, kind)
    rng = np.random.default_rng(100 + seed)
    kw = dict(cross_camera=cross) if kind == 'prw' else {}
    for k1, k2 in ((None, None), (int(rng.integers(1, 6)),
                                  int(rng.integers(2, 5)))):
        out = _search(results, protocol, k1, k2, **kw)
        r1, r2 = resolve_cbgm_k(kind, k1, k2)
        ap, hits, num_gt = ref_cbgm_search(
            results, protocol, r1, r2, cross_camera=cross)
        np.testing.assert_allclose(out['ap'], ap, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(out['hits'], hits)
        np.testing.assert_array_equal(out['num_gt'], num_gt)
        valid = num_gt > 0
        assert out['mAP'] == pytest.approx(ap[valid].mean(), abs=1e-9)


def test_reference_cases_are_not_plain():
    """The random cases above are re-ranked for real: CBGM changes the AP
    of many queries (else agreeing with the reference proves little), and
    the plain reference without CBGM is the plain protocol."""
    changed = 0
    for seed, kind, cross in CASES:
        results, protocol = make_groups_case(seed, kind)
        kw = dict(cross_camera=cross) if kind == 'prw' else {}
        plain = _search(results, protocol, cbgm=False, **kw)
        ap0, hits0, _ = ref_cbgm_search(
            results, protocol, 1, 1, cross_camera=cross, cbgm=False)
        np.testing.assert_allclose(plain['ap'], ap0, atol=1e-9)
        np.testing.assert_array_equal(plain['hits'], hits0)
        out = _search(results, protocol, **kw)
        changed += int((np.abs(out['ap'] - plain['ap']) > 1e-9).sum())
    assert changed >= 20


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('kind', ['cuhk', 'prw'])
def test_uninformative_context_never_lowers_top1(seed, kind):
    """The same person alone in every image (no companion in the query
    image, one detection per gallery image): CBGM has nothing to match and
    must give the plain numbers, top-1 included."""
    results, protocol = make_groups_case(seed, kind, alone=True)
    plain = _search(results, protocol, cbgm=False)
    for k1, k2 in ((None, None), (1, 2), (50, 4)):
        out = _search(results, protocol, k1, k2)
        assert (out['hits'][:, 0] >= plain['hits'][:, 0]).all()
        np.testing.assert_array_equal(out['hits'], plain['hits'])
        np.testing.assert_allclose(out['ap'], plain['ap'], atol=1e-12)


# -------------------------------------------- offline and in-model agree


def _tree_results(protocol, seed):
    """Every person detected, plus a false alarm here and there; noisy
    embeddings around one prototype per identity."""
    rng = np.random.default_rng(seed)
    dim = 32
    protos = rng.standard_normal((1000, dim))
    gallery = {}
    for img_id, g in protocol.gallery.items():
        n = len(g.person_ids)
        emb = protos[g.person_ids % 1000] + 1.2 * rng.standard_normal((n, dim))
        boxes = g.boxes.astype(np.float32)
        if rng.random() < 0.5:
            boxes = np.concatenate([boxes, _f32([[0, 0, 9, 20]])])
            emb = np.concatenate([emb, rng.standard_normal((1, dim))])
        gallery[img_id] = dict(
            bboxes=boxes,
            scores=rng.uniform(0.4, 1.0, len(boxes)).astype(np.float32),
            embeddings=emb.astype(np.float32))
    query = [
        dict(
            img_id=q.img_id,
            bbox=q.box.astype(np.float32),
            embedding=_f32(protos[q.person_id] +
                           1.2 * rng.standard_normal(dim)))
        for q in protocol.queries
    ]
    return dict(gallery=gallery, query=query)


def _in_model(metric, results):
    evaluator = Evaluator(metric)
    samples = results_to_samples(results)
    for i in range(0, len(samples), 7):
        evaluator.process(data_samples=samples[i:i + 7], data_batch=None)
    return evaluator.evaluate(len(samples))


@pytest.mark.parametrize('kind', ['cuhk', 'prw'])
def test_offline_and_in_model_agree(trees, tmp_path, kind):
    root = str(trees / kind)
    protocol = load_cuhk_protocol(root, 100) if kind == 'cuhk' else \
        load_prw_protocol(root)
    results = _tree_results(protocol, 3)
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    cli = load_eval_search()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        offline = cli.main([
            res, '--dataset', kind, '--data-root', root, '--cbgm', '--json',
            str(tmp_path / 'cbgm.json')
        ])
        plain = cli.main([res, '--dataset', kind, '--data-root', root])
        metrics = _in_model(PersonSearchMetric(kind, root, cbgm=True), results)
    with open(tmp_path / 'cbgm.json') as f:
        written = json.load(f)
    for key in SEARCH + ('det_ap', 'labeled_det_recall'):
        assert metrics[f'search/{key}'] == offline[key] == written[key], key
    assert any(offline[k] != plain[k] for k in SEARCH)
    assert offline['det_ap'] == plain['det_ap']
    # ... and both are SeqNet's numbers.
    k1, k2 = CBGM_DEFAULTS[kind]
    ap, hits, num_gt = ref_cbgm_search(results, protocol, k1, k2)
    valid = num_gt > 0
    assert offline['mAP'] == pytest.approx(ap[valid].mean(), abs=1e-9)
    assert offline['top1'] == pytest.approx(hits[valid, 0].mean(), abs=1e-9)
    if 'settings' in written:
        assert written['settings']['cbgm'] is True
        assert (written['settings']['cbgm_k1'],
                written['settings']['cbgm_k2']) == (k1, k2)


def test_cli_k_options(trees, tmp_path, capsys):
    root = str(trees / 'cuhk')
    protocol = load_cuhk_protocol(root, 100)
    results = _tree_results(protocol, 4)
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    cli = load_eval_search()
    out = cli.main([
        res, '--dataset', 'cuhk', '--data-root', root, '--cbgm', '--cbgm-k1',
        '2', '--cbgm-k2', '2'
    ])
    assert 'CBGM (k1=2, k2=2)' in capsys.readouterr().out
    ap, hits, num_gt = ref_cbgm_search(results, protocol, 2, 2)
    assert out['mAP'] == pytest.approx(ap[num_gt > 0].mean(), abs=1e-9)
    for opt in ('--cbgm-k1', '--cbgm-k2'):
        with pytest.raises(SystemExit, match=opt):
            cli.main([
                res, '--dataset', 'cuhk', '--data-root', root, '--cbgm', opt,
                '0'
            ])
        with pytest.raises(SystemExit, match='need --cbgm'):
            cli.main([res, '--dataset', 'cuhk', '--data-root', root, opt, '3'])
        with pytest.raises(SystemExit):  # argparse: not an int
            cli.main([
                res, '--dataset', 'cuhk', '--data-root', root, '--cbgm', opt,
                'x'
            ])
        assert opt in capsys.readouterr().err
    # A query image without gallery entry is named.
    missing = protocol.queries[0].img_id
    broken = copy.deepcopy(results)
    del broken['gallery'][missing]
    res2 = str(tmp_path / 'broken.pkl')
    save_search_results(broken, res2)
    with pytest.raises(KeyError, match=missing):
        cli.main([res2, '--dataset', 'cuhk', '--data-root', root, '--cbgm'])


def test_metric_missing_query_image(monkeypatch):
    """In the model: a query image never processed as a gallery image."""
    results, protocol = look_alike_case()
    del protocol.gallery['q.jpg']
    monkeypatch.setattr(
        mmpsearch.datasets,
        'load_cuhk_protocol',
        lambda root, size=100: copy.deepcopy(protocol),
        raising=False)
    kept = dict(
        results,
        gallery={
            k: v
            for k, v in results['gallery'].items() if k != 'q.jpg'
        })
    assert _in_model(PersonSearchMetric('cuhk', 'r'),
                     kept)['search/top1'] == 0.0
    with pytest.raises(KeyError, match=r'q\.jpg'):
        _in_model(PersonSearchMetric('cuhk', 'r', cbgm=True), kept)
    # With the image processed, CBGM puts the true person first.
    full = dict(
        kept,
        gallery=dict(kept['gallery'], **{'q.jpg':
                                         results['gallery']['q.jpg']}))
    protocol.gallery['q.jpg'] = _img('q.jpg', [L, R], [0, 1])
    assert _in_model(PersonSearchMetric('cuhk', 'r', cbgm=True),
                     full)['search/top1'] == 1.0
