# Copyright (c) mmpsearch contributors. All rights reserved.
"""A frozen ReID model that embeds boxes from crops of the detector's
input (the second step of a two-step person searcher)."""
import copy
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import roi_align
from mmdet.structures.bbox import bbox2roi, scale_boxes
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from mmpsearch.utils.checkpoint import (checkpoint_state_dict,
                                        load_fitting_state_dict)
from mmpsearch.utils.safe_load import safe_torch_load
from ..utils.query_gallery import scale_factor


def _pixel_map(preprocessor: nn.Module,
               ref: Tensor) -> Tuple[bool, Optional[Tensor], Optional[Tensor]]:
    """(converts BGR->RGB, mean, std) of an mmengine ``ImgDataPreprocessor``
    (mmdet's ``DetDataPreprocessor``) or mmpretrain ``ClsDataPreprocessor``;
    mean / std are (1, 3, 1, 1) in the converted channel order, or None
    without normalisation."""
    # mmengine's ImgDataPreprocessor: _channel_conversion; mmpretrain's
    # ClsDataPreprocessor: to_rgb (both flip the channels, then normalise)
    to_rgb = bool(
        getattr(preprocessor, '_channel_conversion',
                getattr(preprocessor, 'to_rgb', False)))
    if not getattr(preprocessor, '_enable_normalize', False):
        return to_rgb, None, None
    mean = preprocessor.mean.to(ref).reshape(1, -1, 1, 1)
    std = preprocessor.std.to(ref).reshape(1, -1, 1, 1)
    return to_rgb, mean, std


@MODELS.register_module()
class CropReIDEmbedder(BaseModule):
    """A separately trained ReID model (an mmpretrain ``ImageClassifier``
    such as the PSDiff teachers of ``configs/teacher``) that embeds boxes
    from crops of a detector's input: the second step of the two-step
    baselines that Xiao et al. (CVPR 2017, the OIM paper) compare end-to-end
    person searchers with.

    A box is embedded as ``tools/extract_teacher_embeddings.py`` embeds it
    with the teacher's test pipeline (``CropPersonBox`` ->
    ``Resize(keep_ratio=False)`` -> ``ClsDataPreprocessor`` -> backbone +
    neck -> L2 norm): the box is rounded outwards to whole pixels of the
    original image and clipped to it, cut out of the network input and
    resized to ``crop_size`` in one batched bilinear ``roi_align`` (one
    sample per output pixel at the pixel centres, which is what
    ``cv2.resize(INTER_LINEAR)`` does), and the detector's normalisation and
    channel order are replaced by the ReID model's. Crops come from the
    network input (the resized image), not from the original file: at
    ``scale_factor`` 1 the embedding equals the extraction tool's; for
    resized datasets the ReID sees the box at the detector's resolution.

    The model is frozen (no gradient, always in eval mode) and never
    re-initialised by ``init_weights``: its weights come from
    ``checkpoint`` (loaded safely, and refused unless every weight of
    backbone + neck fits; ``head.*`` keys are ignored) or from a checkpoint
    of the model that holds it. Its state-dict keys are the classifier's
    (``backbone.*``, ``neck.*``).

    Args:
        model (dict): An mmpretrain ``ImageClassifier`` config; its
            ``head`` is not built, only backbone + neck give embeddings.
        checkpoint (str, optional): The trained ReID weights, e.g. a
            teacher's ``iter_150.pth``; None: random weights (for tests).
        crop_size (tuple): (h, w), the ReID model's input size.
    """

    def __init__(
        self,
        model: ConfigType,
        checkpoint: Optional[str] = None,
        crop_size: Sequence[int] = (256, 128)
    ) -> None:
        super().__init__()
        size = tuple(int(s) for s in crop_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(
                f'{type(self).__name__}: crop_size {crop_size} is not (h, w)')
        self.crop_size = size
        cfg = copy.deepcopy(model)
        cfg.pop('head', None)  # only backbone + neck give embeddings
        classifier = MODELS.build(cfg)
        # the classifier's parts, under the classifier's own key names
        self.backbone = classifier.backbone
        self.neck = classifier.neck if getattr(classifier, 'with_neck',
                                               False) else None
        self.data_preprocessor = classifier.data_preprocessor
        self.checkpoint = checkpoint
        if checkpoint is not None:
            self.load(checkpoint)
        # weights from the checkpoint (or a checkpoint of the whole model):
        # init_weights must not re-initialise them
        self.is_init = True
        self.requires_grad_(False)
        self.eval()

    def load(self, checkpoint: str) -> None:
        """Load backbone + neck from a checkpoint of the ImageClassifier
        (``head.*`` keys are ignored; any other missing, unexpected or
        mis-shaped key is a ``CheckpointMismatchError``)."""
        path = osp.expanduser(str(checkpoint))
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{type(self).__name__}: ReID checkpoint {path} does not '
                'exist; train the ReID model first (e.g. tools/train.py '
                'configs/teacher/...) or point model.reid.checkpoint at its '
                'weights')
        state = checkpoint_state_dict(
            safe_torch_load(path, map_location='cpu'))
        load_fitting_state_dict(self, {
            k: v
            for k, v in state.items() if not k.startswith('head.')
        }, path)

    def train(self, mode: bool = True) -> 'CropReIDEmbedder':
        """Always in eval mode (frozen BN statistics, as when it was
        tested)."""
        return super().train(False)

    def _to_reid_pixels(self, crops: Tensor,
                        det_preprocessor: nn.Module) -> Tensor:
        """Crops of the detector's input -> the ReID model's input.

        Hand-written because ``ClsDataPreprocessor`` takes a list of uint8
        images, while the crops are float tensors of the detector's input
        (already normalised and maybe channel-swapped by
        ``DetDataPreprocessor``): the detector's per-channel affine map is
        undone and the ReID's applied. Cropping and resizing commute with
        these per-channel maps (bilinear weights sum to 1).
        """
        det_rgb, det_mean, det_std = _pixel_map(det_preprocessor, crops)
        reid_rgb, reid_mean, reid_std = _pixel_map(self.data_preprocessor,
                                                   crops)
        if det_mean is not None:
            crops = crops * det_std + det_mean
        if det_rgb != reid_rgb:  # the pipeline's images are BGR
            crops = crops.flip(1)
        if reid_mean is not None:
            crops = (crops - reid_mean) / reid_std
        return crops

    @staticmethod
    def crop_boxes(boxes: Tensor, meta: dict) -> Tensor:
        """Original-pixel boxes -> the pixels ``CropPersonBox`` cuts (edges
        rounded outwards, clipped to the original image), scaled to the
        network input."""
        # hand-written: CropPersonBox's rounding for a batch of tensor boxes
        # (the transform cuts one numpy image per sample)
        ori_h, ori_w = meta.get('ori_shape', meta['img_shape'])[:2]
        boxes = boxes.reshape(-1, 4).float()
        x1 = boxes[:, 0].floor().clamp(0, ori_w - 1)
        y1 = boxes[:, 1].floor().clamp(0, ori_h - 1)
        x2 = boxes[:, 2].ceil().clamp(0, ori_w)
        y2 = boxes[:, 3].ceil().clamp(0, ori_h)
        # a detection may be thinner than a pixel: keep at least one
        x2 = torch.maximum(x2, x1 + 1)
        y2 = torch.maximum(y2, y1 + 1)
        return scale_boxes(
            torch.stack([x1, y1, x2, y2], dim=-1), scale_factor(meta))

    @torch.no_grad()
    def forward(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                batch_img_metas: Sequence[dict],
                det_preprocessor: nn.Module) -> List[Tensor]:
        """L2-normalised ReID embeddings of boxes.

        Args:
            batch_inputs (Tensor): (B, 3, H, W), the detector's input (as
                made by ``det_preprocessor``).
            boxes (list[Tensor]): Per image, (n_i, 4) boxes x1y1x2y2 in
                ORIGINAL image pixels.
            batch_img_metas (list[dict]): ``scale_factor`` and
                ``ori_shape`` of every image.
            det_preprocessor (nn.Module): The detector's data preprocessor
                (its normalisation and channel order are undone).

        Returns:
            list[Tensor]: Per image, (n_i, D) embeddings.
        """
        rois = bbox2roi([
            self.crop_boxes(b.to(batch_inputs.device), m)
            for b, m in zip(boxes, batch_img_metas)
        ])
        h, w = self.crop_size
        if rois.shape[0] == 0:
            # one dummy crop, only for the embedding width
            crops = batch_inputs.new_zeros(1, batch_inputs.shape[1], h, w)
        else:
            # roi_align with aligned=True and one sample per bin reads the
            # input at (x1 + (j + 0.5) * bin_w - 0.5), as cv2's bilinear
            # resize of the crop does; one batched call for all boxes.
            # contiguous: mmcv's roi_align reads its input as NCHW
            crops = roi_align(
                batch_inputs.float().contiguous(),
                rois.float(), (h, w),
                spatial_scale=1.0,
                sampling_ratio=1,
                pool_mode='avg',
                aligned=True)
        feats = self.backbone(self._to_reid_pixels(crops, det_preprocessor))
        if self.neck is not None:
            feats = self.neck(feats)
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        embeds = F.normalize(feats.flatten(1).float(), dim=1)
        if rois.shape[0] == 0:
            embeds = embeds[:0]
        return list(embeds.split([len(b) for b in boxes]))
