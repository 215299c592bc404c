# Copyright (c) mmpsearch contributors. All rights reserved.
"""CUHKSYSUDataset and load_cuhk_protocol on hand-built released trees."""
import os.path as osp
from functools import partial

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from mmpsearch.datasets import (CUHKSYSUDataset, SearchProtocol,
                                load_cuhk_protocol)
from mmpsearch.testing.released_trees import CUHK_IMAGES, write_cuhk
from .conftest import boxes_ids, dataset_infos

infos = partial(dataset_infos, CUHKSYSUDataset)


def test_files_have_the_released_nesting(tmp_path):
    # What loadmat (no squeeze_me) gives for the released nesting; the
    # loaders are written against exactly this.
    root = write_cuhk(str(tmp_path))
    anno = osp.join(root, 'annotation')
    img = loadmat(osp.join(anno, 'Images.mat'))['Img']
    assert img.shape == (1, 6) and img.dtype.names == ('imname', 'nAppear',
                                                       'box')
    assert img[0, 0]['imname'].shape == (1, )
    assert img[0, 4]['box'].shape == (1, 1)  # one box: a 1x1 struct
    assert img[0, 0]['box'][0, 0]['idlocate'].shape == (1, 4)
    assert loadmat(osp.join(anno, 'pool.mat'))['pool'].shape == (4, 1)
    train = loadmat(osp.join(anno, 'test/train_test/Train.mat'))['Train']
    assert train.dtype == object and train[0, 0].shape == (1, 1)
    testg = loadmat(osp.join(anno, 'test/train_test/TestG50.mat'))['TestG50']
    assert testg.shape == (1, 2)
    assert testg[0, 0]['Query'].shape == (1, 1)
    assert testg[0, 0]['Gallery'][0, 1]['idlocate'].shape == (0, 0)


@pytest.mark.parametrize('pool_column,train_column', [(True, True),
                                                      (False, False)])
def test_train_split(tmp_path, pool_column, train_column):
    root = write_cuhk(
        str(tmp_path), pool_column=pool_column, train_column=train_column)
    data = infos(root, 'train')
    # train = Images.mat minus pool.mat, in Images.mat order
    assert [d['img_id'] for d in data] == ['s1.jpg', 's2.jpg']
    s1, s2 = data
    assert s1['img_path'] == osp.join(root, 'Image', 'SSM', 's1.jpg')
    assert (s1['width'], s1['height'], s1['split']) == (120, 90, 'train')
    # [x, y, w, h] -> [x1, y1, x2, y2]; the w = 0 and h < 0 boxes are dropped
    # ids follow the cell order of Train.mat: p88 -> 0, p5 -> 1
    assert boxes_ids(s1) == ([[10, 10, 30, 60], [60, 20, 85, 80]], [1, 0])
    assert boxes_ids(s2) == ([[5, 5, 35, 75]], [0])
    assert all(i['bbox_label'] == 0 and i['ignore_flag'] == 0 for d in data
               for i in d['instances'])


def test_gallery_and_query_splits_share_ids(tmp_path):
    root = write_cuhk(str(tmp_path))
    gallery = {d['img_id']: d for d in infos(root, 'gallery', gallery_size=50)}
    assert list(gallery) == ['s4.jpg', 's3.jpg', 's5.jpg', 's6.jpg']
    assert boxes_ids(gallery['s4.jpg']) == ([[3, 4, 33, 74], [60, 5, 85, 65],
                                             [35, 20, 50, 60]], [1, 0, -1])
    assert boxes_ids(gallery['s3.jpg']) == ([[10, 10, 30, 60],
                                             [50, 15, 72, 70]], [-1, 0])
    assert boxes_ids(gallery['s5.jpg']) == ([[12, 8, 38, 74]], [1])
    assert boxes_ids(gallery['s6.jpg']) == ([[30, 10, 60, 80]], [1])
    assert gallery['s5.jpg']['split'] == 'gallery'

    queries = infos(root, 'query', gallery_size=50)
    assert [(q['img_id'], q['query_index'], q['split'])
            for q in queries] == [('s3.jpg', 0, 'query'),
                                  ('s4.jpg', 1, 'query')]
    # exactly the query box, with the id its gallery boxes have
    assert boxes_ids(queries[0]) == ([[50, 15, 72, 70]], [0])
    assert boxes_ids(queries[1]) == ([[3, 4, 33, 74]], [1])
    assert (queries[1]['width'], queries[1]['height']) == (100, 80)


def test_protocol(tmp_path):
    root = write_cuhk(str(tmp_path))
    proto = load_cuhk_protocol(root, gallery_size=50)
    assert isinstance(proto, SearchProtocol)
    assert (proto.name, proto.gallery_size) == ('cuhk', 50)
    assert list(proto.gallery) == ['s4.jpg', 's3.jpg', 's5.jpg', 's6.jpg']
    g = proto.gallery['s4.jpg']
    assert g.img_id == 's4.jpg' and g.boxes.dtype == np.float32
    np.testing.assert_array_equal(
        g.boxes, [[3, 4, 33, 74], [60, 5, 85, 65], [35, 20, 50, 60]])
    np.testing.assert_array_equal(g.person_ids, [1, 0, -1])
    assert g.person_ids.dtype == np.int64
    q0, q1 = proto.queries
    assert (q0.img_id, q0.person_id, q0.cam_id) == ('s3.jpg', 0, -1)
    np.testing.assert_array_equal(q0.box, [50, 15, 72, 70])
    assert [n for n, _ in q0.gallery] == ['s4.jpg', 's5.jpg', 's6.jpg']
    np.testing.assert_array_equal(q0.gallery[0][1], [60, 5, 85, 65])
    assert q0.gallery[1][1] is None and q0.gallery[2][1] is None
    assert [(n, None if b is None else b.tolist()) for n, b in q1.gallery] \
        == [('s5.jpg', [12, 8, 38, 74]), ('s6.jpg', [30, 10, 60, 80]),
            ('s3.jpg', None)]


def test_gallery_sizes(tmp_path):
    root = write_cuhk(str(tmp_path), sizes=(50, 100))
    assert len(load_cuhk_protocol(root, 100).queries) == 2
    with pytest.raises(ValueError) as e:
        CUHKSYSUDataset(data_root=root, split='gallery', gallery_size=77)
    assert 'gallery_size=77' in str(e.value)
    assert '(50, 100, 500, 1000, 2000, 4000)' in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        load_cuhk_protocol(root, 500)
    assert 'TestG500.mat' in str(e.value) and '[50, 100]' in str(e.value)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split='val'"):
        CUHKSYSUDataset(data_root=str(tmp_path), split='val')


@pytest.mark.parametrize('missing,split', [
    ('Images.mat', 'train'),
    ('pool.mat', 'gallery'),
    ('Train.mat', 'train'),
    ('TestG50.mat', 'query'),
])
def test_missing_file(tmp_path, missing, split):
    root = write_cuhk(str(tmp_path), skip=[missing])
    with pytest.raises(FileNotFoundError) as e:
        CUHKSYSUDataset(data_root=root, split=split, gallery_size=50)
    assert missing in str(e.value)


@pytest.mark.parametrize('file,field,split', [
    ('Images.mat', 'box', 'train'),
    ('box', 'idlocate', 'gallery'),
    ('Train.mat', 'scene', 'train'),
    ('TestG50.mat', 'idlocate', 'query'),
])
def test_missing_struct_field(tmp_path, file, field, split):
    root = write_cuhk(str(tmp_path), drop_field=(file, field))
    with pytest.raises(KeyError) as e:
        CUHKSYSUDataset(data_root=root, split=split, gallery_size=50)
    msg = str(e.value)
    assert f'no field {field!r}' in msg
    assert ('Images.mat' if file == 'box' else file) in msg


def test_wrong_variable_and_corrupt_file(tmp_path):
    root = write_cuhk(str(tmp_path))
    pool = osp.join(root, 'annotation', 'pool.mat')
    from scipy.io import savemat
    savemat(pool, {'pools': np.zeros((1, 1))})
    with pytest.raises(KeyError, match="no variable 'pool'"):
        load_cuhk_protocol(root, 50)
    with open(pool, 'wb') as f:
        f.write(b'not a mat file at all' * 10)
    with pytest.raises(ValueError, match='pool.mat could not be read'):
        load_cuhk_protocol(root, 50)


def test_box_outside_image(tmp_path):
    images = dict(CUHK_IMAGES)
    images['s6.jpg'] = (110, 85, [[30, 10, 30, 70], [95, 70, 40, 60]])
    root = write_cuhk(str(tmp_path), images=images)
    with pytest.raises(ValueError) as e:
        CUHKSYSUDataset(data_root=root, split='gallery', gallery_size=50)
    msg = str(e.value)
    assert 's6.jpg' in msg and '[95.0, 70.0, 135.0, 130.0]' in msg
    assert 'outside' in msg and '110x85' in msg


def test_box_a_little_past_the_border_is_kept(tmp_path):
    images = dict(CUHK_IMAGES)
    images['s6.jpg'] = (110, 85, [[30, 10, 30, 70], [90, 40, 22, 46]])
    root = write_cuhk(str(tmp_path), images=images)
    info = infos(root, 'gallery', gallery_size=50)[3]
    assert info['instances'][1]['bbox'] == [90, 40, 112, 86]


def test_protocol_box_matching_no_image_box(tmp_path):
    train = [('p88', [('s2.jpg', [5, 5, 30, 71])])]
    root = write_cuhk(str(tmp_path), train=train)
    with pytest.raises(ValueError) as e:
        CUHKSYSUDataset(data_root=root, split='train')
    msg = str(e.value)
    assert 'Train.mat' in msg and 's2.jpg' in msg and 'p88' in msg
    assert '[5.0, 5.0, 30.0, 71.0]' in msg and 'matches no box' in msg


def test_train_person_in_a_test_image(tmp_path):
    train = [('p88', [('s3.jpg', [10, 10, 20, 50])])]
    root = write_cuhk(str(tmp_path), train=train)
    with pytest.raises(ValueError, match="'s3.jpg', which is not a training"):
        CUHKSYSUDataset(data_root=root, split='train')


def test_image_sizes_read_once_from_headers(tmp_path, monkeypatch):
    root = write_cuhk(str(tmp_path))
    opened = []
    real_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(osp.basename(str(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, 'open', counting_open)
    infos(root, 'gallery', gallery_size=50)
    assert sorted(opened) == ['s3.jpg', 's4.jpg', 's5.jpg', 's6.jpg']
    infos(root, 'query', gallery_size=50)  # s3, s4 already known
    assert len(opened) == 4


def test_filter_cfg(tmp_path):
    root = write_cuhk(str(tmp_path))
    kept = infos(root, 'train', filter_cfg=dict(min_size=90))
    assert [d['img_id'] for d in kept] == ['s1.jpg', 's2.jpg']
    with pytest.raises(ValueError, match='removes all 2 images'):
        infos(root, 'train', filter_cfg=dict(min_size=91))
    with pytest.raises(KeyError, match='unknown keys'):
        infos(root, 'train', filter_cfg=dict(min_area=3))
