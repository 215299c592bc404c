# Copyright (c) mmpsearch contributors. All rights reserved.
"""CropPersonBox and PersonCropDataset on a synthetic CUHK-SYSU tree."""
from collections import Counter, defaultdict

import mmcv
import numpy as np
import pytest
from mmcv.transforms import LoadImageFromFile

from mmpsearch.datasets.cuhk_sysu import CUHKSYSUDataset
from mmpsearch.datasets.person_crops import PersonCropDataset
from mmpsearch.datasets.transforms import CropPersonBox
from mmpsearch.registry import DATASETS, TRANSFORMS


def _scene_dataset(root: str) -> CUHKSYSUDataset:
    return CUHKSYSUDataset(data_root=root, split='train')


def _inner_cfg(root: str) -> dict:
    return dict(type='CUHKSYSUDataset', data_root=root, split='train')


# --------------------------------------------------------------------------
# CropPersonBox
# --------------------------------------------------------------------------
def test_crop_is_the_box_region():
    img = np.arange(40 * 60 * 3, dtype=np.int64).reshape(40, 60, 3) % 251
    img = img.astype(np.uint8)
    crop = TRANSFORMS.build(dict(type='CropPersonBox'))
    out = crop(dict(img=img.copy(), bbox=np.array([10.2, 5.0, 20.0, 30.7])))
    # edges rounded outwards: x 10..20, y 5..31
    np.testing.assert_array_equal(out['img'], img[5:31, 10:20])
    assert out['img_shape'] == (26, 10)
    np.testing.assert_array_equal(out['crop_bbox'], [10, 5, 20, 31])


def test_crop_clips_to_the_image():
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)
    out = CropPersonBox()(dict(img=img, bbox=[-5.0, -3.0, 70.0, 12.0]))
    np.testing.assert_array_equal(out['img'], img[0:12, 0:60])


@pytest.mark.parametrize('box', [[70, 0, 80, 10], [10, 10, 10, 20]])
def test_crop_outside_or_empty_box_is_an_error(box):
    img = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ValueError, match=r'scene\.jpg.*covers no pixel'):
        CropPersonBox()(dict(img=img, bbox=box, img_path='scene.jpg'))


def test_crop_bad_box_values_are_an_error():
    img = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ValueError, match='four finite numbers'):
        CropPersonBox()(dict(img=img, bbox=[1, 2, 3]))
    with pytest.raises(KeyError, match="'person_box'"):
        CropPersonBox(bbox_key='person_box')(dict(img=img, bbox=[1, 2, 3, 4]))


# --------------------------------------------------------------------------
# PersonCropDataset
# --------------------------------------------------------------------------
def test_one_sample_per_labeled_box(tiny_cuhk):
    scenes = _scene_dataset(tiny_cuhk)
    labeled = [(info['img_id'], j, inst['person_id'])
               for info in (scenes.get_data_info(i)
                            for i in range(len(scenes)))
               for j, inst in enumerate(info['instances'])
               if inst['person_id'] >= 0]
    ds = PersonCropDataset(dataset=_inner_cfg(tiny_cuhk))
    got = [(ds.get_data_info(i)['img_id'], ds.get_data_info(i)['box_index'],
            ds.get_data_info(i)['person_id']) for i in range(len(ds))]
    assert got == labeled
    pids = sorted({p for _, _, p in labeled})
    assert ds.metainfo['person_ids'] == tuple(pids)
    assert len(ds.metainfo['classes']) == len(pids)
    # gt_label is the rank of the person id among the labeled ids
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert info['gt_label'] == pids.index(info['person_id'])
    # every scene is recorded with all its boxes, in dataset order
    assert [s['img_id'] for s in ds.scenes] == [
        scenes.get_data_info(i)['img_id'] for i in range(len(scenes))
    ]


def test_unlabeled_boxes_for_extraction(tiny_cuhk):
    scenes = _scene_dataset(tiny_cuhk)
    ds = PersonCropDataset(
        dataset=_inner_cfg(tiny_cuhk), include_unlabeled=True)
    n_boxes = sum(
        len(scenes.get_data_info(i)['instances']) for i in range(len(scenes)))
    assert len(ds) == n_boxes
    n_unlabeled = sum(
        ds.get_data_info(i)['gt_label'] == -1 for i in range(len(ds)))
    assert 0 < n_unlabeled < n_boxes
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        scene = ds.scenes[info['image_index']]
        np.testing.assert_array_equal(info['bbox'],
                                      scene['bboxes'][info['box_index']])
        assert (info['gt_label'] == -1) == (info['person_id'] < 0)


def test_holdout_split_is_disjoint_and_per_identity(tiny_cuhk):
    full = PersonCropDataset(dataset=_inner_cfg(tiny_cuhk))
    train = PersonCropDataset(
        dataset=_inner_cfg(tiny_cuhk), subset='train', holdout_every=4)
    val = PersonCropDataset(
        dataset=_inner_cfg(tiny_cuhk), subset='val', holdout_every=4)

    def keys(ds):
        return {(ds.get_data_info(i)['img_id'],
                 ds.get_data_info(i)['box_index'])
                for i in range(len(ds))}

    assert keys(train).isdisjoint(keys(val))
    assert keys(train) | keys(val) == keys(full)
    per_id = Counter(
        full.get_data_info(i)['person_id'] for i in range(len(full)))
    val_per_id = Counter(
        val.get_data_info(i)['person_id'] for i in range(len(val)))
    for pid, n in per_id.items():
        assert val_per_id[pid] == n // 4
    # the three subsets share one label map
    assert train.metainfo['person_ids'] == val.metainfo['person_ids']
    label_of = defaultdict(set)
    for ds in (train, val):
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            label_of[info['person_id']].add(info['gt_label'])
    assert all(len(v) == 1 for v in label_of.values())


def test_bad_arguments_name_the_problem(tiny_cuhk):
    with pytest.raises(
            ValueError, match=r"has \d+ labeled identities but "
            r'num_classes=3'):
        PersonCropDataset(dataset=_inner_cfg(tiny_cuhk), num_classes=3)
    with pytest.raises(ValueError, match="subset='all'"):
        PersonCropDataset(
            dataset=_inner_cfg(tiny_cuhk),
            include_unlabeled=True,
            subset='train')
    with pytest.raises(ValueError, match="subset='everything'"):
        PersonCropDataset(dataset=_inner_cfg(tiny_cuhk), subset='everything')
    with pytest.raises(ValueError, match='holdout_every must be >= 2'):
        PersonCropDataset(dataset=_inner_cfg(tiny_cuhk), holdout_every=1)
    # no identity has that many boxes: an empty 'val' is named, not left to
    # mmengine's "need at least one array to concatenate"
    with pytest.raises(ValueError, match="subset='val' .* holds no crop"):
        PersonCropDataset(
            dataset=_inner_cfg(tiny_cuhk), subset='val', holdout_every=1000)
    with pytest.raises(TypeError, match='config dict or an mmengine'):
        PersonCropDataset(dataset=[1, 2])


def test_pipeline_gives_resized_crops_of_the_box(tiny_cuhk):
    from mmcv.transforms import Resize
    from mmpretrain.datasets.transforms import PackInputs
    ds = DATASETS.build(
        dict(
            type='PersonCropDataset',
            dataset=_inner_cfg(tiny_cuhk),
            pipeline=[
                dict(type=LoadImageFromFile),
                dict(type=CropPersonBox),
                dict(type=Resize, scale=(32, 64), keep_ratio=False),
                dict(type=PackInputs),
            ]))
    sample = ds[3]
    info = ds.get_data_info(3)
    assert tuple(sample['inputs'].shape) == (3, 64, 32)
    assert int(sample['data_samples'].gt_label) == info['gt_label']
    assert sample['data_samples'].sample_idx == 3
    # the pixels are those of the box, resized
    scene = mmcv.imread(info['img_path'])
    x1, y1, x2, y2 = info['bbox']
    x1, y1 = int(np.floor(x1)), int(np.floor(y1))
    x2, y2 = int(np.ceil(x2)), int(np.ceil(y2))
    expected = mmcv.imresize(scene[y1:y2, x1:x2], (32, 64))
    np.testing.assert_array_equal(sample['inputs'].permute(1, 2, 0).numpy(),
                                  expected)


def test_usable_from_an_mmpretrain_scoped_config(tiny_cuhk):
    """Registered in mmpretrain's DATASETS too: a config with
    ``default_scope='mmpretrain'`` may name it and its scene dataset by
    string."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

    import mmpsearch.datasets  # noqa: F401  (registers the classes)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = MMPRETRAIN_DATASETS.build(
            dict(
                type='PersonCropDataset',
                dataset=dict(
                    type='CUHKSYSUDataset', data_root=tiny_cuhk,
                    split='train')))
    assert isinstance(ds, PersonCropDataset)
    assert isinstance(ds.person_search_dataset, CUHKSYSUDataset)
    assert len(ds) > 0
