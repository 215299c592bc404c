# Copyright (c) mmpsearch contributors. All rights reserved.
"""The synthetic scene generator writes the released formats, which the
loaders read unchanged."""
import glob
import json
import os
import os.path as osp
import runpy
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from mmpsearch.datasets import (CUHKSYSUDataset, PRWDataset,
                                load_cuhk_protocol, load_prw_protocol,
                                make_synthetic)
from mmpsearch.datasets.synthetic import identity_looks
from mmpsearch.datasets.synthetic.render import split_identities
from mmpsearch.testing.files import tree_digest
from .conftest import SMALL, dataset_infos

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_cuhk_layout_and_loaders(synthetic_cuhk):
    root, summary = synthetic_cuhk
    for rel in [
            'annotation/Images.mat', 'annotation/pool.mat',
            'annotation/Person.mat', 'annotation/test/train_test/'
            'Train.mat', 'annotation/test/train_test/TestG50.mat',
            'annotation/test/train_test/TestG100.mat'
    ]:
        assert osp.isfile(osp.join(root, rel)), rel
    assert summary['gallery_sizes'] == [50, 100]
    assert not osp.exists(
        osp.join(root, 'annotation/test/train_test/TestG500.mat'))
    with pytest.raises(FileNotFoundError, match=r'sizes \[50, 100\]'):
        load_cuhk_protocol(root, 500)

    train = dataset_infos(CUHKSYSUDataset, root, 'train')
    gallery = dataset_infos(CUHKSYSUDataset, root, 'gallery')
    queries = dataset_infos(CUHKSYSUDataset, root, 'query')
    assert len(train) == summary['num_train_images'] == 101
    assert len(gallery) == summary['num_gallery_images'] == 101
    assert len(queries) == summary['num_queries'] == 6
    # contiguous training ids 0..K-1, every one used
    train_ids = {i['person_id'] for d in train for i in d['instances']}
    assert train_ids - {-1} == set(range(summary['num_train_ids']))
    # figures are person-sized and inside the image
    for d in train + gallery:
        assert (d['width'], d['height']) == SMALL
        for inst in d['instances']:
            x1, y1, x2, y2 = inst['bbox']
            assert 0 <= x1 < x2 <= SMALL[0] and 0 <= y1 < y2 <= SMALL[1]
            assert y2 - y1 >= 0.2 * SMALL[1]

    # the raw Images.mat holds w = 0 boxes (as the release does); the
    # loader drops them
    img = loadmat(osp.join(root, 'annotation', 'Images.mat'))['Img'][0]
    raw = np.concatenate([
        np.concatenate([b['idlocate'] for b in rec['box'][0]]) for rec in img
    ])
    n_zero = int(((raw[:, 2] <= 0) | (raw[:, 3] <= 0)).sum())
    loaded = sum(len(d['instances']) for d in train + gallery)
    assert n_zero > 0 and loaded == len(raw) - n_zero


@pytest.mark.parametrize('size', [50, 100])
def test_cuhk_protocol_and_ids_across_splits(synthetic_cuhk, size):
    root, _ = synthetic_cuhk
    proto = load_cuhk_protocol(root, size)
    gallery = {
        d['img_id']: d
        for d in dataset_infos(
            CUHKSYSUDataset, root, 'gallery', gallery_size=size)
    }
    queries = dataset_infos(CUHKSYSUDataset, root, 'query', gallery_size=size)
    assert list(proto.gallery) == list(gallery)
    for q_info, q in zip(queries, proto.queries):
        pid = q_info['instances'][0]['person_id']
        assert pid == q.person_id == q_info['query_index']
        assert q_info['instances'][0]['bbox'] == q.box.tolist()
        # the query's own image holds the same person with the same id
        own = gallery[q.img_id]['instances']
        assert [i['person_id'] for i in own
                if i['bbox'] == q.box.tolist()] == [pid]
        # the gallery list: size entries, not the query image, positives
        # (with a box) first, then distractors
        names = [n for n, _ in q.gallery]
        has = [b is not None for _, b in q.gallery]
        assert len(names) == size == len(set(names))
        assert q.img_id not in names
        assert has == sorted(has, reverse=True) and sum(has) >= 1
        holders = {
            n
            for n, d in gallery.items()
            if n != q.img_id and any(i['person_id'] == pid
                                     for i in d['instances'])
        }
        assert holders == {n for n, b in q.gallery if b is not None}
        for n, b in q.gallery:
            ids = [
                i['person_id'] for i in gallery[n]['instances']
                if b is not None and i['bbox'] == b.tolist()
            ]
            assert ids == ([pid] if b is not None else [])


def test_identities_are_distinguishable(synthetic_cuhk):
    # Colour layout alone (4x2 mean colours of a crop) retrieves the same
    # identity as nearest neighbour almost always: a small ReID model can
    # learn these identities.
    root, _ = synthetic_cuhk
    feats, ids = [], []
    for g in load_cuhk_protocol(root, 50).gallery.values():
        img = cv2.imread(osp.join(root, 'Image', 'SSM', g.img_id))
        for (x1, y1, x2, y2), pid in zip(g.boxes.astype(int), g.person_ids):
            if pid >= 0:
                f = cv2.resize(
                    img[y1:y2, x1:x2].astype(np.float32), (2, 4),
                    interpolation=cv2.INTER_AREA).reshape(-1)
                feats.append(f / np.linalg.norm(f))
                ids.append(pid)
    feats, ids = np.stack(feats), np.array(ids)
    dist = ((feats[:, None] - feats[None])**2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert len(ids) >= 30
    assert (ids[dist.argmin(1)] == ids).mean() >= 0.9
    looks = identity_looks(np.random.default_rng(0), 200)
    assert len({(lk.upper, lk.lower, lk.pattern) for lk in looks}) == 200


def test_prw_layout_and_loaders(synthetic_prw):
    root, summary = synthetic_prw
    frames = sorted(
        osp.basename(p)[:-4]
        for p in glob.glob(osp.join(root, 'frames', '*.jpg')))
    assert len(frames) == 48
    assert {f[:2] for f in frames} == {f'c{c}' for c in range(1, 7)}
    with open(osp.join(root, 'query_info.txt'), 'rb') as f:
        raw = f.read()
    assert raw.endswith(b'\r\n')
    assert raw.count(b'\r\n') == raw.count(b'\n') == summary['num_queries']

    keys = Counter()
    raw_neg = 0
    for fr in frames:
        mat = loadmat(osp.join(root, 'annotations', f'{fr}.jpg.mat'))
        present = tuple(
            k for k in ('box_new', 'anno_file', 'anno_previous') if k in mat)
        keys[present] += 1
        key = present[0]
        raw_neg += int((mat[key][:, 1:3] < 0).sum())
    # the three box keys, alone and together with an older round
    assert {('box_new', ), ('anno_file', ), ('anno_previous', ),
            ('anno_file', 'anno_previous')} <= set(keys)
    assert raw_neg > 0  # a person cut by the left border

    train = dataset_infos(PRWDataset, root, 'train')
    gallery = dataset_infos(PRWDataset, root, 'gallery')
    queries = dataset_infos(PRWDataset, root, 'query')
    assert len(train) == summary['num_train_images']
    assert len(gallery) == summary['num_gallery_images']
    assert len(train) + len(gallery) == 48
    assert len(queries) == summary['num_queries'] > 0
    for d in train + gallery + queries:
        assert d['cam_id'] == int(d['img_id'][1])
        for inst in d['instances']:
            assert min(inst['bbox']) >= 0  # clipped
    train_ids = {i['person_id'] for d in train for i in d['instances']}
    assert train_ids - {-1} == set(range(summary['num_train_ids']))
    id_train = loadmat(osp.join(root, 'ID_train.mat'))['ID_train']
    assert id_train.shape == (1, summary['num_train_ids'])
    id_test = loadmat(osp.join(root, 'ID_test.mat'))['ID_test2']

    proto = load_prw_protocol(root)
    assert list(proto.gallery) == [d['img_id'] for d in gallery]
    for q_info, q in zip(queries, proto.queries):
        pid = q.person_id
        assert q_info['instances'][0]['person_id'] == pid
        assert pid in id_test and q.gallery is None
        # the same person, same id, in at least one other gallery frame
        others = [
            g for g in proto.gallery.values()
            if g.img_id != q.img_id and pid in g.person_ids
        ]
        assert others
        own = proto.gallery[q.img_id]
        assert pid in own.person_ids and own.cam_id == q.cam_id


def test_deterministic(tmp_path, synthetic_prw):
    root, _ = synthetic_prw
    again = str(tmp_path / 'again')
    make_synthetic(
        'prw', again, num_images=48, num_ids=8, seed=3, image_size=SMALL)
    first, second = tree_digest(root), tree_digest(again)
    assert len(first) == 48 * 2 + 5
    assert first == second
    other = str(tmp_path / 'other')
    make_synthetic(
        'prw', other, num_images=48, num_ids=8, seed=4, image_size=SMALL)
    third = tree_digest(other)
    jpgs = [k for k in first if k.endswith('.jpg')]
    assert sum(first[k] != third.get(k) for k in jpgs) > 40


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='TestG100 needs at least 101'):
        make_synthetic('cuhk', str(tmp_path), num_images=150)
    with pytest.raises(ValueError, match="'cuhk' or 'prw'"):
        make_synthetic('market', str(tmp_path))
    with pytest.raises(ValueError, match='too many'):
        make_synthetic(
            'prw', str(tmp_path), num_images=24, num_ids=60, image_size=SMALL)
    with pytest.raises(ValueError, match='num_ids >= 2'):
        make_synthetic('cuhk', str(tmp_path), 202, num_ids=1)


def test_identity_split():
    # the test half rounded down, as the releases split about in half
    assert split_identities(2) == (1, 1)
    assert split_identities(7) == (4, 3)
    with pytest.raises(ValueError, match='num_ids=1 leaves no test'):
        split_identities(1)


def test_cli(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / 'cli')
    monkeypatch.setattr(sys, 'argv', [
        'make_synthetic.py', '--format', 'prw', '--out', out, '--num-images',
        '30', '--num-ids', '4', '--seed', '1', '--image-size', '128', '96'
    ])
    runpy.run_path(
        osp.join(REPO, 'tools', 'dataset_converters', 'make_synthetic.py'),
        run_name='__main__')
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['format'] == 'prw' and summary['num_images'] == 30
    assert len(os.listdir(osp.join(out, 'frames'))) == 30
    assert len(dataset_infos(PRWDataset, out, 'gallery')) == \
        summary['num_gallery_images']
