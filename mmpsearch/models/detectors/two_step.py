# Copyright (c) mmpsearch contributors. All rights reserved.
"""Two-step person search: a detector, then a separate ReID model on the
crops of its detections."""
import copy
from typing import Any, Dict, List, Sequence

from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import ConfigType, InstanceList, OptConfigType, OptMultiConfig
from torch import Tensor

from mmpsearch.registry import MODELS
from mmpsearch.utils.checked_config import check_thresholds_when_changed
from mmpsearch.utils.thresholds import check_cfg_thresholds
from ..layers.crop_reid_embedder import CropReIDEmbedder
from ..utils.query_gallery import to_input_pixels
from .base import BasePersonSearcher


@MODELS.register_module()
class TwoStepPersonSearch(BasePersonSearcher):
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
      optimizer never updates it) and stays in eval mode
      (:meth:`CropReIDEmbedder.train`).
    - ReID: a :class:`CropReIDEmbedder` (frozen, never touched by
      :meth:`init_weights`) that embeds a box from a crop of the detector's
      input as ``tools/extract_teacher_embeddings.py`` does; its weights
      load from ``reid.checkpoint`` when the model is built. They are part
      of :meth:`state_dict` (``reid.backbone.*``), so a trained checkpoint
      of this model is self-contained: ``tools/test.py CONFIG CKPT``
      restores the ReID from CKPT (with ``--cfg-options
      model.reid.checkpoint=None`` it does not need the teacher's file at
      all).
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
        reid (dict): The :class:`CropReIDEmbedder` (the default ``type``):
            ``model`` (an mmpretrain ``ImageClassifier`` config),
            ``checkpoint`` (the trained ReID weights, e.g. a teacher's
            ``iter_150.pth``; None: random weights, for tests) and
            ``crop_size`` ((h, w), the ReID model's input size).
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

        reid = dict(reid)
        if 'type' not in reid:
            unknown = set(reid) - set(self.REID_KEYS)
            if unknown or 'model' not in reid:
                raise KeyError(
                    f'TwoStepPersonSearch: reid has keys {sorted(reid)}; '
                    'expected "model" and optionally "checkpoint", '
                    f'"crop_size" (unknown: {sorted(unknown)})')
            reid['type'] = CropReIDEmbedder
        self.reid = MODELS.build(reid)

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
    # The searcher's contract: the detector detects, the ReID embeds.
    # ------------------------------------------------------------------
    def predict_gallery(self,
                        batch_inputs: Tensor,
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> InstanceList:
        # original pixels, whatever `rescale` asks of our output
        dets = [
            out.pred_instances for out in self.detector.predict(
                batch_inputs, batch_data_samples, rescale=True)
        ]
        metas = [s.metainfo for s in batch_data_samples]
        embeds = self.embed_boxes(batch_inputs, [d.bboxes for d in dets],
                                  metas)
        for det, emb, meta in zip(dets, embeds, metas):
            if not rescale:
                det.bboxes = to_input_pixels(det.bboxes, meta)
            det.embeddings = emb
        return dets

    def embed_boxes(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                    batch_img_metas: Sequence[dict]) -> List[Tensor]:
        """L2-normalised ReID embeddings of boxes in ORIGINAL image pixels
        (:meth:`CropReIDEmbedder.forward`)."""
        return self.reid(batch_inputs, boxes, batch_img_metas,
                         self.data_preprocessor)

    def test_settings(self) -> Dict[str, Any]:
        settings = super().test_settings()
        cfg = getattr(self.detector, 'test_cfg', None)
        if isinstance(cfg, dict):
            rcnn = cfg.get('rcnn')
            settings['model_score_thr'] = cfg['score_thr'] \
                if 'score_thr' in cfg else rcnn.get('score_thr') \
                if isinstance(rcnn, dict) else None
        return settings
