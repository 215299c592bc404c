# Copyright (c) mmpsearch contributors. All rights reserved.
"""The detection RoI head of DiffPS (Kim et al., ICCV 2025)."""
from typing import List, Tuple

from mmdet.models.roi_heads import StandardRoIHead
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from torch import Tensor

from mmpsearch.registry import MODELS


@MODELS.register_module()
class DiffPSRoIHead(StandardRoIHead):
    """mmdet's ``StandardRoIHead`` that also returns, in training, the boxes
    its box predictor regressed from the sampled RoIs.

    The official DiffPS code trains its ReID branch on these regressed boxes
    together with the RPN proposals (``models/diffps.py``: the detector's
    training-time output, decoded from every sampled RoI, clipped to the
    image, boxes under 0.01 px dropped, no score threshold), so the ReID head
    sees the boxes the detector will give it at test time.
    ``loss_and_predict`` mirrors mmdet's ``RPNHead.loss_and_predict``.
    The maps reach the RoI extractor contiguous (see :meth:`_bbox_forward`).
    """

    MIN_SIZE = 1e-2  # torchvision's remove_small_boxes in the official code

    def _bbox_forward(self, x: Tuple[Tensor], rois: Tensor) -> dict:
        """mmdet's ``_bbox_forward`` on contiguous NCHW maps.

        mmcv 2.1's ``RoIAlign`` (``roi_align_forward``, CPU and CUDA kernels)
        reads the feature pointer as contiguous NCHW without calling
        ``.contiguous()``: a channels-last map (e.g. a permuted view of
        Stable Diffusion's tokens) would give unrelated numbers and no error.
        A no-op for maps that are contiguous already.
        """
        return super()._bbox_forward(tuple(f.contiguous() for f in x), rois)

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: list) -> dict:
        results = super().bbox_loss(x, sampling_results)
        # kept for loss_and_predict: mmdet's loss() returns only the losses
        self._sampled = (bbox2roi([r.priors for r in sampling_results]),
                         results['bbox_pred'].detach())
        return results

    def loss_and_predict(
            self, x: Tuple[Tensor], rpn_results_list: list,
            batch_data_samples: SampleList) -> Tuple[dict, List[Tensor]]:
        """The losses of :meth:`loss` and, per image, the detached regressed
        boxes (input-image pixels) of the sampled RoIs."""
        losses = self.loss(x, rpn_results_list, batch_data_samples)
        rois, deltas = self._sampled
        del self._sampled
        if deltas.shape[1] != 4:
            raise ValueError(
                'DiffPSRoIHead: the regressed boxes need one box per RoI '
                '(reg_class_agnostic=True or num_classes=1), got box '
                f'predictions of width {deltas.shape[1]}')
        boxes = []
        for i, sample in enumerate(batch_data_samples):
            idx = rois[:, 0] == i
            decoded = self.bbox_head.bbox_coder.decode(
                rois[idx, 1:], deltas[idx], max_shape=sample.img_shape)
            wh = decoded[:, 2:] - decoded[:, :2]
            boxes.append(decoded[(wh >= self.MIN_SIZE).all(dim=1)])
        return losses, boxes
