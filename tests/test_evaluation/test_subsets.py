# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search numbers of the CUHK-SYSU occlusion / low-resolution subsets:
``evaluate_person_search(subsets=...)``, ``PersonSearchMetric(subsets=...)``
and ``eval_search.py --subset``, against the plain reference of the full
protocol restricted to the subset's queries."""
import json
import os.path as osp

import numpy as np
import pytest
from scipy.io import loadmat

from mmpsearch.datasets import (Query, SearchProtocol, load_cuhk_protocol,
                                load_cuhk_subset, make_synthetic)
from mmpsearch.evaluation import PersonSearchMetric
from mmpsearch.evaluation.functional import (CBGM, SEARCH_KEYS,
                                             evaluate_person_search,
                                             pack_gallery_detections)
from mmpsearch.evaluation.functional.search import eval_search_cuhk
from mmpsearch.evaluation.results_io import save_search_results
from mmpsearch.testing.released_trees import write_cuhk, write_cuhk_subset
from .eval_utils import load_eval_search
from .ps_eval_reference import ref_search

FILES = {
    'occlusion': ('Occlusion.mat', 'Occlusion1'),
    'resolution': ('Resolution.mat', 'Test_Size')
}


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """20 queries; 2 occluded, 5 small (tests/test_datasets checks which)."""
    root = str(tmp_path_factory.mktemp('subset_numbers') / 'cuhk')
    make_synthetic(
        'cuhk',
        root,
        num_images=202,
        num_ids=40,
        seed=3,
        image_size=(160, 120))
    return root


def _results(protocol, seed):
    """Every person detected (plus a shifted duplicate), random
    embeddings, the true identity's direction mixed in for some."""
    rng = np.random.default_rng(seed)
    dim = 16
    ids = rng.standard_normal((len(protocol.queries), dim))
    gallery = {}
    for img_id, g in protocol.gallery.items():
        n = len(g.person_ids)
        emb = rng.standard_normal((n, dim))
        known = g.person_ids >= 0
        emb[known] += 2 * ids[g.person_ids[known]]
        boxes = np.concatenate([g.boxes, g.boxes + 3]).astype(np.float32)
        gallery[img_id] = dict(
            bboxes=boxes,
            scores=rng.choice([0.3, 0.6, 0.9], 2 * n).astype(np.float32),
            embeddings=np.concatenate([emb, rng.standard_normal(
                (n, dim))]).astype(np.float32))
    query = [
        dict(
            img_id=q.img_id,
            bbox=q.box.astype(np.float32),
            embedding=(ids[q.person_id] + rng.standard_normal(dim)).astype(
                np.float32)) for q in protocol.queries
    ]
    return dict(gallery=gallery, query=query)


def _subset_indices(root, name, testg_size=100):
    """Which TestG queries a subset file lists, found here by reading both
    files with scipy and comparing (image, box)."""
    fname, var = FILES[name]

    def entries(path, v):
        return [(str(r['Query'][0, 0]['imname'][0]),
                 tuple(r['Query'][0, 0]['idlocate'][0].tolist()))
                for r in loadmat(path)[v][0]]

    testg = entries(
        osp.join(root, 'annotation', 'test', 'train_test',
                 f'TestG{testg_size}.mat'), f'TestG{testg_size}')
    sub = entries(osp.join(root, 'annotation', 'test', 'subset', fname), var)
    return [testg.index(e) for e in sub]


def _restricted(results, protocol, idx):
    """The reference numbers of ``protocol`` over the queries ``idx``."""
    ap, hits, num_gt = ref_search(results, protocol)
    assert (num_gt[idx] > 0).all()
    return dict(
        mAP=ap[idx].mean(),
        top1=hits[idx, 0].mean(),
        top5=hits[idx, 1].mean(),
        top10=hits[idx, 2].mean())


def _check(metrics, suffix, expected):
    for k in SEARCH_KEYS:
        assert metrics[k + suffix] == pytest.approx(expected[k], abs=1e-9), \
            k + suffix


def test_subsets_equal_the_restricted_full_protocol(tree):
    p100, p50 = load_cuhk_protocol(tree, 100), load_cuhk_protocol(tree, 50)
    results = _results(p100, 0)
    subsets = [load_cuhk_subset(tree, n, p100) for n in FILES]
    subsets += [load_cuhk_subset(tree, n, p100, 50) for n in FILES]
    metrics = evaluate_person_search(results, p100, subsets=subsets)
    plain = evaluate_person_search(results, p100)
    # the keys of the full protocol are unchanged; four subset rows added
    assert {k: metrics[k] for k in plain} == plain
    assert list(metrics)[:len(plain)] == list(plain)
    assert len(metrics) == len(plain) + 4 * len(SEARCH_KEYS)
    for name in FILES:
        idx = _subset_indices(tree, name)
        assert 1 <= len(idx) < len(p100.queries)
        # the synthetic subset files list the TestG100 galleries
        _check(metrics, f'_{name}', _restricted(results, p100, idx))
        _check(metrics, f'_{name}_g50', _restricted(results, p50, idx))
    # not all equal to the full protocol (the test can tell them apart)
    assert metrics['mAP_resolution'] != metrics['mAP']


def test_subset_searches_its_own_gallery_lists(tmp_path):
    """Hand-written files where the subset's gallery lists differ from the
    TestG ones: the numbers are those of the subset file's lists."""
    root = str(tmp_path / 'cuhk')
    write_cuhk(root, sizes=(50, 100))
    write_cuhk_subset(root, 'occlusion')
    write_cuhk_subset(root, 'resolution')
    full = load_cuhk_protocol(root, 100)
    results = _results(full, 1)
    for name in FILES:
        sub = load_cuhk_subset(root, name, full)
        metrics = evaluate_person_search(results, full, subsets=[sub])
        # the reference on a protocol built here from the subset file
        fname, var = FILES[name]
        queries, idx = [], []
        for r in loadmat(
                osp.join(root, 'annotation', 'test', 'subset', fname))[var][0]:
            q = r['Query'][0, 0]
            x, y, w, h = q['idlocate'][0].tolist()
            i = [(e.img_id, e.box.tolist()) for e in full.queries].index(
                (str(q['imname'][0]), [x, y, x + w, y + h]))
            gallery = []
            for g in r['Gallery'][0]:
                b = None
                if g['idlocate'].size:
                    gx, gy, gw, gh = g['idlocate'][0].tolist()
                    b = np.array([gx, gy, gx + gw, gy + gh], np.float32)
                gallery.append((str(g['imname'][0]), b))
            queries.append(
                Query(full.queries[i].img_id, full.queries[i].box, i, -1,
                      gallery))
            idx.append(i)
        ref_protocol = SearchProtocol('cuhk', full.gallery, queries)
        ref_results = dict(
            gallery=results['gallery'],
            query=[results['query'][i] for i in idx])
        ap, hits, _ = ref_search(ref_results, ref_protocol)
        assert sub.query_indices.tolist() == idx
        assert metrics[f'mAP_{name}'] == pytest.approx(ap.mean(), abs=1e-9)
        assert metrics[f'top1_{name}'] == pytest.approx(hits[:, 0].mean())


def test_subsets_with_cbgm(tree):
    """+CBGM: each subset query keeps its own context."""
    full = load_cuhk_protocol(tree, 100)
    results = _results(full, 2)
    subsets = [load_cuhk_subset(tree, n, full) for n in FILES]
    metrics = evaluate_person_search(results, full, cbgm=True, subsets=subsets)
    pack = pack_gallery_detections(results['gallery'], list(full.gallery), 0.5,
                                   16)
    q_emb = np.stack([q['embedding'] for q in results['query']])
    per_query = eval_search_cuhk(
        pack, q_emb, full, cbgm=CBGM.from_results(results, 10, 3, 0.5))
    for sub in subsets:
        idx = sub.query_indices
        assert metrics[f'mAP_{sub.name}'] == pytest.approx(
            per_query['ap'][idx].mean(), abs=1e-7)
        assert metrics[f'top1_{sub.name}'] == pytest.approx(
            per_query['hits'][idx, 0].mean())


def _processed(results):
    """``results`` as ``PersonSearchMetric.process`` keeps them."""
    out = [
        dict(split='gallery', img_id=k, **v)
        for k, v in results['gallery'].items()
    ]
    out += [
        dict(split='query', query_index=i, **q)
        for i, q in enumerate(results['query'])
    ]
    return out


def test_metric_rows(tree, tmp_path):
    full = load_cuhk_protocol(tree, 100)
    results = _results(full, 3)
    direct = evaluate_person_search(
        results,
        full,
        subsets=[load_cuhk_subset(tree, n, full) for n in FILES])
    metric = PersonSearchMetric(
        'cuhk', tree, subsets=('occlusion', 'resolution'))
    got = metric.compute_metrics(_processed(results))
    assert got == dict(direct)
    assert 'mAP_occlusion' in got and 'top10_resolution' in got
    assert metric.subset == ('all queries; *_occlusion keys: the occlusion '
                             'subset, *_resolution keys: the resolution '
                             'subset')
    table = PersonSearchMetric.format_table(
        got, [100], False, [('occlusion (2)', '_occlusion'),
                            ('resolution (5)', '_resolution')])
    assert 'occlusion (2)' in table and 'resolution (5)' in table

    # 'auto' on a tree without the files: the keys of old
    bare = str(tmp_path / 'bare')
    write_cuhk(bare, sizes=(50, 100))
    bare_results = _results(load_cuhk_protocol(bare, 100), 4)
    auto = PersonSearchMetric('cuhk', bare, subsets='auto')
    plain = PersonSearchMetric('cuhk', bare)
    assert auto.compute_metrics(_processed(bare_results)) == \
        plain.compute_metrics(_processed(bare_results))
    assert auto.subset is None
    asked = PersonSearchMetric('cuhk', bare, subsets=['occlusion'])
    with pytest.raises(FileNotFoundError, match='subset.Occlusion.mat'):
        asked.compute_metrics(_processed(bare_results))

    with pytest.raises(ValueError, match='CUHK-SYSU only'):
        PersonSearchMetric('prw', tree, subsets=['occlusion'])
    with pytest.raises(ValueError, match='not a CUHK-SYSU query subset'):
        PersonSearchMetric('cuhk', tree, subsets=['occluded'])
    with pytest.raises(ValueError, match='subset_gallery_size'):
        PersonSearchMetric(
            'cuhk', tree, subsets='auto', subset_gallery_size=77)


def test_eval_search_subset_flag(tree, tmp_path, capsys):
    full = load_cuhk_protocol(tree, 100)
    p50 = load_cuhk_protocol(tree, 50)
    results = _results(full, 5)
    res = str(tmp_path / 'res.pkl')
    save_search_results(results, res)
    cli = load_eval_search()
    out = str(tmp_path / 'occ.json')
    summary = cli.main([
        res, '--dataset', 'cuhk', '--data-root', tree, '--subset', 'occlusion',
        '--json', out
    ])
    with open(out) as f:
        assert json.load(f) == summary
    idx = _subset_indices(tree, 'occlusion')
    _check(summary, '', _restricted(results, full, idx))
    assert summary['settings']['subset'] == 'occlusion'
    assert summary['settings']['gallery_sizes'] == [100]  # the file's lists
    plain = cli.main([res, '--dataset', 'cuhk', '--data-root', tree])
    assert summary['det_ap'] == plain['det_ap']
    assert summary['mAP'] != plain['mAP']
    table = capsys.readouterr().out
    assert 'gallery 100' in table and f'occlusion ({len(idx)})' in table

    # --gallery-size: the subset's queries in their TestG lists
    several = cli.main([
        res, '--dataset', 'cuhk', '--data-root', tree, '--subset',
        'resolution', '--gallery-size', '50', '100'
    ])
    idx = _subset_indices(tree, 'resolution')
    _check(several['50'], '', _restricted(results, p50, idx))
    _check(several['100'], '', _restricted(results, full, idx))

    with pytest.raises(SystemExit, match='CUHK-SYSU only'):
        cli.main([
            res, '--dataset', 'prw', '--data-root', tree, '--subset',
            'occlusion'
        ])
    bare = str(tmp_path / 'bare')
    write_cuhk(bare, sizes=(100, ))
    bare_res = str(tmp_path / 'bare.pkl')
    save_search_results(_results(load_cuhk_protocol(bare, 100), 6), bare_res)
    with pytest.raises(
            FileNotFoundError, match=r'subset.Resolution\.mat does not exist'):
        cli.main([
            bare_res, '--dataset', 'cuhk', '--data-root', bare, '--subset',
            'resolution'
        ])
