# Copyright (c) mmpsearch contributors. All rights reserved.
"""The CUHK-SYSU occlusion / low-resolution query subsets: reading the
released files (hand-written trees) and the synthetic generator's."""
import os.path as osp
import re

import pytest
from scipy.io import loadmat

from mmpsearch.datasets import (available_subsets, load_cuhk_protocol,
                                load_cuhk_subset, make_synthetic,
                                resolve_subsets)
from mmpsearch.datasets.synthetic import (LOW_RES_MAX_HEIGHT,
                                          OCCLUSION_MIN_SHARE)
from mmpsearch.testing.released_trees import (CUHK_OCCLUSION, CUHK_RESOLUTION,
                                              write_cuhk, write_cuhk_subset)
from .conftest import SMALL, small_synthetic

SUBSET_REL = osp.join('annotation', 'test', 'subset')


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / 'cuhk')
    write_cuhk(root, sizes=(50, 100))
    write_cuhk_subset(root, 'occlusion')
    write_cuhk_subset(root, 'resolution')
    return root


def _xyxy(b):
    x, y, w, h = b
    return [x, y, x + w, y + h]


def _plain_gallery(gallery):
    return [(n, None if b is None else b.tolist()) for n, b in gallery]


def test_released_layout(tree):
    full = load_cuhk_protocol(tree, 100)
    occ = load_cuhk_subset(tree, 'occlusion', full)
    assert occ.name == 'occlusion'
    assert occ.source == osp.join(tree, SUBSET_REL, 'Occlusion.mat')
    assert occ.query_indices.tolist() == [1]
    assert occ.protocol.gallery is full.gallery
    (q, ) = occ.protocol.queries
    assert (q.img_id, q.person_id) == ('s4.jpg', 1)
    assert q.box.tolist() == [3, 4, 33, 74]
    # the gallery list of the subset file, not the TestG one
    assert _plain_gallery(q.gallery) == [(n, None if b is None else _xyxy(b))
                                         for n, b in CUHK_OCCLUSION[0][3]]
    assert _plain_gallery(q.gallery) != _plain_gallery(full.queries[1].gallery)
    assert occ.protocol.gallery_size is None

    res = load_cuhk_subset(tree, 'resolution')  # default: TestG50's order
    assert res.query_indices.tolist() == [1, 0]
    assert [q.person_id for q in res.protocol.queries] == [1, 0]
    assert [q.img_id for q in res.protocol.queries] == ['s4.jpg', 's3.jpg']
    assert [len(q.gallery) for q in res.protocol.queries
            ] == [len(e[3]) for e in CUHK_RESOLUTION]

    # gallery_size=N: the TestG{N} lists of the same queries
    res50 = load_cuhk_subset(tree, 'resolution', full, gallery_size=50)
    p50 = load_cuhk_protocol(tree, 50)
    assert res50.protocol.gallery_size == 50
    for q, i in zip(res50.protocol.queries, res50.query_indices):
        assert _plain_gallery(q.gallery) == _plain_gallery(
            p50.queries[i].gallery)

    assert available_subsets(tree) == ['occlusion', 'resolution']
    assert resolve_subsets('auto', tree) == ['occlusion', 'resolution']
    assert resolve_subsets(('resolution', ), tree) == ['resolution']
    assert resolve_subsets((), tree) == []


def test_missing_file_is_named(tmp_path):
    root = str(tmp_path / 'cuhk')
    write_cuhk(root, sizes=(50, 100))
    write_cuhk_subset(root, 'resolution')
    path = osp.join(root, SUBSET_REL, 'Occlusion.mat')
    with pytest.raises(
            FileNotFoundError, match=re.escape(path) + '.*occlusion subset'):
        load_cuhk_subset(root, 'occlusion')
    assert available_subsets(root) == ['resolution']
    assert resolve_subsets('auto', root) == ['resolution']
    # asking for it by name is fine until it is loaded
    assert resolve_subsets(['occlusion'], root) == ['occlusion']
    with pytest.raises(ValueError, match="'blur' is not a CUHK-SYSU"):
        resolve_subsets(['blur'], root)
    with pytest.raises(ValueError, match='repeat'):
        resolve_subsets(['occlusion', 'occlusion'], root)


@pytest.mark.parametrize('case, exc, pattern', [
    (dict(var='Occlusion'), KeyError, "has no variable 'Occlusion1'"),
    (dict(drop_field='Gallery'), KeyError, "has no field 'Gallery'"),
    (dict(drop_field='Query'), KeyError, "has no field 'Query'"),
    (dict(entries=[('s4.jpg', [3, 4, 30, 71], 'p301', [('s3.jpg', None)])]),
     ValueError, r'Occlusion1\(1\) \(p301\).*is not a query of .*TestG100'),
    (dict(entries=[('s4.jpg', [3, 4, 30, 70], 'p301',
                    [('s6.jpg', [31, 10, 30, 70])])]), ValueError,
     'matches no box'),
    (dict(entries=[('s4.jpg', [3, 4, 30, 70], 'p301', [('s1.jpg', None)])]),
     ValueError, "lists 's1.jpg', which is not a test image"),
    (dict(entries=CUHK_OCCLUSION * 2), ValueError,
     r'Occlusion1\(2\) \(p301\) repeats the query Occlusion1\(1\)'),
])
def test_bad_files(tmp_path, case, exc, pattern):
    root = str(tmp_path / 'cuhk')
    write_cuhk(root, sizes=(50, 100))
    path = write_cuhk_subset(root, 'occlusion', **case)
    full = load_cuhk_protocol(root, 100)
    with pytest.raises(exc, match=re.escape(path) + '.*' + pattern):
        load_cuhk_subset(root, 'occlusion', full)


# --------------------------------------------------------------------------
# The synthetic generator writes both subsets.
# --------------------------------------------------------------------------
def _read(path, var):
    """Entries of a TestG / subset file, parsed here with scipy (not with
    the loaders): (imname, xywh, gallery [(imname, xywh or None)], record)."""
    out = []
    for rec in loadmat(path)[var][0]:
        q = rec['Query'][0, 0]
        gallery = [
            (str(g['imname'][0]),
             None if g['idlocate'].size == 0 else g['idlocate'][0].tolist())
            for g in rec['Gallery'][0]
        ]
        out.append(
            (str(q['imname'][0]), q['idlocate'][0].tolist(), gallery, rec))
    return out


def _share_covered_by_nearer(box, others):
    """Share of ``box`` (x, y, w, h) covered by the most covering box of
    ``others`` that reaches lower in the image."""
    x, y, w, h = box
    shares = [0.0]
    for ox, oy, ow, oh in others:
        if ow > 0 and oh > 0 and oy + oh > y + h:
            ix = max(0.0, min(x + w, ox + ow) - max(x, ox))
            iy = max(0.0, min(y + h, oy + oh) - max(y, oy))
            shares.append(ix * iy / (w * h))
    return max(shares)


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    return small_synthetic(tmp_path_factory, 'cuhk_subsets', 'cuhk', 202, 40)


def test_synthetic_subsets_meet_the_criteria(synthetic, tmp_path):
    root, summary = synthetic
    anno = osp.join(root, 'annotation')
    boxes = {
        str(r['imname'][0]): [b['idlocate'][0].tolist() for b in r['box'][0]]
        for r in loadmat(osp.join(anno, 'Images.mat'))['Img'][0]
    }
    testg = _read(
        osp.join(anno, 'test', 'train_test', 'TestG100.mat'), 'TestG100')
    occluded, small, shares = [], [], {}
    for i, (imname, box, _, _) in enumerate(testg):
        others = [b for b in boxes[imname] if b != box]
        assert len(others) == len(boxes[imname]) - 1
        shares[i] = _share_covered_by_nearer(box, others)
        if shares[i] >= OCCLUSION_MIN_SHARE:
            occluded.append(i)
        if box[3] < LOW_RES_MAX_HEIGHT * SMALL[1]:
            small.append(i)
    # the seed gives both kinds, and not every query is one
    assert 1 <= len(occluded) < len(testg) and 1 <= len(small) < len(testg)
    assert summary['subsets'] == dict(
        occlusion=len(occluded), resolution=len(small))

    key = {(n, tuple(b)): i for i, (n, b, _, _) in enumerate(testg)}
    for fname, var, expected in (('Occlusion.mat', 'Occlusion1', occluded),
                                 ('Resolution.mat', 'Test_Size', small)):
        entries = _read(osp.join(anno, 'test', 'subset', fname), var)
        found = [key[(n, tuple(b))] for n, b, _, _ in entries]
        # exactly the queries meeting the criterion, in TestG order
        assert found == expected, fname
        for i, (_, _, gallery, rec) in zip(found, entries):
            assert gallery == testg[i][2]  # the TestG100 list
            assert len(gallery) == 100
            if var == 'Occlusion1':
                assert rec['occlusion'][0, 0] == pytest.approx(shares[i])
        sub = load_cuhk_subset(
            root, 'occlusion' if var == 'Occlusion1' else 'resolution')
        assert sub.query_indices.tolist() == expected
    # the small ones are the smallest queries
    heights = [b[3] for _, b, _, _ in testg]
    assert max(heights[i] for i in small) < min(h
                                                for i, h in enumerate(heights)
                                                if i not in small)

    # deterministic: the same seed writes the same bytes
    again = str(tmp_path / 'again')
    make_synthetic(
        'cuhk', again, num_images=202, num_ids=40, seed=3, image_size=SMALL)
    for fname in ('Occlusion.mat', 'Resolution.mat'):
        with open(osp.join(anno, 'test', 'subset', fname), 'rb') as f:
            first = f.read()
        with open(
                osp.join(again, 'annotation', 'test', 'subset', fname),
                'rb') as f:
            assert f.read() == first, fname


def test_synthetic_without_qualifying_queries(tmp_path):
    root = str(tmp_path / 'few')
    summary = make_synthetic(
        'cuhk', root, num_images=202, num_ids=8, seed=0, image_size=(64, 64))
    assert summary['subsets'] == dict(occlusion=0, resolution=0)
    assert available_subsets(root) == []
    with pytest.raises(FileNotFoundError, match='Resolution.mat'):
        load_cuhk_subset(root, 'resolution')
