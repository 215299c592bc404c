# Copyright (c) mmpsearch contributors. All rights reserved.
"""Bad CUHK-SYSU / PRW trees are refused while the dataset is built, with an
error that names the file, the field or value and what was expected."""
import io
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image
from scipy.io import savemat

from mmpsearch.apis.inference import _read_image
from mmpsearch.datasets import (CUHKSYSUDataset, PRWDataset,
                                load_cuhk_protocol, load_prw_protocol)
from mmpsearch.datasets.file_checks import check_image_complete, clear_cache
from mmpsearch.evaluation.metrics.person_search_metric import load_protocol
from mmpsearch.registry import DATASETS
from mmpsearch.testing.released_trees import (CUHK_IMAGES, PRW_QUERIES,
                                              PRW_TEST, PRW_TRAIN, write_cuhk,
                                              write_prw)
from ..conftest import REPO, load_tool


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


# --------------------------------------------------------------------------
# PRW: a frame in both lists
# --------------------------------------------------------------------------
@pytest.mark.parametrize('build', [
    lambda r: PRWDataset(data_root=r, split='train'),
    lambda r: PRWDataset(data_root=r, split='gallery'),
    lambda r: PRWDataset(data_root=r, split='query'),
    load_prw_protocol,
])
def test_prw_frame_in_train_and_test_lists(tmp_path, build):
    root = write_prw(
        str(tmp_path), train=PRW_TRAIN + ['c4s1_000040', 'c3s2_000030'])
    with pytest.raises(ValueError) as e:
        build(root)
    msg = str(e.value)
    assert 'frame_train.mat' in msg and 'frame_test.mat' in msg
    assert "both list 2 frames, e.g. ['c3s2_000030', 'c4s1_000040']" in msg
    assert 'leak into training' in msg


# --------------------------------------------------------------------------
# Missing files and data roots
# --------------------------------------------------------------------------
@pytest.mark.parametrize('dataset,missing,split,expected', [
    ('cuhk', 'pool.mat', 'train', "test image list pool.mat (variable "
     "'pool'"),
    ('cuhk', 'pool.mat', 'gallery', 'test image list pool.mat'),
    ('cuhk', 'Train.mat', 'train', "training persons Train.mat (variable "
     "'Train')"),
    ('prw', 'frame_test.mat', 'gallery', "frame list (variable "
     "'img_index_test'"),
    ('prw', 'frame_test.mat', 'query', "variable 'img_index_test'"),
    ('prw', 'frame_train.mat', 'train', "variable 'img_index_train'"),
    ('prw', 'c3s2_000030.jpg.mat', 'gallery', 'N x 5 array [id, x, y, w, '
     'h]'),
])
def test_missing_file_names_what_was_expected(tmp_path, dataset, missing,
                                              split, expected):
    if dataset == 'cuhk':
        root = write_cuhk(str(tmp_path), skip=[missing])
        build = CUHKSYSUDataset
    else:
        root = write_prw(str(tmp_path), skip=[missing])
        build = PRWDataset
    with pytest.raises(FileNotFoundError) as e:
        build(
            data_root=root,
            split=split,
            **(dict(gallery_size=50) if dataset == 'cuhk' else {}))
    msg = str(e.value)
    assert msg.startswith(root) and missing in msg
    assert 'does not exist; expected' in msg and expected in msg


@pytest.mark.parametrize('build,dataset', [
    (lambda r: CUHKSYSUDataset(data_root=r, split='gallery', gallery_size=50),
     'CUHK-SYSU'),
    (lambda r: CUHKSYSUDataset(data_root=r, split='train'), 'CUHK-SYSU'),
    (lambda r: load_cuhk_protocol(r, 50), 'CUHK-SYSU'),
    (lambda r: PRWDataset(data_root=r, split='gallery'), 'PRW'),
    (lambda r: PRWDataset(data_root=r, split='query'), 'PRW'),
    (load_prw_protocol, 'PRW'),
])
def test_missing_data_root(tmp_path, build, dataset):
    root = str(tmp_path / 'no_such_root')
    with pytest.raises(FileNotFoundError) as e:
        build(root)
    msg = str(e.value)
    # not "TestG50.mat does not exist" nor "[Errno 2] ... frame_test.mat"
    assert msg.startswith(f'data_root {root} does not exist; expected the '
                          f'{dataset} dataset folder holding')
    assert 'TestG' not in msg and 'Errno' not in msg


def test_data_root_that_is_a_file(tmp_path):
    path = tmp_path / 'CUHK-SYSU.zip'
    path.write_bytes(b'PK')
    with pytest.raises(
            FileNotFoundError, match=f'data_root {path} is not a folder'):
        load_cuhk_protocol(str(path), 50)


def _assert_other_tree(build, root: str, start: str, option: str) -> None:
    """``build(root)`` refuses the tree of the other dataset: its message
    starts with ``start`` and names the ``--dataset`` option to use."""
    with pytest.raises(ValueError) as e:
        build(root)
    msg = str(e.value)
    assert msg.startswith(start)
    assert option in msg


@pytest.mark.parametrize(
    'build',
    [
        lambda r: PRWDataset(data_root=r, split='train'),
        lambda r: PRWDataset(data_root=r, split='query'),
        load_prw_protocol,
        lambda r: load_protocol('prw', r),  # eval_search.py --dataset prw
    ])
def test_prw_on_a_cuhk_root(tmp_path, build):
    root = write_cuhk(str(tmp_path))
    _assert_other_tree(
        build, root, f'data_root {root} holds a CUHK-SYSU tree '
        '(annotation), not PRW; expected frames/', '--dataset cuhk')


@pytest.mark.parametrize('build', [
    lambda r: CUHKSYSUDataset(data_root=r, split='train'),
    lambda r: CUHKSYSUDataset(data_root=r, split='query', gallery_size=50),
    lambda r: load_protocol('cuhk', r, 100),
])
def test_cuhk_on_a_prw_root(tmp_path, build):
    root = write_prw(str(tmp_path))
    _assert_other_tree(
        build, root, f'data_root {root} holds a PRW tree ('
        'frame_test.mat), not CUHK-SYSU', '--dataset prw')


def test_prw_config_on_a_cuhk_root(tmp_path):
    root = write_cuhk(str(tmp_path))
    cfg = Config.fromfile(str(REPO / 'configs/_base_/datasets/prw.py'))
    dataset = cfg.test_dataloader.dataset.datasets[0]
    dataset.data_root = root
    with pytest.raises(ValueError, match='holds a CUHK-SYSU tree'):
        DATASETS.build(dataset)


def test_eval_search_cli_prw_on_a_cuhk_root(tmp_path):
    root = write_cuhk(str(tmp_path / 'cuhk'))
    results = tmp_path / 'results.pkl'
    results.write_bytes(b'')  # the protocol is read first
    cli = load_tool('tools/analysis_tools/eval_search.py')
    with pytest.raises(ValueError, match='holds a CUHK-SYSU tree'):
        cli.main([str(results), '--dataset', 'prw', '--data-root', root])


# --------------------------------------------------------------------------
# query_info.txt
# --------------------------------------------------------------------------
def test_query_info_not_utf8(tmp_path):
    root = write_prw(str(tmp_path))
    path = osp.join(root, 'query_info.txt')
    with open(path, 'wb') as f:
        f.write(PRW_QUERIES[0].encode() + b'\r\n41 -3 10 35 95 c6s3_\xe9\r\n')
    with pytest.raises(ValueError) as e:
        PRWDataset(data_root=root, split='query')
    msg = str(e.value)
    assert msg.startswith(f"{path} line 2: byte b'\\xe9' at offset")
    assert 'is not UTF-8 text' in msg and 'id x y w h frame_name' in msg


@pytest.mark.parametrize('bad,what', [
    ('41 -3.0 10.0 thirty-five 95.0 c6s3_000050',
     "w = 'thirty-five' is not a number"),
    ('41 -3.0 10.0 35.0 95,5 c6s3_000050', "h = '95,5' is not a number"),
    ('p41 -3.0 10.0 35.0 95.0 c6s3_000050', "id = 'p41' is not an integer"),
    ('41 -3.0 10.0 35.0 c6s3_000050', 'it has 5 fields'),
])
def test_query_info_bad_field_is_named(tmp_path, bad, what):
    root = write_prw(str(tmp_path), query_lines=[PRW_QUERIES[0], bad])
    with pytest.raises(ValueError) as e:
        load_prw_protocol(root)
    msg = str(e.value)
    assert 'query_info.txt line 2' in msg and f'({what})' in msg
    assert 'id x y w h frame_name' in msg


# --------------------------------------------------------------------------
# Image names and files
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    'name', ['../../secret.jpg', '../Image/SSM/s1.jpg', '/etc/hosts.jpg'])
def test_image_name_leaving_the_image_folder(tmp_path, name):
    root = str(tmp_path / 'cuhk')
    if osp.isabs(name):
        write_cuhk(root)
        _rename_in_images_mat(root, 's1.jpg', name)
    else:
        # write_cuhk writes image <name> at Image/SSM/<name>, i.e. outside
        # that folder, as a hostile tree would have it: without the check
        # the dataset reads it
        images = dict(CUHK_IMAGES)
        images[name] = images.pop('s1.jpg')
        write_cuhk(root, images=images)
        assert osp.isfile(osp.join(root, 'Image', 'SSM', name))
    with pytest.raises(ValueError) as e:
        CUHKSYSUDataset(data_root=root, split='train')
    msg = str(e.value)
    assert msg.startswith(
        osp.join(root, 'annotation', 'Images.mat') + ': Img(')
    assert f'.imname = {name!r} leads outside the image folder ' \
        f'{osp.join(root, "Image", "SSM")}' in msg


def _rename_in_images_mat(root, old, new):
    from scipy.io import loadmat
    path = osp.join(root, 'annotation', 'Images.mat')
    img = loadmat(path)['Img']
    names = img['imname']
    for i in range(names.shape[1]):
        if names[0, i][0] == old:
            names[0, i] = np.array([new])
    img['imname'] = names
    savemat(path, {'Img': img})


def test_prw_frame_names_cannot_leave_the_folder(tmp_path):
    # already refused by the frame-name pattern; kept as a guard
    root = write_prw(str(tmp_path), test=PRW_TEST + ['../c1s1_000010'])
    with pytest.raises(ValueError, match="'../c1s1_000010' does not look"):
        PRWDataset(data_root=root, split='gallery')


@pytest.mark.parametrize('dataset', ['cuhk', 'prw'])
def test_folder_named_like_an_image(tmp_path, dataset):
    if dataset == 'cuhk':
        root = write_cuhk(str(tmp_path))
        path = osp.join(root, 'Image', 'SSM', 's5.jpg')
        build = dict(type='CUHKSYSUDataset', split='gallery', gallery_size=50)
    else:
        root = write_prw(str(tmp_path))
        path = osp.join(root, 'frames', 'c4s1_000040.jpg')
        build = dict(type='PRWDataset', split='gallery')
    os.remove(path)
    os.makedirs(path)
    with pytest.raises(FileNotFoundError) as e:
        DATASETS.build(dict(build, data_root=root))
    assert str(e.value) == f'{path} is a folder, not a file; expected an ' \
        'image file'
    with pytest.raises(FileNotFoundError, match='is a folder, not an image'):
        _read_image(path)


def _jpeg(width=96, height=64, quality=90, **kwargs) -> bytes:
    pixels = np.random.RandomState(0).randint(
        0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, 'JPEG', quality=quality, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize('keep', [0.5, 0.9, -2])
def test_truncated_jpeg_is_named_when_the_dataset_is_built(tmp_path, keep):
    root = write_cuhk(str(tmp_path))
    path = osp.join(root, 'Image', 'SSM', 's5.jpg')
    data = _jpeg(100, 80)
    cut = data[:int(len(data) * keep)] if keep > 0 else data[:keep]
    with open(path, 'wb') as f:
        f.write(cut)
    Image.open(path).size  # the header still reads
    with pytest.raises(ValueError) as e:
        CUHKSYSUDataset(data_root=root, split='gallery', gallery_size=50)
    assert str(e.value).startswith(
        f'{path} is a truncated JPEG file ({len(cut)} bytes): its image data '
        'is cut')
    with pytest.raises(ValueError, match='s5.jpg is a truncated JPEG'):
        _read_image(path)


def test_complete_images_are_accepted(tmp_path):
    # data after the end-of-image marker (some cameras append some), an EXIF
    # thumbnail (a second JPEG inside the header), progressive, PNG
    thumb = _jpeg(16, 16)
    exif = Image.Exif()
    exif[0x010e] = 'x'
    files = {
        'trailer.jpg':
        _jpeg() + b'\x00' * 10 + b'TRAILER' * 300,
        'progressive.jpg':
        _jpeg(progressive=True),
        'exif.jpg':
        _jpeg(exif=exif.tobytes()),
        'thumb_header.jpg':
        _jpeg()[:2] + b'\xff\xe1' + (len(thumb) + 2).to_bytes(2, 'big') +
        thumb + _jpeg()[2:] + b'junk',
    }
    buf = io.BytesIO()
    Image.new('RGB', (20, 10)).save(buf, 'PNG')
    files['ok.png'] = buf.getvalue()
    for name, data in files.items():
        path = str(tmp_path / name)
        with open(path, 'wb') as f:
            f.write(data)
        check_image_complete(path)
    # a cut thumbnail-carrying JPEG: the thumbnail's own end marker does
    # not count
    path = str(tmp_path / 'cut_thumb.jpg')
    with open(path, 'wb') as f:
        f.write(files['thumb_header.jpg'][:-2000])
    with pytest.raises(ValueError, match='truncated JPEG'):
        check_image_complete(path)
    path = str(tmp_path / 'cut.png')
    with open(path, 'wb') as f:
        f.write(files['ok.png'][:-12])
    with pytest.raises(ValueError, match='cut.png is a truncated PNG'):
        check_image_complete(path)
