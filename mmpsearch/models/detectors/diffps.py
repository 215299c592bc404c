# Copyright (c) mmpsearch contributors. All rights reserved.
"""DiffPS: person search on a frozen Stable Diffusion backbone.

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Fig. 2.
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi, scale_boxes
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS
from mmpsearch.utils.thresholds import check_cfg_thresholds


@MODELS.register_module()
class DiffPS(TwoStageDetector):
    """DiffPS person searcher (Kim et al., ICCV 2025, Fig. 2): decoupled
    detection and ReID branches on one frozen Stable Diffusion pass.

    - ``backbone``: :class:`StableDiffusionBackbone` (frozen; K feature,
      "person" cross-attention map, ReID maps, body-part text embeddings);
    - detection: ``neck`` = :class:`DGRPN` (eq. 1-4) -> ``rpn_head``
      (mmdet ``RPNHead``, single level, stride 8) -> ``roi_head``
      (:class:`DiffPSRoIHead`, mmdet's ``StandardRoIHead`` that also gives
      its regressed training boxes: RoIAlign 14x14, ResNet stage-4 shared
      head, :class:`BNRegBBoxHead` box predictor);
    - ReID: ``reid_neck`` = :class:`MSFRN` -> ``reid_roi_extractor``
      (RoIAlign 24x12 on the 1/8 MSFRN map) -> ``reid_head`` =
      :class:`SFAN` (+ stage 4 + strip embedding, L2-normalised) ->
      ``reid_loss`` = :class:`OIMLoss`.

    Training samples the ReID RoIs with mmdet's assigner and sampler
    (``train_cfg.reid``) among the candidates named by
    ``train_cfg.reid.proposals``: ``'regressed'``, the boxes the box head
    regressed from its sampled RoIs (needs :class:`DiffPSRoIHead`), and
    ``'rpn'``, the RPN proposals; the sampler appends the ground truth. As
    in the official code, by default both candidate sets are used, IoU
    >= 0.7 is a person and < 0.3 background, 128 RoIs per image at 50 %
    with as many backgrounds as persons when persons are few, and the
    backgrounds pass through the ReID head too (``embed_negatives``: its
    BatchNorm statistics see them) with person id -2, which OIM ignores.
    Positives carry their ground truth's person id (-1 for unlabeled
    persons, which go into OIM's queue). Loss weights (paper): RPN 1 / 1,
    box cls 1, box reg 10, ReID 2 - set in the heads' loss configs.

    At test time every gallery image gives its detections with scores,
    labels and embeddings; a query image (``metainfo['split'] == 'query'``)
    gives exactly one instance: its given box (the one ground-truth box of
    the sample, in original pixels as the test pipelines load annotations
    after ``Resize``) with score 1 and the embedding computed from that box.
    Boxes are returned in original image pixels.
    """

    REID_PROPOSALS = ('regressed', 'rpn')
    BACKGROUND_ID = -2  # below -1: OIM neither learns from nor stores it

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 rpn_head: dict,
                 roi_head: dict,
                 reid_neck: dict,
                 reid_roi_extractor: dict,
                 reid_head: dict,
                 reid_loss: dict,
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
        self.check_test_cfg()
        self.reid_neck = MODELS.build(reid_neck)
        self.reid_roi_extractor = MODELS.build(reid_roi_extractor)
        self.reid_head = MODELS.build(reid_head)
        self.reid_loss = MODELS.build(reid_loss)
        if train_cfg is not None:
            if 'reid' not in train_cfg:
                raise KeyError('DiffPS: train_cfg needs a "reid" entry with '
                               'the assigner and sampler of the ReID RoIs')
            self.reid_assigner = TASK_UTILS.build(train_cfg.reid.assigner)
            self.reid_sampler = TASK_UTILS.build(train_cfg.reid.sampler)
            self.reid_proposals = tuple(train_cfg.reid.get(
                'proposals', self.REID_PROPOSALS))
            bad = set(self.reid_proposals) - set(self.REID_PROPOSALS)
            if bad or not self.reid_proposals:
                raise ValueError(
                    'DiffPS: train_cfg.reid.proposals must name some of '
                    f'{self.REID_PROPOSALS}, got {self.reid_proposals}')
            if 'regressed' in self.reid_proposals and not hasattr(
                    self.roi_head, 'loss_and_predict'):
                raise ValueError(
                    'DiffPS: train_cfg.reid.proposals uses the regressed '
                    'boxes, which needs a roi_head with loss_and_predict '
                    f'(DiffPSRoIHead), got {type(self.roi_head).__name__}')
            self.reid_embed_negatives = bool(
                train_cfg.reid.get('embed_negatives', True))

    def check_test_cfg(self) -> None:
        """Refuse a ``score_thr`` or NMS ``iou_threshold`` of ``test_cfg``
        that is not a number in [0, 1] (NaN drops every detection); at build
        time and before every prediction, as tools may change it."""
        check_cfg_thresholds(self.test_cfg, 'model.test_cfg')
        roi_cfg = getattr(getattr(self, 'roi_head', None), 'test_cfg', None)
        check_cfg_thresholds(roi_cfg, 'model.test_cfg.rcnn')

    # ----------------------------------------------------------- features
    def extract_all(self,
                    batch_inputs: Tensor) -> Tuple[tuple, Tensor, Tensor]:
        """One Stable Diffusion pass -> (detection maps ``F_det`` as a
        tuple, the MSFRN ReID map, the part text embeddings)."""
        sd = self.backbone(batch_inputs)
        det = self.neck(sd['det_feat'], sd['attn_map'])
        reid_map = self.reid_neck(sd['reid_feats'])
        return det, reid_map, sd['part_embeds']

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        sd = self.backbone(batch_inputs)
        return self.neck(sd['det_feat'], sd['attn_map'])

    def embed_boxes(self, reid_map: Tensor, part_embeds: Tensor,
                    boxes: List[Tensor]) -> Tensor:
        """L2-normalised embeddings of boxes (input-image coordinates)."""
        rois = bbox2roi(boxes)
        if rois.shape[0] == 0:
            return reid_map.new_zeros(0, self.reid_head.embed_dim)
        feats = self.reid_roi_extractor((reid_map, ), rois)
        return self.reid_head(feats, part_embeds)

    # --------------------------------------------------------------- loss
    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
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
        if 'regressed' in self.reid_proposals:
            roi_losses, regressed = self.roi_head.loss_and_predict(
                x, rpn_results_list, batch_data_samples)
        else:
            roi_losses = self.roi_head.loss(x, rpn_results_list,
                                            batch_data_samples)
        losses.update(roi_losses)
        candidates = dict(rpn=rpn_boxes)
        if 'regressed' in self.reid_proposals:
            candidates['regressed'] = regressed
        # the official order: regressed boxes first, then the proposals
        order = [n for n in self.REID_PROPOSALS if n in self.reid_proposals]
        reid_proposals = [
            InstanceData(
                priors=torch.cat([candidates[n][i] for n in order]))
            for i in range(len(batch_data_samples))
        ]
        losses.update(
            self.reid_branch_loss(reid_map, part_embeds, reid_proposals,
                                  batch_data_samples))
        return losses

    def reid_branch_loss(self, reid_map: Tensor, part_embeds: Tensor,
                         proposals: List[InstanceData],
                         batch_data_samples: SampleList) -> Dict[str, Tensor]:
        gts, gts_ignore, metas = unpack_gt_instances(batch_data_samples)
        boxes, ids = [], []
        for prop, gt, gt_ignore, meta in zip(proposals, gts, gts_ignore,
                                             metas):
            if 'person_ids' not in gt:
                raise KeyError(
                    f'DiffPS: image {meta.get("img_id", meta.get("img_path"))}'
                    ' has no gt_instances.person_ids; load annotations with '
                    'LoadPersonSearchAnnotations and pack them with '
                    'PackPersonSearchInputs')
            assign = self.reid_assigner.assign(prop, gt, gt_ignore)
            sampling = self.reid_sampler.sample(assign, prop, gt)
            pos_ids = gt.person_ids[sampling.pos_assigned_gt_inds].long()
            if self.reid_embed_negatives:
                boxes.append(
                    torch.cat([sampling.pos_priors, sampling.neg_priors]))
                ids.append(
                    torch.cat([
                        pos_ids,
                        pos_ids.new_full((len(sampling.neg_priors), ),
                                         self.BACKGROUND_ID)
                    ]))
            else:
                boxes.append(sampling.pos_priors)
                ids.append(pos_ids)
        ids = torch.cat(ids)
        embeds = self.embed_boxes(reid_map, part_embeds, boxes)
        # Always called, even without a person: OIM gathers its table update
        # across ranks, a collective every rank must join. The zero term
        # keeps the graph when there is no RoI at all.
        return dict(
            loss_reid=self.reid_loss(embeds, ids) + reid_map.sum() * 0.0)

    # ------------------------------------------------------------ predict
    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        self.check_test_cfg()
        x, reid_map, part_embeds = self.extract_all(batch_inputs)
        num = len(batch_data_samples)
        boxes: List[Optional[Tensor]] = [None] * num
        scores: List[Optional[Tensor]] = [None] * num
        labels: List[Optional[Tensor]] = [None] * num

        gallery = [
            i for i, s in enumerate(batch_data_samples)
            if s.metainfo.get('split') != 'query'
        ]
        if gallery:
            xg = tuple(f[gallery] for f in x)
            samples = [batch_data_samples[i] for i in gallery]
            proposals = self.rpn_head.predict(xg, samples, rescale=False)
            dets = self.roi_head.predict(xg, proposals, samples, rescale=False)
            for i, det in zip(gallery, dets):
                boxes[i], scores[i], labels[i] = (det.bboxes, det.scores,
                                                  det.labels)
        # A query's box comes in original pixels (the test pipelines load
        # annotations after Resize); it is embedded in input coordinates and
        # returned as given.
        query_boxes = {}
        for i, sample in enumerate(batch_data_samples):
            if boxes[i] is not None:
                continue
            gt = sample.get('gt_instances', None)
            if gt is None or len(gt) != 1:
                raise ValueError(
                    f'DiffPS: query sample {sample.metainfo.get("img_id")} '
                    f'(query_index {sample.metainfo.get("query_index")}) '
                    'must carry exactly one box in gt_instances (the query '
                    f'box), got {0 if gt is None else len(gt)}')
            box = gt.bboxes
            box = box.tensor if hasattr(box, 'tensor') else box
            query_boxes[i] = box.to(reid_map.device).float()
            boxes[i] = scale_boxes(query_boxes[i], self._scale_factor(sample))
            scores[i] = boxes[i].new_ones(1)
            labels[i] = torch.zeros(
                1, dtype=torch.long, device=reid_map.device)

        embeds = self.embed_boxes(reid_map, part_embeds, boxes)
        embeds = embeds.split([len(b) for b in boxes])
        for i, sample in enumerate(batch_data_samples):
            if i in query_boxes:
                b = query_boxes[i]
            elif rescale and len(boxes[i]) > 0:
                sx, sy = self._scale_factor(sample)
                b = scale_boxes(boxes[i], (1.0 / sx, 1.0 / sy))
            else:
                b = boxes[i]
            sample.pred_instances = InstanceData(
                bboxes=b,
                scores=scores[i],
                labels=labels[i],
                embeddings=embeds[i])
        return batch_data_samples

    @staticmethod
    def _scale_factor(sample) -> Tuple[float, float]:
        """(w_scale, h_scale) from original to input pixels."""
        sx, sy = sample.metainfo.get('scale_factor', (1.0, 1.0))
        return float(sx), float(sy)

    def _forward(self, batch_inputs: Tensor,
                 batch_data_samples: SampleList) -> tuple:
        x, reid_map, _ = self.extract_all(batch_inputs)
        proposals = self.rpn_head.predict(x, batch_data_samples, rescale=False)
        roi_outs = self.roi_head.forward(x, proposals, batch_data_samples)
        return roi_outs, reid_map
