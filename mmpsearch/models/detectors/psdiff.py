# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff: person search as dual denoising of boxes and ReID embeddings."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmdet.models.detectors import SingleStageDetector
from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import ConfigType, InstanceList, OptConfigType, OptMultiConfig
from torch import Tensor

from mmpsearch.registry import MODELS
from ..heads.psdiff_head import PSDiffHead
from .base import BasePersonSearcher


@MODELS.register_module(name=['PSDiff', 'DiffusionPersonSearch'])
class PSDiff(BasePersonSearcher, SingleStageDetector):
    """PSDiff (Jia et al., "PSDiff: Diffusion Model for Person Search with
    Iterative and Collaborative Refinement"): backbone + FPN (the image
    condition c of eq. 12) and :class:`PSDiffHead`, which owns the reverse
    process around one Collaborative Denoising Layer (Fig. 2, Alg. 1-2).

    The detector routes, as mmdet's DiffusionDet does: the features are
    computed once per image and handed to the head's ``loss`` or
    ``predict``. A query's embedding comes from its given box, pinned as
    proposal 0 of the same sampler (:meth:`PSDiffHead.embed_boxes`).
    ``train_cfg`` and ``test_cfg`` are the head's (one object: a tool that
    sets ``model.test_cfg.sampling_steps`` changes the head's).

    Args:
        backbone (dict): E.g. mmdet's ResNet-50 or Swin-B.
        neck (dict): FPN (256 channels, strides 4-32).
        bbox_head (dict): :class:`PSDiffHead`.
        train_cfg, test_cfg (dict, optional): See :class:`PSDiffHead`.
        data_preprocessor (dict, optional): mmdet's DetDataPreprocessor.

    Also registered as ``DiffusionPersonSearch``, the detector's name in the
    design: ``type='DiffusionPersonSearch'`` builds this class, with the
    same arguments.
    """

    #: ``--cfg-options model.test_cfg.*`` / ``train_cfg.*`` are the head's.
    CFG_KEYS = PSDiffHead.CFG_KEYS

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 bbox_head: ConfigType,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            backbone=backbone,
            neck=neck,
            bbox_head=bbox_head,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)

    # One object for the detector's and the head's configs.
    @property
    def train_cfg(self):
        return self.bbox_head.train_cfg

    @train_cfg.setter
    def train_cfg(self, value) -> None:
        self.bbox_head.set_train_cfg(value)

    @property
    def test_cfg(self):
        return self.bbox_head.test_cfg

    @test_cfg.setter
    def test_cfg(self, value) -> None:
        self.bbox_head.set_test_cfg(value)

    def check_test_cfg(self) -> None:
        self.bbox_head.check_test_cfg()

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """Backbone + neck: the image condition c of eq. 12 (once per
        image, however many sampling steps follow)."""
        return tuple(self.neck(self.backbone(batch_inputs)))

    # ------------------------------------------- the searcher's contract
    def predict_gallery(self,
                        batch_inputs: Tensor,
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> InstanceList:
        return self.bbox_head.predict(
            self.extract_feat(batch_inputs), batch_data_samples, rescale)

    def embed_boxes(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                    batch_img_metas: Sequence[dict]) -> List[Tensor]:
        return self.bbox_head.embed_boxes(
            self.extract_feat(batch_inputs), boxes, list(batch_img_metas))

    def test_settings(self) -> Dict[str, Any]:
        cfg = self.test_cfg
        sampler = cfg.get('sampler')
        if isinstance(sampler, dict):
            sampler = sampler.get('type')
        if sampler is not None and not isinstance(sampler, str):
            sampler = getattr(sampler, '__name__', str(sampler))
        return dict(
            sampling_steps=cfg.get('sampling_steps'),
            # CDL passes per step as sampling resolves them (None in
            # test_cfg: train_cfg's count): a number at 3 passes is not one
            # at 1
            num_passes=self.bbox_head.passes_per_step(),
            num_proposals=cfg.get('num_proposals'),
            sampler=sampler,
            use_ensemble=cfg.get('use_ensemble'),
            box_renewal=cfg.get('box_renewal'),
            model_score_thr=cfg.get('score_thr'))

    def test_seed_keys(self) -> List[str]:
        """``test_cfg.seed`` (initial boxes / embeddings and the sampler
        noise), and a Stable Diffusion backbone's noise seed."""
        return ['test_cfg.seed'] + super().test_seed_keys()

    def denoise(self,
                feats: Sequence[Tensor],
                batch_img_metas: List[dict],
                query_boxes: Optional[list] = None) -> List[Dict[str, Tensor]]:
        """Every sampling step's outputs (for the API and the plots); see
        :meth:`PSDiffHead.denoise`."""
        return self.bbox_head.denoise(feats, batch_img_metas, query_boxes)

    def _forward(
            self,
            batch_inputs: Tensor,
            batch_data_samples: OptSampleList = None) -> Tuple[Tensor, ...]:
        """Features plus one CDL pass from noise (for FLOP counting and
        export): (cls_scores, bboxes, embeds)."""
        x = self.extract_feat(batch_inputs)
        if batch_data_samples is None:
            h, w = batch_inputs.shape[-2:]
            metas = [
                dict(img_shape=(h, w), img_id=str(i))
                for i in range(batch_inputs.shape[0])
            ]
        else:
            metas = [ds.metainfo for ds in batch_data_samples]
        return self.bbox_head.forward(x, metas)
