# Copyright (c) mmpsearch contributors. All rights reserved.
"""The ReID RoI head of DiffPS (Kim et al., "Leveraging Prior Knowledge of
Diffusion Model for Person Search", ICCV 2025, Sec. 3.5-3.6)."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.utils import unpack_gt_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS


@MODELS.register_module()
class ReIDRoIHead(BaseModule):
    """Per-RoI person embeddings on the ReID map, trained with OIM.

    The ReID counterpart of the mask branch of mmdet's ``StandardRoIHead``:
    an RoI extractor and a head on the RoIs, with its own assigner and
    sampler in training. In DiffPS (Kim et al., ICCV 2025, Fig. 2; the
    official code: github.com/PerceptualAI-Lab/DiffPS, ``models/diffps.py``)
    it takes the 1/8 map of :class:`MSFRN` and the body-part text embeddings
    of the Stable Diffusion backbone:

    - ``roi_extractor``: RoIAlign 24x12 on the ReID map;
    - ``embed_head``: :class:`SFAN` (+ ResNet stage 4 + strip embeddings),
      L2-normalised embeddings of width ``embed_head.embed_dim``;
    - ``loss_reid``: :class:`OIMLoss` (lookup table of the labelled ids,
      queue of the unlabelled persons).

    In training the candidate boxes (chosen by the detector, see
    ``train_cfg.proposals``) are assigned to the ground truth and sampled;
    positives carry their ground truth's person id (-1 for an unlabelled
    person, which goes into OIM's queue) and, with ``embed_negatives``, the
    sampled backgrounds pass through the head too (its BatchNorm statistics
    see them, as in the official code) with id ``BACKGROUND_ID`` = -2, which
    OIM neither learns from nor stores.

    Args:
        roi_extractor (dict): The RoI extractor on the ReID map.
        embed_head (dict): The embedding head, called as
            ``embed_head(roi_feats, part_embeds)``; has ``embed_dim``.
        loss_reid (dict): The ReID loss, called as
            ``loss_reid(embeddings, person_ids)``.
        train_cfg (dict, optional): ``assigner`` and ``sampler`` of the ReID
            RoIs (mmdet task modules), ``proposals`` (which candidates the
            detector hands in, some of ``PROPOSALS``; default both) and
            ``embed_negatives`` (default True). None: the head can only
            predict.
        init_cfg (dict, optional): Initialisation config.
    """

    #: The candidate sets a detector may hand in, in the official order:
    #: the boxes its box head regressed from its sampled RoIs, then the RPN
    #: proposals (the sampler appends the ground truth).
    PROPOSALS = ('regressed', 'rpn')
    #: Below -1: OIM neither learns from nor stores a background.
    BACKGROUND_ID = -2
    #: The keys of ``train_cfg`` (checked by ``mmpsearch.utils.cfg_signature``
    #: before anything is built).
    CFG_KEYS = dict(
        train_cfg=('assigner', 'sampler', 'proposals', 'embed_negatives'))

    def __init__(self,
                 roi_extractor: dict,
                 embed_head: dict,
                 loss_reid: dict,
                 train_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.roi_extractor = MODELS.build(roi_extractor)
        self.embed_head = MODELS.build(embed_head)
        self.loss_reid = MODELS.build(loss_reid)
        self.train_cfg = ConfigDict(train_cfg) if train_cfg is not None \
            else None
        self.init_assigner_sampler()

    def init_assigner_sampler(self) -> None:
        """Build the assigner and sampler of ``train_cfg`` (mmdet's
        ``StandardRoIHead.init_assigner_sampler``) and read its options."""
        self.assigner = self.sampler = None
        self.proposals: Optional[Tuple[str, ...]] = None
        self.embed_negatives = True
        if self.train_cfg is None:
            return
        for key in ('assigner', 'sampler'):
            if key not in self.train_cfg:
                raise KeyError(f'ReIDRoIHead: train_cfg needs the {key} of '
                               'the ReID RoIs')
        self.assigner = TASK_UTILS.build(self.train_cfg.assigner)
        self.sampler = TASK_UTILS.build(self.train_cfg.sampler)
        self.proposals = tuple(self.train_cfg.get('proposals', self.PROPOSALS))
        bad = set(self.proposals) - set(self.PROPOSALS)
        if bad or not self.proposals:
            raise ValueError(
                'ReIDRoIHead: train_cfg.proposals must name some of '
                f'{self.PROPOSALS}, got {self.proposals}')
        self.embed_negatives = bool(
            self.train_cfg.get('embed_negatives', True))

    @property
    def embed_dim(self) -> int:
        """Width of the embeddings."""
        return self.embed_head.embed_dim

    def require_train_cfg(self) -> Tuple[str, ...]:
        """The candidate sets to hand to :meth:`loss`; refuses a head built
        without ``train_cfg`` (it has no assigner or sampler)."""
        if self.train_cfg is None:
            raise RuntimeError(
                'ReIDRoIHead: built without train_cfg, so it has no '
                'assigner or sampler and cannot compute its loss; set '
                'model.reid_roi_head.train_cfg')
        return self.proposals

    # ------------------------------------------------------------ forward
    def _reid_forward(self, reid_map: Tensor, part_embeds: Tensor,
                      rois: Tensor) -> Tensor:
        """L2-normalised embeddings (N, D) of ``rois`` (N, 5), in
        input-image coordinates (as mmdet's ``_mask_forward``); (0, D) for
        no RoI."""
        if rois.shape[0] == 0:
            return reid_map.new_zeros(0, self.embed_dim)
        # mmcv 2.1's RoIAlign reads its input as contiguous NCHW without
        # checking (a channels-last map gives unrelated numbers, no error)
        feats = self.roi_extractor((reid_map.contiguous(), ), rois)
        return self.embed_head(feats, part_embeds)

    def predict(self, reid_map: Tensor, part_embeds: Tensor,
                boxes: Sequence[Tensor]) -> Tensor:
        """Embeddings of the boxes of every image (input-image pixels),
        concatenated in image order: (sum of the boxes, D)."""
        return self._reid_forward(reid_map, part_embeds, bbox2roi(boxes))

    # --------------------------------------------------------------- loss
    def sample(self, proposals: List[InstanceData],
               batch_data_samples: SampleList) -> Tuple[List[Tensor], Tensor]:
        """Assign and sample the candidate boxes of each image; returns
        the boxes to embed per image and their person ids, concatenated."""
        self.require_train_cfg()
        gts, gts_ignore, metas = unpack_gt_instances(batch_data_samples)
        boxes, ids = [], []
        for prop, gt, gt_ignore, meta in zip(proposals, gts, gts_ignore,
                                             metas):
            if 'person_ids' not in gt:
                raise KeyError(
                    f'ReIDRoIHead: image '
                    f'{meta.get("img_id", meta.get("img_path"))} has no '
                    'gt_instances.person_ids; load annotations with '
                    'LoadPersonSearchAnnotations and pack them with '
                    'PackPersonSearchInputs')
            assign = self.assigner.assign(prop, gt, gt_ignore)
            sampling = self.sampler.sample(assign, prop, gt)
            pos_ids = gt.person_ids[sampling.pos_assigned_gt_inds].long()
            if self.embed_negatives:
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
        return boxes, torch.cat(ids)

    def loss(self, reid_map: Tensor, part_embeds: Tensor,
             proposals: List[InstanceData],
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """``dict(loss_reid=...)`` of the sampled candidate boxes.

        Args:
            reid_map (Tensor): The ReID map (B, C, H, W).
            part_embeds (Tensor): The body-part text embeddings.
            proposals (list[InstanceData]): Per image, the candidate boxes
                as ``priors`` (input-image pixels).
            batch_data_samples (list): With ``gt_instances.person_ids``.
        """
        boxes, ids = self.sample(proposals, batch_data_samples)
        embeds = self.predict(reid_map, part_embeds, boxes)
        # Always called, even without a person: OIM gathers its table update
        # across ranks, a collective every rank must join. The zero term
        # keeps the graph when there is no RoI at all.
        loss = self.loss_reid(embeds, ids) + reid_map.sum() * 0.0
        if embeds.shape[0] == 0:
            loss = loss + self._zero_on_parameters(loss)
        return dict(loss_reid=loss)

    def _zero_on_parameters(self, like: Tensor) -> Tensor:
        """A zero (of ``like``'s dtype and device) that depends on every
        trainable parameter of the head.

        Added to the loss of a batch without any ReID RoI: the head is then
        never run, and under DistributedDataParallel a rank whose head
        parameters get no gradient while the other ranks' do leaves the
        gradient all-reduce waiting (or raises, with
        ``find_unused_parameters``). The zero term gives each of them a zero
        gradient instead.
        """
        zero = like.new_zeros(())
        for param in self.parameters():
            if param.requires_grad:
                zero = zero + param.sum() * 0.0
        return zero
