# Copyright (c) mmpsearch contributors. All rights reserved.
"""PRWDataset and load_prw_protocol on hand-built released trees."""
import os.path as osp
from functools import partial

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from mmpsearch.datasets import PRWDataset, load_prw_protocol, prw_cam_id
from mmpsearch.testing.released_trees import PRW_FRAMES, PRW_QUERIES, write_prw
from .conftest import boxes_ids, dataset_infos

infos = partial(dataset_infos, PRWDataset)


def test_files_have_the_released_nesting(tmp_path):
    root = write_prw(str(tmp_path))
    frames = loadmat(osp.join(root, 'frame_test.mat'))['img_index_test']
    assert frames.shape == (3, 1) and frames.dtype == object
    assert frames[0, 0].shape == (1, ) and frames[0, 0][0] == 'c3s2_000030'
    anno = loadmat(osp.join(root, 'annotations', 'c1s1_000010.jpg'))
    assert anno['box_new'].shape == (3, 5)
    with open(osp.join(root, 'query_info.txt'), 'rb') as f:
        assert f.read().count(b'\r\n') == 2


def test_train_split_contiguous_ids(tmp_path):
    root = write_prw(str(tmp_path))
    data = infos(root, 'train')
    assert [d['img_id']
            for d in data] == ['c1s1_000010.jpg', 'c2s1_000020.jpg']
    c1, c2 = data
    assert c1['img_path'] == osp.join(root, 'frames', 'c1s1_000010.jpg')
    assert (c1['width'], c1['height'], c1['cam_id']) == (160, 120, 1)
    assert c2['cam_id'] == 2 and c2['split'] == 'train'
    # original ids {3, 7, 12} -> 0, 1, 2 (sorted); -2 -> -1
    assert boxes_ids(c1) == ([[10, 10, 40, 90], [60, 20, 80, 80],
                              [100, 15, 125, 85]], [2, -1, 1])
    # negative x / y clipped at 0 before w, h are added (anno_file key)
    assert boxes_ids(c2) == ([[0, 12, 30, 92], [90, 0, 110, 50]], [0, 2])


def test_gallery_split_box_keys_and_original_ids(tmp_path):
    root = write_prw(str(tmp_path))
    data = {d['img_id']: d for d in infos(root, 'gallery')}
    assert list(data) == [
        'c3s2_000030.jpg', 'c4s1_000040.jpg', 'c6s3_000050.jpg'
    ]
    # anno_previous only
    assert boxes_ids(data['c3s2_000030.jpg']) == ([[20, 10, 50, 100],
                                                   [80, 30, 100,
                                                    80]], [40, -1])
    # box_new beats anno_file
    assert boxes_ids(data['c4s1_000040.jpg']) == ([[5, 5, 45, 105],
                                                   [70, 20, 100,
                                                    110]], [40, 41])
    # anno_file beats anno_previous; x = -3 clipped
    assert boxes_ids(data['c6s3_000050.jpg']) == ([[0, 10, 35, 105],
                                                   [100, 40, 120,
                                                    80]], [41, -1])
    assert [d['cam_id'] for d in data.values()] == [3, 4, 6]


@pytest.mark.parametrize('line_end', ['\r\n', '\n'])
def test_query_split(tmp_path, line_end):
    root = write_prw(str(tmp_path), line_end=line_end)
    queries = infos(root, 'query')
    assert [(q['img_id'], q['cam_id'], q['query_index'], q['split'])
            for q in queries] == [('c3s2_000030.jpg', 3, 0, 'query'),
                                  ('c6s3_000050.jpg', 6, 1, 'query')]
    # exactly the query box with the original id, as in the gallery split
    assert boxes_ids(queries[0]) == ([[20, 10, 50, 100]], [40])
    assert boxes_ids(queries[1]) == ([[0, 10, 35, 105]], [41])


def test_query_file_without_final_line_end(tmp_path):
    root = write_prw(str(tmp_path))
    with open(osp.join(root, 'query_info.txt'), 'w', newline='') as f:
        f.write('\r\n'.join(PRW_QUERIES))
    assert len(infos(root, 'query')) == 2


def test_protocol(tmp_path):
    root = write_prw(str(tmp_path))
    proto = load_prw_protocol(root)
    assert proto.name == 'prw' and proto.gallery_size is None
    assert list(proto.gallery) == [
        'c3s2_000030.jpg', 'c4s1_000040.jpg', 'c6s3_000050.jpg'
    ]
    g = proto.gallery['c4s1_000040.jpg']
    assert g.cam_id == 4 and g.boxes.dtype == np.float32
    np.testing.assert_array_equal(g.boxes,
                                  [[5, 5, 45, 105], [70, 20, 100, 110]])
    np.testing.assert_array_equal(g.person_ids, [40, 41])
    q0, q1 = proto.queries
    assert (q0.img_id, q0.person_id, q0.cam_id, q0.gallery) == \
        ('c3s2_000030.jpg', 40, 3, None)
    np.testing.assert_array_equal(q1.box, [0, 10, 35, 105])
    assert (q1.person_id, q1.cam_id) == (41, 6)


def test_cam_id():
    assert prw_cam_id('c5s2_012345') == 5
    assert prw_cam_id('c1s1_000151.jpg') == 1
    with pytest.raises(ValueError, match="'s1_000151'"):
        prw_cam_id('s1_000151')


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split='test'"):
        PRWDataset(data_root=str(tmp_path), split='test')


@pytest.mark.parametrize('missing,split', [
    ('frame_train.mat', 'train'),
    ('frame_test.mat', 'gallery'),
    ('query_info.txt', 'query'),
    ('c4s1_000040.jpg.mat', 'gallery'),
])
def test_missing_file(tmp_path, missing, split):
    root = write_prw(str(tmp_path), skip=[missing])
    with pytest.raises(FileNotFoundError) as e:
        PRWDataset(data_root=root, split=split)
    assert missing in str(e.value)


def test_annotation_without_box_key(tmp_path):
    root = write_prw(str(tmp_path))
    path = osp.join(root, 'annotations', 'c4s1_000040.jpg.mat')
    savemat(path, {'boxes': np.zeros((1, 5))})
    with pytest.raises(KeyError) as e:
        PRWDataset(data_root=root, split='gallery')
    msg = str(e.value)
    assert 'c4s1_000040.jpg.mat' in msg and 'box_new' in msg
    assert 'anno_previous' in msg and "'boxes'" in msg


def test_annotation_of_wrong_shape(tmp_path):
    root = write_prw(str(tmp_path))
    path = osp.join(root, 'annotations', 'c3s2_000030.jpg.mat')
    savemat(path, {'box_new': np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r'N x 5 .* shape \(2, 4\)'):
        load_prw_protocol(root)


def test_unexpected_negative_id(tmp_path):
    frames = dict(PRW_FRAMES)
    frames['c3s2_000030'] = (160, 120, {'box_new': [[-5, 1, 1, 10, 10]]})
    root = write_prw(str(tmp_path), frames=frames)
    with pytest.raises(ValueError, match=r'person ids \[-5\]'):
        load_prw_protocol(root)


@pytest.mark.parametrize('bad', [
    '41 -3.0 10.0 35.0 c6s3_000050',
    '41.5 -3.0 10.0 35.0 95.0 c6s3_000050',
    '41 -3.0 ten 35.0 95.0 c6s3_000050',
])
def test_malformed_query_line(tmp_path, bad):
    root = write_prw(str(tmp_path), query_lines=[PRW_QUERIES[0], bad])
    with pytest.raises(ValueError) as e:
        PRWDataset(data_root=root, split='query')
    msg = str(e.value)
    assert 'query_info.txt line 2' in msg and 'id x y w h frame_name' in msg


def test_query_in_a_train_frame(tmp_path):
    root = write_prw(
        str(tmp_path),
        query_lines=[PRW_QUERIES[0], '7 100 15 25 70 c1s1_000010'])
    with pytest.raises(ValueError, match="line 2: frame 'c1s1_000010' is not"):
        load_prw_protocol(root)


def test_bad_frame_name(tmp_path):
    frames = dict(PRW_FRAMES)
    frames['frame_9'] = (160, 120, {'box_new': [[40, 1, 1, 10, 10]]})
    root = write_prw(
        str(tmp_path), frames=frames, test=['c3s2_000030', 'frame_9'])
    with pytest.raises(ValueError) as e:
        PRWDataset(data_root=root, split='gallery')
    assert 'frame_test.mat' in str(e.value) and "'frame_9'" in str(e.value)


def test_box_outside_image(tmp_path):
    frames = dict(PRW_FRAMES)
    frames['c4s1_000040'] = (160, 120, {'box_new': [[40, 150, 100, 40, 90]]})
    root = write_prw(str(tmp_path), frames=frames)
    with pytest.raises(ValueError) as e:
        PRWDataset(data_root=root, split='gallery')
    msg = str(e.value)
    assert 'c4s1_000040.jpg' in msg and '[150.0, 100.0, 190.0, 190.0]' in msg
    assert 'outside' in msg


def test_zero_size_box_is_dropped_with_a_warning(tmp_path, monkeypatch):
    frames = dict(PRW_FRAMES)
    frames['c3s2_000030'] = (160, 120, {
        'box_new': [[40, 20, 10, 30, 90], [-2, 80, 30, 0, 50]]
    })
    root = write_prw(str(tmp_path), frames=frames)
    warnings = []
    monkeypatch.setattr('mmpsearch.datasets.prw.print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    gallery = infos(root, 'gallery')
    assert boxes_ids(gallery[0]) == ([[20, 10, 50, 100]], [40])
    assert len(warnings) == 1 and 'c3s2_000030.jpg.mat' in warnings[0]
    assert '[[80.0, 30.0, 0.0, 50.0]]' in warnings[0]
