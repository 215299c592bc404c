# Copyright (c) mmpsearch contributors. All rights reserved.
"""Wrong argument types of mmpsearch.apis are a TypeError / ValueError that
says what was expected (they used to be an AttributeError, or were read as
file names: ``image 5 does not exist``, ``image 47 does not exist`` for
bytes); a bad ``cfg_options`` or checkpoint folder is named; and
``GalleryIndex.save`` names its target, leaving no temporary file."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from mmpsearch.apis import (GalleryIndex, embed_query, index_gallery,
                            init_searcher, search)

REPO = Path(__file__).resolve().parents[2]
ORACLE = str(REPO / 'tests' / 'data' / 'configs' / 'oracle_searcher.py')
BOX = [5, 5, 30, 50]


def _cfg(boxes_file):
    cfg = Config.fromfile(ORACLE)
    cfg.model.boxes_file = str(boxes_file)
    return cfg


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A query image, a one-image gallery folder and the oracle searcher
    (mmpsearch/testing/oracle_searcher.py) that detects ``BOX`` in both."""
    root = tmp_path_factory.mktemp('api_types')
    img = np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8)
    (root / 'gallery').mkdir()
    cv2.imwrite(str(root / 'gallery' / 'a.jpg'), img)
    cv2.imwrite(str(root / 'q.jpg'), img)
    boxes = root / 'boxes.json'
    boxes.write_text(json.dumps({'a.jpg': [BOX], 'q.jpg': [BOX]}))
    return root, init_searcher(_cfg(boxes)), boxes


def test_the_scene_searches(scene):
    root, searcher, _ = scene
    hits = search(searcher, str(root / 'q.jpg'), BOX, str(root / 'gallery'))
    assert len(hits) == 1 and hits[0].similarity == pytest.approx(1.0)


@pytest.mark.parametrize('bad, text', [
    (None, 'search: searcher must be the model init_searcher returns, got '
     'NoneType None'),
    ('configs/psdiff/psdiff_r18_synthetic.py', "got str 'configs/psdiff/"
     "psdiff_r18_synthetic.py' (a config file? build the searcher first: "
     'searcher = init_searcher(config, checkpoint))'),
])
def test_search_refuses_what_is_not_a_searcher(scene, bad, text):
    root, _, _ = scene
    with pytest.raises(TypeError) as e:  # was an AttributeError
        search(bad, str(root / 'q.jpg'), BOX, str(root / 'gallery'))
    assert text in str(e.value)
    with pytest.raises(TypeError, match='index_gallery: searcher must be'):
        index_gallery(bad, str(root / 'gallery'))


@pytest.mark.parametrize('image', [5, None, b'q.jpg'])
def test_an_image_that_is_no_path_or_array(scene, image):
    root, searcher, _ = scene
    with pytest.raises(
            TypeError,
            match='the query image must be an image '
            'path \\(str or Path\\) or an H x W x 3 uint8 BGR '
            'array, got '):
        search(searcher, image, BOX, str(root / 'gallery'))
    with pytest.raises(TypeError, match='the query image must be'):
        embed_query(searcher, image, BOX)


@pytest.mark.parametrize(
    'gallery, error, text',
    [
        (5, TypeError, 'gallery: expected a folder of images, a list of image '
         'paths or a GalleryIndex, got int 5'),
        ({
            'a.jpg': 1
        }, TypeError, "got dict {'a.jpg': 1}"),
        (b'gallery', TypeError, "got bytes b'gallery'"),  # was 'image 103'
        ([1, 2], TypeError, 'gallery[0] is int 1; expected an image path'),
    ])
def test_a_gallery_of_the_wrong_type(scene, gallery, error, text):
    root, searcher, _ = scene
    with pytest.raises(error) as e:
        search(searcher, str(root / 'q.jpg'), BOX, gallery)
    assert text in str(e.value)
    with pytest.raises(error):
        index_gallery(searcher, gallery)


def test_a_gallery_that_is_a_single_file(scene, tmp_path):
    root, searcher, _ = scene
    one = str(root / 'gallery' / 'a.jpg')
    # was "gallery folder .../a.jpg does not exist"
    with pytest.raises(
            ValueError,
            match=f'gallery {one} is a single file; '
            r'expected a folder .* \(e\.g\. \[.*a\.jpg.\]\)'):
        search(searcher, str(root / 'q.jpg'), BOX, one)
    index = tmp_path / 'index.npz'
    index_gallery(searcher, [one]).save(str(index))
    with pytest.raises(ValueError, match=r'GalleryIndex\.load\('):
        index_gallery(searcher, str(index))
    # a list of that one file, or Path objects, are fine
    assert len(search(searcher, root / 'q.jpg', BOX, [Path(one)])) == 1


@pytest.mark.parametrize('box', [['5', '5', '30', 'x'], ['5', '5', '30', '50'],
                                 '5 5 30 50', [5, 5, 30, True], {
                                     'x1': 5
                                 }])
def test_a_query_box_that_is_not_numbers(scene, box):
    root, searcher, _ = scene
    # strings were parsed ('5' -> 5.0) or failed raw in numpy
    with pytest.raises(
            TypeError,
            match='query box must be a list, tuple or '
            r'array of 4 numbers \[x1, y1, x2, y2\] in pixels'):
        search(searcher, str(root / 'q.jpg'), box, str(root / 'gallery'))


def test_numeric_boxes_of_every_kind_are_fine(scene):
    import torch
    root, searcher, _ = scene
    for box in ([5, 5, 30, 50], (5.0, 5, 30, 50.0), np.array(BOX),
                np.array(BOX, np.float32), torch.tensor(BOX),
                [np.int64(5), 5, 30, 50]):
        assert len(embed_query(searcher, str(root / 'q.jpg'), box)) > 0


def test_init_searcher_cfg_options(scene):
    _, _, boxes = scene
    # a list was an AttributeError ('list' object has no attribute 'items')
    with pytest.raises(
            TypeError,
            match=r'init_searcher: cfg_options must '
            r"be a dict of dotted keys, .* got list \["):
        init_searcher(_cfg(boxes), cfg_options=[f'model.boxes_file={boxes}'])
    # a misspelled top-level key was ignored without a word
    with pytest.raises(
            KeyError,
            match=r"init_searcher: cfg_options "
            r"modle\.boxes_file: the config has no key 'modle' "
            r"\(did you mean 'model'\?\)"):
        init_searcher(_cfg(boxes), cfg_options={'modle.boxes_file': 'x'})
    # a misspelled argument of a class, as --cfg-options
    with pytest.raises(KeyError, match="did you mean 'boxes_file'"):
        init_searcher(_cfg(boxes), cfg_options={'model.boxes_fil': 'x'})
    # right keys still apply
    searcher = init_searcher(
        _cfg('nowhere.json'), cfg_options={'model.boxes_file': str(boxes)})
    assert searcher.cfg.model.boxes_file == str(boxes)


def test_init_searcher_checkpoint_folder(scene, tmp_path):
    _, _, boxes = scene
    folder = tmp_path / 'ckpt.pth'
    folder.mkdir()
    with pytest.raises(
            FileNotFoundError,
            match=f'{folder} is a folder, not '
            'a file; expected a checkpoint'):
        init_searcher(_cfg(boxes), str(folder))


def _index():
    return GalleryIndex(['a.jpg'], np.array([[0, 0, 5, 5]], np.float32),
                        np.array([0.9]), np.ones((1, 4)), np.array([0]))


def test_index_save_names_its_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'missing' / 'index.npz'
    # was: No such file or directory: '.../index.npz.tmp.npz'
    with pytest.raises(FileNotFoundError) as e:
        _index().save(str(target))
    msg = str(e.value)
    assert msg.startswith(f'cannot save the gallery index to {target}: the '
                          f'folder {target.parent} does not exist')
    assert '.tmp' not in msg
    folder = tmp_path / 'a_folder.npz'
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match='it is a folder'):
        _index().save(str(folder))
    # a failing write leaves nothing behind
    path = tmp_path / 'index.npz'

    class Boom(Exception):
        pass

    def boom(*args, **kwargs):
        raise Boom

    import mmpsearch.apis.gallery_index as gallery_index
    real = gallery_index.os.replace
    gallery_index.os.replace = boom
    try:
        with pytest.raises(Boom):
            _index().save(str(path))
    finally:
        gallery_index.os.replace = real
    assert os.listdir(tmp_path) == ['a_folder.npz']
    _index().save(str(path))
    assert sorted(os.listdir(tmp_path)) == ['a_folder.npz', 'index.npz']
