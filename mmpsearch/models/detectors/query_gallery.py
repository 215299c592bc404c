# Copyright (c) mmpsearch contributors. All rights reserved.
"""The query / gallery split every person searcher makes at test time."""
from typing import List, Optional, Tuple

from mmdet.structures import SampleList
from mmdet.structures.bbox import scale_boxes
from torch import Tensor


class QueryGalleryMixin:
    """How a person searcher tells a query sample from a gallery sample and
    reads the query box.

    Under the CUHK-SYSU / PRW protocol (Xiao et al., CVPR 2017; Zheng et
    al., CVPR 2017) a query is a person given as an image and a box: the
    searcher embeds that box and returns it with score 1; a gallery image
    gets detections. A sample is a query when ``metainfo['split'] ==
    'query'``; its box is the one ground-truth box, in ORIGINAL image
    pixels, because the test pipelines (``configs/_base_/datasets``) load
    the annotations after ``Resize``.
    """

    @staticmethod
    def is_query(sample) -> bool:
        return sample.metainfo.get('split') == 'query'

    def query_boxes(self,
                    batch_data_samples: SampleList) -> List[Optional[Tensor]]:
        """Per sample, None (gallery) or the query box (1, 4) in original
        pixels."""
        out: List[Optional[Tensor]] = []
        for ds in batch_data_samples:
            if not self.is_query(ds):
                out.append(None)
                continue
            gt = ds.get('gt_instances')
            if gt is None or 'bboxes' not in gt or len(gt.bboxes) != 1:
                n = 0 if gt is None or 'bboxes' not in gt else len(gt.bboxes)
                raise ValueError(
                    f'{type(self).__name__}: query image '
                    f'{ds.metainfo.get("img_id")} (query_index '
                    f'{ds.metainfo.get("query_index")}) has {n} boxes in '
                    'gt_instances, expected exactly the query box: the '
                    'query pipeline must load annotations')
            boxes = gt.bboxes
            out.append(boxes.tensor if hasattr(boxes, 'tensor') else boxes)
        return out

    @staticmethod
    def scale_factor(meta: dict) -> Tuple[float, float]:
        """(w_scale, h_scale) from original to network-input pixels."""
        sx, sy = meta.get('scale_factor', (1.0, 1.0))
        return float(sx), float(sy)

    @classmethod
    def to_input_pixels(cls, boxes: Tensor, meta: dict) -> Tensor:
        """Original pixels -> pixels of the (resized) network input."""
        return scale_boxes(
            boxes.reshape(-1, 4).float(), cls.scale_factor(meta))

    @classmethod
    def to_original_pixels(cls, boxes: Tensor, meta: dict) -> Tensor:
        """Network-input pixels -> original pixels."""
        sx, sy = cls.scale_factor(meta)
        return scale_boxes(boxes, (1.0 / sx, 1.0 / sy))
