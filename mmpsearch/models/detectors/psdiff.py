# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff: person search as dual denoising of boxes and ReID embeddings."""
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet.models.detectors import SingleStageDetector
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from mmpsearch.registry import MODELS
from ..heads.psdiff_head import PSDiffHead


@MODELS.register_module(name=['PSDiff', 'DiffusionPersonSearch'])
class PSDiff(SingleStageDetector):
    """PSDiff (Jia et al., "PSDiff: Diffusion Model for Person Search with
    Iterative and Collaborative Refinement"): backbone + FPN (the image
    condition c of eq. 12) and :class:`PSDiffHead`, which owns the reverse
    process around one Collaborative Denoising Layer (Fig. 2, Alg. 1-2).

    The detector routes, as mmdet's DiffusionDet does: the features are
    computed once per image and handed to the head's ``loss`` or
    ``predict``. ``train_cfg`` and ``test_cfg`` are the head's (one object:
    a tool that sets ``model.test_cfg.sampling_steps`` changes the head's).

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

    def denoise(self, feats: Sequence[Tensor], batch_img_metas: List[dict],
                query_boxes: Optional[list] = None) -> List[Dict[str, Tensor]]:
        """Every sampling step's outputs (for the API and the plots); see
        :meth:`PSDiffHead.denoise`."""
        return self.bbox_head.denoise(feats, batch_img_metas, query_boxes)

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: OptSampleList = None
                 ) -> Tuple[Tensor, ...]:
        """Features plus one CDL pass from noise (for FLOP counting and
        export): (cls_scores, bboxes, embeds)."""
        x = self.extract_feat(batch_inputs)
        if batch_data_samples is None:
            h, w = batch_inputs.shape[-2:]
            metas = [dict(img_shape=(h, w), img_id=str(i))
                     for i in range(batch_inputs.shape[0])]
        else:
            metas = [ds.metainfo for ds in batch_data_samples]
        return self.bbox_head.forward(x, metas)
