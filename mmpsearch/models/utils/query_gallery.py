# Copyright (c) mmpsearch contributors. All rights reserved.
"""The query / gallery split every person searcher makes at test time.

Under the CUHK-SYSU / PRW protocol (Xiao et al., CVPR 2017; Zheng et al.,
CVPR 2017) a query is a person given as an image and a box: the searcher
embeds that box and returns it with score 1; a gallery image gets
detections. A sample is a query when ``metainfo['split'] == 'query'``; its
box is the one ground-truth box, in ORIGINAL image pixels, because the test
pipelines (``configs/_base_/datasets``) load the annotations after
``Resize``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.structures import SampleList
from mmdet.structures.bbox import scale_boxes
from mmengine.structures import InstanceData
from torch import Tensor


def is_query(sample) -> bool:
    """Whether ``sample`` (a data sample) is a query."""
    return sample.metainfo.get('split') == 'query'


def query_boxes(batch_data_samples: SampleList,
                owner: str = '') -> List[Optional[Tensor]]:
    """Per sample, None (gallery) or the query box (1, 4) in original
    pixels.

    Args:
        batch_data_samples (list): The samples of a batch.
        owner (str): Who asks (a class name), for the message.

    Raises:
        ValueError: A query sample without exactly one box.
    """
    out: List[Optional[Tensor]] = []
    for ds in batch_data_samples:
        if not is_query(ds):
            out.append(None)
            continue
        gt = ds.get('gt_instances')
        n = 0 if gt is None or 'bboxes' not in gt else len(gt.bboxes)
        if n != 1:
            raise ValueError(
                f'{owner + ": " if owner else ""}query image '
                f'{ds.metainfo.get("img_id")} (query_index '
                f'{ds.metainfo.get("query_index")}) has {n} boxes in '
                'gt_instances, expected exactly the query box: the query '
                'pipeline must load annotations')
        boxes = gt.bboxes
        out.append(boxes.tensor if hasattr(boxes, 'tensor') else boxes)
    return out


def query_instance(box: Tensor, embedding: Tensor) -> InstanceData:
    """The prediction of a query image: its given box (1, 4), score 1,
    label 0 and the (1, D) embedding of that box."""
    box = box.reshape(1, 4).to(embedding.device, torch.float32)
    return InstanceData(
        bboxes=box,
        scores=box.new_ones(1),
        labels=torch.zeros(1, dtype=torch.long, device=box.device),
        embeddings=embedding.reshape(1, -1))


def scale_factor(meta: dict) -> Tuple[float, float]:
    """(w_scale, h_scale) from original to network-input pixels."""
    sx, sy = meta.get('scale_factor', (1.0, 1.0))[:2]
    return float(sx), float(sy)


def to_input_pixels(boxes: Tensor, meta: dict) -> Tensor:
    """Original pixels -> pixels of the (resized) network input (mmdet's
    ``scale_boxes``)."""
    return scale_boxes(boxes.reshape(-1, 4).float(), scale_factor(meta))


def to_original_pixels(boxes: Tensor, meta: dict) -> Tensor:
    """Network-input pixels -> original pixels."""
    sx, sy = scale_factor(meta)
    return scale_boxes(boxes, (1.0 / sx, 1.0 / sy))


def split_query_gallery(
        boxes: Sequence[Optional[Tensor]]) -> Tuple[List[int], List[int]]:
    """(gallery indices, query indices) of :func:`query_boxes`' output."""
    gallery = [i for i, b in enumerate(boxes) if b is None]
    query = [i for i, b in enumerate(boxes) if b is not None]
    return gallery, query
