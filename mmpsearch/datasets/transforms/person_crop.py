# Copyright (c) mmpsearch contributors. All rights reserved.
"""Crop one annotated person out of its scene image, for the ReID teacher."""
import math

import numpy as np
from mmcv.transforms import BaseTransform

from mmpsearch.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CropPersonBox(BaseTransform):
    """Replace ``results['img']`` (a whole scene) by the crop of one box.

    PSDiff's target embeddings are ``e_0 = Teacher(S, b_0)`` (PSDiff eq. 11):
    the teacher sees the scene S cut to the ground-truth box b_0. This
    transform makes that cut, so that the teacher's data pipeline is
    ``LoadImageFromFile -> CropPersonBox -> Resize -> ...``.

    The box is clipped to the image and its edges are rounded outwards, so
    the crop covers every pixel the box touches.

    Required keys: ``img``, ``bbox_key`` (x1, y1, x2, y2 in the pixels of
    ``img``). Modified keys: ``img``, ``img_shape``. Added key:
    ``crop_bbox`` (the integer box actually cut, x1y1x2y2).

    Args:
        bbox_key (str): The key holding the box. Defaults to ``'bbox'``, the
            key ``PersonCropDataset`` gives each sample.
    """

    def __init__(self, bbox_key: str = 'bbox') -> None:
        self.bbox_key = bbox_key

    def transform(self, results: dict) -> dict:
        where = results.get('img_path', '<image>')
        if self.bbox_key not in results:
            raise KeyError(f'CropPersonBox: {where} has no {self.bbox_key!r} '
                           'in its results; the dataset must give each '
                           'sample its box')
        box = np.asarray(results[self.bbox_key], dtype=np.float64).ravel()
        if box.shape != (4, ) or not np.isfinite(box).all():
            raise ValueError(f'CropPersonBox: {where}: {self.bbox_key} '
                             f'{box.tolist()} is not four finite numbers '
                             'x1, y1, x2, y2')
        img = results['img']
        height, width = img.shape[:2]
        x1 = max(0, math.floor(box[0]))
        y1 = max(0, math.floor(box[1]))
        x2 = min(width, math.ceil(box[2]))
        y2 = min(height, math.ceil(box[3]))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(
                f'CropPersonBox: {where}: box {box.tolist()} (x1y1x2y2) '
                f'covers no pixel of the {width}x{height} image')
        results['img'] = img[y1:y2, x1:x2].copy()
        results['img_shape'] = results['img'].shape[:2]
        results['crop_bbox'] = np.array([x1, y1, x2, y2], dtype=np.int64)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(bbox_key={self.bbox_key!r})'
