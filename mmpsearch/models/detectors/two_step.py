# Copyright (c) mmpsearch contributors. All rights reserved.
"""Two-step person search: a detector, then a separate ReID model on the
crops of its detections."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import roi_align
from mmdet.models.detectors.base import BaseDetector
from mmdet.structures import OptSampleList, SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from mmpsearch.utils.checked_config import check_thresholds_when_changed
from mmpsearch.utils.checkpoint import safe_torch_load
from mmpsearch.utils.thresholds import check_cfg_thresholds


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
class TwoStepPersonSearch(BaseDetector):
    """A two-step person-search baseline: an ordinary pedestrian detector,
    then a separately trained ReID model on the crops of its detections.

    Xiao et al. ("Joint Detection and Identification Feature Learning for
    Person Search", CVPR 2017, the OIM paper) introduced the comparison of
    end-to-end person searchers with such two-step pipelines, and PSDiff
    (Jia et al., Table I) lists two-step methods beside the one-step ones.
    Here the detector is any mmdet detector (e.g. Faster R-CNN R50-FPN with
    ``num_classes=1``) and the ReID model is an mmpretrain
    ``ImageClassifier`` such as the PSDiff teachers of ``configs/teacher``.

    - Training: only the detector is trained; :meth:`loss` returns its
      losses. The ReID model is frozen (``requires_grad=False``, so the
      optimizer never updates it) and stays in eval mode (:meth:`train`).
    - ReID weights: loaded from ``reid.checkpoint`` when the model is built,
      with mmpsearch's safe loader, and never touched by
      :meth:`init_weights`. They are part of :meth:`state_dict`, so a
      trained checkpoint of this model is self-contained: ``tools/test.py
      CONFIG CKPT`` restores the ReID from CKPT (with
      ``--cfg-options model.reid.checkpoint=None`` it does not need the
      teacher's file at all).
    - Embeddings: a box is embedded as
      ``tools/extract_teacher_embeddings.py`` embeds it with the teacher's
      test pipeline (``CropPersonBox`` -> ``Resize(keep_ratio=False)`` ->
      ``ClsDataPreprocessor`` -> backbone + neck -> L2 norm): the box is
      rounded outwards to whole pixels of the original image and clipped
      to it, cut out of the network input and resized to ``crop_size`` in
      one batched bilinear ``roi_align`` (one sample per output pixel at the
      pixel centres, which is what ``cv2.resize(INTER_LINEAR)`` does), and
      the detector's normalisation and channel order are replaced by the
      ReID model's.
    - Crops come from the network input (the resized image), not from
      the original file: at ``scale_factor`` 1 (the synthetic scenes) the
      embedding equals the extraction tool's (tested, cosine > 0.99); for
      resized datasets (PRW's 1920x1080 frames at 1333x750) the ReID sees
      the box at the detector's resolution, the usual choice of two-step
      baselines that share the detector's input.
    - Gallery images (metainfo ``split != 'query'``): the detector's
      detections (``bboxes`` x1y1x2y2, ``scores``, ``labels``) and one
      L2-normalised ``embeddings`` row per box.
    - Query images (metainfo ``split == 'query'``): exactly one instance,
      the given box (``gt_instances.bboxes``, in ORIGINAL image pixels: the
      test pipelines load the annotations after ``Resize``), score 1, label
      0, and its embedding. The detector does not run on them.

    Boxes are returned in original image pixels (``rescale=True``), the
    format ``PersonSearchMetric`` scores.

    Args:
        detector (dict): An mmdet detector config, e.g. ``FasterRCNN``. A
            ``data_preprocessor`` in it is used as this model's when
            ``data_preprocessor`` is not given.
        reid (dict): ``model`` (an mmpretrain ``ImageClassifier`` config;
            its ``head`` is not built, only backbone + neck are used),
            ``checkpoint`` (path of the trained ReID weights, e.g. a
            teacher's ``iter_150.pth``; None: random weights, for tests)
            and ``crop_size`` ((h, w), the ReID model's input size).
        data_preprocessor (dict, optional): mmdet's ``DetDataPreprocessor``.
        init_cfg (dict, optional): Initialisation of the detector (the ReID
            model is loaded from its checkpoint, see above).
    """

    REID_KEYS = ('model', 'checkpoint', 'crop_size')

    def __init__(self,
                 detector: ConfigType,
                 reid: ConfigType,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        detector = copy.deepcopy(detector)
        inner_preprocessor = detector.pop('data_preprocessor', None)
        if data_preprocessor is None:
            data_preprocessor = inner_preprocessor
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.detector = MODELS.build(detector)
        # the thresholds are checked now and whenever test_cfg changes
        check_thresholds_when_changed(self.detector, 'model.detector.test_cfg')

        unknown = set(reid) - set(self.REID_KEYS)
        if unknown or 'model' not in reid:
            raise KeyError(
                f'TwoStepPersonSearch: reid has keys {sorted(reid)}; '
                f'expected "model" and optionally "checkpoint", "crop_size" '
                f'(unknown: {sorted(unknown)})')
        crop_size = tuple(int(s) for s in reid.get('crop_size', (256, 128)))
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f'TwoStepPersonSearch: reid.crop_size '
                             f'{reid.get("crop_size")} is not (h, w)')
        self.crop_size = crop_size
        reid_cfg = copy.deepcopy(reid['model'])
        reid_cfg.pop('head', None)  # only backbone + neck give embeddings
        self.reid = MODELS.build(reid_cfg)
        self.reid_checkpoint = reid.get('checkpoint')
        if self.reid_checkpoint is not None:
            self.load_reid(self.reid_checkpoint)
        # The ReID weights come from its checkpoint (or from a checkpoint of
        # this whole model), so init_weights must not re-initialise them.
        self.reid.is_init = True
        self.reid.requires_grad_(False)
        self.reid.eval()

    def check_test_cfg(self) -> None:
        """Refuse a ``score_thr`` or NMS ``iou_threshold`` of the
        detector's ``test_cfg`` that is not a number in [0, 1] (NaN drops
        every detection). Runs at build time and on every change of the
        detector's ``test_cfg`` (:func:`~mmpsearch.utils.checked_config.
        check_thresholds_when_changed`), not before every prediction."""
        prefix = 'model.detector.test_cfg'
        check_cfg_thresholds(getattr(self.detector, 'test_cfg', None), prefix)
        for name, key in (('roi_head', '.rcnn'), ('rpn_head', '.rpn'),
                          ('bbox_head', '')):
            head_cfg = getattr(
                getattr(self.detector, name, None), 'test_cfg', None)
            check_cfg_thresholds(head_cfg, prefix + key)

    # ------------------------------------------------------------------
    # The frozen ReID model.
    # ------------------------------------------------------------------
    def load_reid(self, checkpoint: str) -> None:
        """Load the ReID model's backbone + neck from a checkpoint of the
        ImageClassifier (``head.*`` keys are ignored; any other missing,
        unexpected or mis-shaped key is an error)."""
        path = osp.expanduser(str(checkpoint))
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'TwoStepPersonSearch: ReID checkpoint {path} does not '
                'exist; train the ReID model first (e.g. tools/train.py '
                'configs/teacher/...) or point model.reid.checkpoint at its '
                'weights')
        ckpt = safe_torch_load(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) \
            else ckpt
        state = {(k[len('module.'):] if k.startswith('module.') else k): v
                 for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith('head.')}
        own = self.reid.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state)
                       if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            parts = []
            for name, keys in (('missing', missing),
                               ('unexpected', unexpected),
                               ('of another shape', wrong)):
                if keys:
                    more = f' ... ({len(keys) - 5} more)' \
                        if len(keys) > 5 else ''
                    parts.append(f'{len(keys)} keys {name}: '
                                 f'{keys[:5]}{more}')
            raise RuntimeError(
                f'TwoStepPersonSearch: ReID checkpoint {path} does not fit '
                f'reid.model ({type(self.reid).__name__}): '
                + '; '.join(parts))
        self.reid.load_state_dict(state, strict=True)

    def train(self, mode: bool = True) -> 'TwoStepPersonSearch':
        """Set the detector's mode; the ReID model always stays in eval
        mode (frozen BN statistics, as when it was tested)."""
        super().train(mode)
        self.reid.eval()
        return self

    def _to_reid_pixels(self, crops: Tensor) -> Tensor:
        """Crops of the detector's input -> the ReID model's input.

        Hand-written because ``ClsDataPreprocessor`` takes a list of uint8
        images, while the crops are float tensors of the detector's input
        (already normalised and maybe channel-swapped by
        ``DetDataPreprocessor``): the detector's per-channel affine map is
        undone and the ReID's applied. Cropping and resizing commute with
        these per-channel maps (bilinear weights sum to 1).
        """
        # hand-written: ClsDataPreprocessor only takes lists of raw images
        det_rgb, det_mean, det_std = _pixel_map(self.data_preprocessor,
                                                crops)
        reid_rgb, reid_mean, reid_std = _pixel_map(
            self.reid.data_preprocessor, crops)
        if det_mean is not None:
            crops = crops * det_std + det_mean
        if det_rgb != reid_rgb:  # the pipeline's images are BGR
            crops = crops.flip(1)
        if reid_mean is not None:
            crops = (crops - reid_mean) / reid_std
        return crops

    @staticmethod
    def _crop_boxes(boxes: Tensor, meta: dict) -> Tensor:
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
        sx, sy = meta.get('scale_factor', (1.0, 1.0))[:2]
        return torch.stack([x1 * sx, y1 * sy, x2 * sx, y2 * sy], dim=-1)

    @torch.no_grad()
    def embed_boxes(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                    batch_img_metas: Sequence[dict]) -> List[Tensor]:
        """L2-normalised ReID embeddings of boxes.

        Args:
            batch_inputs (Tensor): (B, 3, H, W), the detector's input (as
                made by its data preprocessor).
            boxes (list[Tensor]): Per image, (n_i, 4) boxes x1y1x2y2 in
                ORIGINAL image pixels.
            batch_img_metas (list[dict]): ``scale_factor`` and
                ``ori_shape`` of every image.

        Returns:
            list[Tensor]: Per image, (n_i, D) embeddings.
        """
        rois = bbox2roi([
            self._crop_boxes(b.to(batch_inputs.device), m)
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
                batch_inputs.float().contiguous(), rois.float(), (h, w),
                spatial_scale=1.0, sampling_ratio=1, pool_mode='avg',
                aligned=True)
        feats = self.reid.extract_feat(
            self._to_reid_pixels(crops), stage='neck')
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        embeds = F.normalize(feats.flatten(1).float(), dim=1)
        if rois.shape[0] == 0:
            embeds = embeds[:0]
        return list(embeds.split([len(b) for b in boxes]))

    # ------------------------------------------------------------------
    # The detector.
    # ------------------------------------------------------------------
    def extract_feat(self, batch_inputs: Tensor):
        """The detector's features."""
        return self.detector.extract_feat(batch_inputs)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """The detector's losses (the ReID model is not trained)."""
        return self.detector.loss(batch_inputs, batch_data_samples)

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: OptSampleList = None):
        """The detector's raw outputs (for FLOP counting and export)."""
        return self.detector._forward(batch_inputs, batch_data_samples)

    # ------------------------------------------------------------------
    # Inference.
    # ------------------------------------------------------------------
    @staticmethod
    def _query_box(sample) -> Optional[Tensor]:
        """None for a gallery sample, the (1, 4) query box in original
        pixels for a query sample."""
        if sample.metainfo.get('split') != 'query':
            return None
        gt = sample.get('gt_instances')
        n = 0 if gt is None or 'bboxes' not in gt else len(gt.bboxes)
        if n != 1:
            raise ValueError(
                f'query image {sample.metainfo.get("img_id")} (query_index '
                f'{sample.metainfo.get("query_index")}) has {n} boxes in '
                'gt_instances, expected exactly the query box: the query '
                'pipeline must load annotations')
        box = gt.bboxes
        box = box.tensor if hasattr(box, 'tensor') else box
        return box.reshape(1, 4).float()

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections + embeddings of gallery images; the given box and its
        embedding for query images (see the class docstring)."""
        metas = [s.metainfo for s in batch_data_samples]
        query = [self._query_box(s) for s in batch_data_samples]
        gallery = [i for i, q in enumerate(query) if q is None]
        dets: Dict[int, InstanceData] = {}
        if gallery:
            samples = [batch_data_samples[i] for i in gallery]
            # original pixels, whatever `rescale` asks of our output
            outs = self.detector.predict(
                batch_inputs[gallery], samples, rescale=True)
            for i, out in zip(gallery, outs):
                dets[i] = out.pred_instances
        boxes: List[Tensor] = []
        for i, q in enumerate(query):
            boxes.append(dets[i].bboxes if q is None else q.to(batch_inputs))
        embeds = self.embed_boxes(batch_inputs, boxes, metas)

        results = []
        for i, (sample, box, emb) in enumerate(
                zip(batch_data_samples, boxes, embeds)):
            res = InstanceData()
            if query[i] is None:
                res.scores = dets[i].scores
                res.labels = dets[i].labels
            else:
                res.scores = box.new_ones(1)
                res.labels = torch.zeros(
                    1, dtype=torch.long, device=box.device)
            if not rescale:
                sx, sy = metas[i].get('scale_factor', (1.0, 1.0))[:2]
                box = box * box.new_tensor([sx, sy, sx, sy])
            res.bboxes = box
            res.embeddings = emb
            results.append(res)
        return self.add_pred_to_datasample(batch_data_samples, results)
