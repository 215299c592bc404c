# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffPS: person search on a frozen Stable Diffusion backbone.

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Fig. 2.
"""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.structures import SampleList
from mmdet.utils import InstanceList
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS
from mmpsearch.utils.checked_config import check_thresholds_when_changed
from mmpsearch.utils.thresholds import check_cfg_thresholds
from ..utils.query_gallery import to_input_pixels, to_original_pixels
from .base import BasePersonSearcher


@MODELS.register_module()
class DiffPS(BasePersonSearcher, TwoStageDetector):
    """DiffPS person searcher (Kim et al., ICCV 2025, Fig. 2): decoupled
    detection and ReID branches on one frozen Stable Diffusion pass.

    - ``backbone``: :class:`StableDiffusionBackbone` (frozen; K feature,
      "person" cross-attention map, ReID maps, body-part text embeddings);
    - detection: ``neck`` = :class:`DGRPN` (eq. 1-4) -> ``rpn_head``
      (mmdet ``RPNHead``, single level, stride 8) -> ``roi_head``
      (:class:`DiffPSRoIHead`, mmdet's ``StandardRoIHead`` that also gives
      its regressed training boxes: RoIAlign 14x14, ResNet stage-4 shared
      head, :class:`BNRegBBoxHead` box predictor);
    - ReID: ``reid_neck`` = :class:`MSFRN` (the 1/8 ReID map, once per
      image: a neck, so it stays on the detector, see :meth:`extract_all`) ->
      ``reid_roi_head`` = :class:`ReIDRoIHead`: ``roi_extractor`` (RoIAlign
      24x12 on the MSFRN map) -> ``embed_head`` = :class:`SFAN` (+ stage 4
      + strip embedding, L2-normalised) -> ``loss_reid`` =
      :class:`OIMLoss`.

    Training samples the ReID RoIs with the assigner and sampler of
    ``reid_roi_head.train_cfg`` among the candidates named by its
    ``proposals``: ``'regressed'``, the boxes the box head regressed from
    its sampled RoIs (needs :class:`DiffPSRoIHead`), and ``'rpn'``, the RPN
    proposals; the sampler appends the ground truth. As in the official
    code (github.com/PerceptualAI-Lab/DiffPS, ``models/diffps.py``), by
    default both candidate sets are used, IoU >= 0.7 is a person and < 0.3
    background, 128 RoIs per image at 50 % with as many backgrounds as
    persons when persons are few, and the backgrounds pass through the ReID
    head too (``embed_negatives``: its BatchNorm statistics see them) with
    person id -2, which OIM ignores. Positives carry their ground truth's
    person id (-1 for unlabeled persons, which go into OIM's queue). Loss
    weights (paper): RPN 1 / 1, box cls 1, box reg 10, ReID 2 - set in the
    heads' loss configs.

    At test time every gallery image gives its detections with scores,
    labels and embeddings; a query image (``metainfo['split'] == 'query'``)
    gives exactly one instance: its given box (the one ground-truth box of
    the sample, in original pixels as the test pipelines load annotations
    after ``Resize``) with score 1 and the embedding computed from that box
    (:class:`BasePersonSearcher`). Boxes are returned in original image
    pixels.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 rpn_head: dict,
                 roi_head: dict,
                 reid_neck: dict,
                 reid_roi_head: dict,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        # mmdet's two-stage detector reads ``train_cfg.rpn`` as attributes
        train_cfg = ConfigDict(train_cfg) if train_cfg is not None else None
        test_cfg = ConfigDict(test_cfg) if test_cfg is not None else None
        super().__init__(
            backbone=backbone,
            neck=neck,
            rpn_head=rpn_head,
            roi_head=roi_head,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        # the thresholds are checked now and whenever test_cfg changes
        check_thresholds_when_changed(self, 'model.test_cfg')
        self.reid_neck = MODELS.build(reid_neck)
        self.reid_roi_head = MODELS.build(reid_roi_head)
        proposals = getattr(self.reid_roi_head, 'proposals', None) or ()
        if 'regressed' in proposals and not hasattr(self.roi_head,
                                                    'loss_and_predict'):
            raise ValueError(
                'DiffPS: reid_roi_head.train_cfg.proposals uses the '
                'regressed boxes, which needs a roi_head with '
                'loss_and_predict (DiffPSRoIHead), got '
                f'{type(self.roi_head).__name__}')

    def check_test_cfg(self) -> None:
        """Refuse a ``score_thr`` or NMS ``iou_threshold`` of ``test_cfg``
        that is not a number in [0, 1] (NaN drops every detection). Runs at
        build time and on every change of ``test_cfg``
        (:func:`~mmpsearch.utils.checked_config.
        check_thresholds_when_changed`), not before every prediction."""
        check_cfg_thresholds(self.test_cfg, 'model.test_cfg')
        roi_cfg = getattr(getattr(self, 'roi_head', None), 'test_cfg', None)
        check_cfg_thresholds(roi_cfg, 'model.test_cfg.rcnn')

    # ----------------------------------------------------------- features
    def extract_all(self,
                    batch_inputs: Tensor) -> Tuple[tuple, Tensor, Tensor]:
        """One Stable Diffusion pass -> (detection maps ``F_det`` as a
        tuple, the MSFRN ReID map, the part text embeddings).

        MSFRN stays on the detector as ``reid_neck``, not in the ReID RoI
        head: like the detection ``neck`` it maps the backbone's (SD's)
        features to one image-level map, computed once per image and shared
        by all RoIs, while the RoI head works per RoI on the map it is
        handed."""
        sd = self.backbone(batch_inputs)
        det = self.neck(sd['det_feat'], sd['attn_map'])
        reid_map = self.reid_neck(sd['reid_feats'])
        return det, reid_map, sd['part_embeds']

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        sd = self.backbone(batch_inputs)
        return self.neck(sd['det_feat'], sd['attn_map'])

    # --------------------------------------------------------------- loss
    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        # the candidate sets of the ReID RoIs; refuses a head without its
        # assigner and sampler before any computation
        reid_from = self.reid_roi_head.require_train_cfg()
        x, reid_map, part_embeds = self.extract_all(batch_inputs)
        losses = dict()

        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        rpn_data_samples = copy.deepcopy(batch_data_samples)
        for data_sample in rpn_data_samples:
            data_sample.gt_instances.labels = torch.zeros_like(
                data_sample.gt_instances.labels)
        rpn_losses, rpn_results_list = self.rpn_head.loss_and_predict(
            x, rpn_data_samples, proposal_cfg=proposal_cfg)
        for key in list(rpn_losses.keys()):
            if 'loss' in key and 'rpn' not in key:
                rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
        losses.update(rpn_losses)

        # the RoI head renames 'bboxes' in place: copy the proposals first
        rpn_boxes = [r.bboxes.detach().clone() for r in rpn_results_list]
        if 'regressed' in reid_from:
            roi_losses, regressed = self.roi_head.loss_and_predict(
                x, rpn_results_list, batch_data_samples)
        else:
            roi_losses = self.roi_head.loss(x, rpn_results_list,
                                            batch_data_samples)
        losses.update(roi_losses)
        candidates = dict(rpn=rpn_boxes)
        if 'regressed' in reid_from:
            candidates['regressed'] = regressed
        # the official order: regressed boxes first, then the proposals
        order = [n for n in self.reid_roi_head.PROPOSALS if n in reid_from]
        reid_proposals = [
            InstanceData(priors=torch.cat([candidates[n][i] for n in order]))
            for i in range(len(batch_data_samples))
        ]
        losses.update(
            self.reid_roi_head.loss(reid_map, part_embeds, reid_proposals,
                                    batch_data_samples))
        return losses

    # ------------------------------------------- the searcher's contract
    def predict_gallery(self,
                        batch_inputs: Tensor,
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> InstanceList:
        """RPN -> RoI box head on the detection maps; the ReID RoI head
        embeds the detections (network-input pixels) on the MSFRN map."""
        x, reid_map, part_embeds = self.extract_all(batch_inputs)
        proposals = self.rpn_head.predict(x, batch_data_samples, rescale=False)
        dets = self.roi_head.predict(
            x, proposals, batch_data_samples, rescale=False)
        embeds = self.reid_roi_head.predict(reid_map, part_embeds,
                                            [d.bboxes for d in dets])
        embeds = embeds.split([len(d.bboxes) for d in dets])
        results = []
        for det, emb, sample in zip(dets, embeds, batch_data_samples):
            boxes = det.bboxes
            if rescale and len(boxes) > 0:
                boxes = to_original_pixels(boxes, sample.metainfo)
            results.append(
                InstanceData(
                    bboxes=boxes,
                    scores=det.scores,
                    labels=det.labels,
                    embeddings=emb))
        return results

    def embed_boxes(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                    batch_img_metas: Sequence[dict]) -> List[Tensor]:
        """The ReID branch on the given boxes, embedded in network-input
        pixels."""
        _, reid_map, part_embeds = self.extract_all(batch_inputs)
        rois = [
            to_input_pixels(b.to(reid_map.device).float(), meta)
            for b, meta in zip(boxes, batch_img_metas)
        ]
        embeds = self.reid_roi_head.predict(reid_map, part_embeds, rois)
        return list(embeds.split([len(r) for r in rois]))

    def test_settings(self) -> Dict[str, Any]:
        settings = super().test_settings()
        rcnn = (self.test_cfg or {}).get('rcnn')
        if isinstance(rcnn, dict):
            settings['model_score_thr'] = rcnn.get('score_thr')
        return settings

    def _forward(self, batch_inputs: Tensor,
                 batch_data_samples: SampleList) -> tuple:
        x, reid_map, _ = self.extract_all(batch_inputs)
        proposals = self.rpn_head.predict(x, batch_data_samples, rescale=False)
        roi_outs = self.roi_head.forward(x, proposals, batch_data_samples)
        return roi_outs, reid_map
