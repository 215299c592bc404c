# Copyright (c) mmpsearch contributors. All rights reserved.
"""GalleryIndex.load checks every array of the file (shape, dtype, range,
finiteness) and names the file and the field; unreadable files are named."""
import numpy as np
import pytest
import torch

import mmpsearch.apis.inference as inference
from mmpsearch.apis import GalleryIndex, search

D = 8


def _arrays(n_paths=2, **over):
    arrays = dict(
        img_paths=np.array([f'g{i}.jpg' for i in range(n_paths)]),
        bboxes=np.array([[0, 0, 10, 20], [5, 5, 9, 30], [1, 2, 3, 4]],
                        np.float32),
        scores=np.array([0.9, 0.8, 0.5], np.float32),
        embeddings=np.random.RandomState(0).randn(3, D).astype(np.float32),
        image_inds=np.array([0, 1, 1], np.int64))
    arrays.update(over)
    return arrays


def _write(tmp_path, name='index', **over):
    path = str(tmp_path / f'{name}.npz')
    np.savez(path, **_arrays(**over))
    return path


def test_a_valid_index_loads_unchanged(tmp_path):
    path = _write(tmp_path)
    index = GalleryIndex.load(path, embed_dim=D)
    want = _arrays()
    assert index.img_paths == ['g0.jpg', 'g1.jpg']
    for key in ('bboxes', 'scores', 'embeddings', 'image_inds'):
        np.testing.assert_array_equal(getattr(index, key), want[key])
    assert index.bboxes.dtype == np.float32
    assert index.image_inds.dtype == np.int64
    # save -> load round trip, also with no detection at all
    empty = GalleryIndex(['g0.jpg'], np.zeros((0, 4)), np.zeros(0),
                         np.zeros((0, D)), np.zeros(0, np.int64))
    empty.save(str(tmp_path / 'empty.npz'))
    assert len(GalleryIndex.load(str(tmp_path / 'empty.npz'))) == 0


def test_bboxes_of_five_columns_are_not_reshaped(tmp_path):
    # 4 rows of 5 columns used to become 5 rows of 4 against 4 scores
    boxes = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = _write(
        tmp_path,
        bboxes=boxes,
        scores=np.full(4, 0.9, np.float32),
        embeddings=np.ones((4, D), np.float32),
        image_inds=np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError) as e:
        GalleryIndex.load(path)
    assert str(e.value) == (
        f'gallery index {path}: bboxes has shape (4, 5); expected (N, 4) '
        '[x1, y1, x2, y2], one row per detection')
    # the constructor (index_gallery's way in) refuses it too
    with pytest.raises(ValueError, match=r'GalleryIndex: bboxes has shape'):
        GalleryIndex(['a.jpg'], boxes, np.ones(4), np.ones((4, D)),
                     np.zeros(4, np.int64))


NAN_ROW = np.random.RandomState(0).randn(3, D).astype(np.float32)
NAN_ROW[2, 3] = np.nan


@pytest.mark.parametrize('over,field,text', [
    (dict(image_inds=np.array([0, -1, 1])), 'image_inds',
     'row 1 = -1 is not an index of img_paths; expected 0 <= image_inds < 2'),
    (dict(image_inds=np.array([0, 1, 2])), 'image_inds',
     'row 2 = 2 is not an index of img_paths'),
    (dict(image_inds=np.array([0., 1., 1.])), 'image_inds',
     'has dtype float64; expected integers'),
    (dict(embeddings=NAN_ROW), 'embeddings',
     'has NaN or infinite values in rows [2] (of 3)'),
    (dict(bboxes=np.array([[0, 0, 10, 20], [5, 5, np.inf, 30], [1, 2, 3, 4]])),
     'bboxes', 'has NaN or infinite values in rows [1]'),
    (dict(scores=np.array([0.9, np.nan, 0.5])), 'scores',
     'has NaN or infinite values in rows [1]'),
    (dict(scores=np.array([0.9, 1.5, 0.5])), 'scores',
     'row 1 = 1.5 is outside [0, 1]'),
    (dict(scores=np.array([[0.9, 0.8, 0.5]])), 'scores',
     'has shape (1, 3); expected (N,) with N = 3'),
    (dict(scores=np.array([0.9, 0.8])), 'scores',
     'has shape (2,); expected (N,) with N = 3'),
    (dict(embeddings=np.ones(3)), 'embeddings',
     'has shape (3,); expected (N, D) with N = 3'),
    (dict(embeddings=np.ones((3, 0))), 'embeddings', 'expected D >= 1'),
    (dict(bboxes=np.array([[0, 0, 10, 20], [9, 5, 5, 30], [1, 2, 3, 4]])),
     'bboxes', 'row 1 = [9.0, 5.0, 5.0, 30.0] has x2 < x1 or y2 < y1'),
    (dict(bboxes=np.ones((3, 4), bool)), 'bboxes',
     'has dtype bool; expected real numbers'),
    (dict(img_paths=np.array([], str)), 'img_paths',
     'expected a non-empty list of image paths'),
    (dict(img_paths=np.array([1, 2])), 'img_paths', 'is int64 of shape (2,)'),
])
def test_bad_array_names_file_and_field(tmp_path, over, field, text):
    path = _write(tmp_path, **over)
    with pytest.raises(ValueError) as e:
        GalleryIndex.load(path)
    msg = str(e.value)
    assert msg.startswith(f'gallery index {path}: {field} '), msg
    assert text in msg, msg


def test_embedding_width_other_than_the_searchers(tmp_path, monkeypatch):
    path = _write(tmp_path)
    with pytest.raises(ValueError) as e:
        GalleryIndex.load(path, embed_dim=256)
    assert str(e.value) == (
        f'gallery index {path}: embeddings have width {D}, but the searcher '
        'embeds persons in 256 dimensions; expected an index made by '
        'index_gallery with the same searcher')
    # search() compares it with the query embedding (was a matmul error)
    index = GalleryIndex.load(path)
    # search() refuses anything but a searcher (None was read on)
    searcher = torch.nn.Identity()
    searcher.test_pipeline = None
    monkeypatch.setattr(inference, 'embed_query',
                        lambda *args: np.ones(256, np.float32) / 16)
    with pytest.raises(ValueError, match=f'{path}: embeddings have width 8'):
        search(searcher, 'q.jpg', [0, 0, 1, 1], index)
    monkeypatch.setattr(inference, 'embed_query',
                        lambda *args: np.ones(D, np.float32))
    assert len(search(searcher, 'q.jpg', [0, 0, 1, 1], index)) == 2


@pytest.mark.parametrize('content,text', [
    (b'', 'is empty (0 bytes)'),
    (b'PK\x03\x04 not really a zip', 'could not be read (BadZipFile'),
    (b'\x93NUMPY garbage', 'could not be read'),
    (b'hello', 'could not be read'),
])
def test_corrupt_or_empty_file_is_named(tmp_path, content, text):
    path = str(tmp_path / 'index.npz')
    with open(path, 'wb') as f:
        f.write(content)
    with pytest.raises(ValueError) as e:
        GalleryIndex.load(path)
    msg = str(e.value)
    assert msg.startswith(f'gallery index {path} ') and text in msg, msg
    assert 'written by GalleryIndex.save' in msg


def test_cut_archive_single_array_and_folder(tmp_path):
    good = _write(tmp_path)
    with open(good, 'rb') as f:
        data = f.read()
    cut = str(tmp_path / 'cut.npz')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(
            ValueError, match=f'gallery index {cut} could not be '
            'read'):
        GalleryIndex.load(cut)
    single = str(tmp_path / 'single.npz')
    with open(single, 'wb') as f:
        np.save(f, np.zeros((3, 4)))
    with pytest.raises(
            ValueError,
            match=f'gallery index {single} holds a '
            r'single array of shape \(3, 4\), not an .npz'):
        GalleryIndex.load(single)
    with pytest.raises(FileNotFoundError, match='is a folder'):
        GalleryIndex.load(str(tmp_path))
    np.savez(str(tmp_path / 'other.npz'), embeddings=np.ones((2, 2)))
    with pytest.raises(KeyError, match=r"lacks \['img_paths', 'bboxes'"):
        GalleryIndex.load(str(tmp_path / 'other.npz'))
