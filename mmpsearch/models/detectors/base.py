# Copyright (c) mmpsearch contributors. All rights reserved.
"""The contract of a person searcher at test time."""
from abc import abstractmethod
from typing import Any, Dict, List, Optional, Sequence

from mmdet.models.detectors.base import BaseDetector
from mmdet.structures import SampleList
from mmdet.utils import InstanceList
from torch import Tensor

from ..utils.query_gallery import query_boxes, query_instance, to_input_pixels

#: The keys of :meth:`BasePersonSearcher.test_settings` (null where a model
#: has no such setting).
TEST_SETTING_KEYS = ('sampling_steps', 'num_passes', 'num_proposals',
                     'sampler', 'use_ensemble', 'box_renewal',
                     'model_score_thr')


class BasePersonSearcher(BaseDetector):
    """Base of the person searchers (PSDiff, DiffPS, the two-step
    baseline): mmdet's ``BaseDetector`` plus the query / gallery contract of
    the CUHK-SYSU / PRW protocol (Xiao et al., CVPR 2017; Zheng et al., CVPR
    2017).

    A subclass implements two hooks:

    - :meth:`predict_gallery`: detections of gallery images, each with its
      L2-normalised ``embeddings`` row;
    - :meth:`embed_boxes`: embeddings of given boxes.

    :meth:`predict` routes a batch through them: a gallery image
    (``metainfo['split'] != 'query'``) gets its detections; a query image
    exactly one instance, its given box (the sample's one ground-truth
    box, in original pixels), score 1, label 0, and the embedding of that
    box (:func:`~mmpsearch.models.utils.query_instance`). Boxes are in
    original image pixels with ``rescale=True`` (the format
    ``PersonSearchMetric`` scores), in network-input pixels otherwise.

    The model also says how it is tested: :meth:`test_settings` (what a
    number was measured with) and :meth:`test_seed_keys` /
    :meth:`set_test_seed` (where its test-time randomness is seeded), which
    ``PersonSearchMetric``'s results files and the multi-seed test loop
    read instead of reaching into the model.
    """

    # ------------------------------------------------------------ hooks
    @abstractmethod
    def predict_gallery(self,
                        batch_inputs: Tensor,
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> InstanceList:
        """Per gallery image, its detections: ``bboxes`` (x1y1x2y2, in
        original pixels with ``rescale``), ``scores``, ``labels`` and one
        L2-normalised ``embeddings`` row per box."""

    @abstractmethod
    def embed_boxes(self, batch_inputs: Tensor, boxes: Sequence[Tensor],
                    batch_img_metas: Sequence[dict]) -> List[Tensor]:
        """Per image, the (n_i, D) L2-normalised embeddings of the given
        (n_i, 4) boxes, x1y1x2y2 in ORIGINAL image pixels."""

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections + embeddings of gallery images; the given box and its
        embedding for query images (see the class docstring)."""
        # read first, so a bad query fails before any computation
        boxes = query_boxes(batch_data_samples, type(self).__name__)
        gallery = [i for i, b in enumerate(boxes) if b is None]
        query = [i for i, b in enumerate(boxes) if b is not None]
        results: List[Any] = [None] * len(boxes)
        if gallery:
            dets = self.predict_gallery(
                batch_inputs[gallery],
                [batch_data_samples[i] for i in gallery], rescale)
            for i, det in zip(gallery, dets):
                results[i] = det
        if query:
            metas = [batch_data_samples[i].metainfo for i in query]
            embeds = self.embed_boxes(batch_inputs[query],
                                      [boxes[i] for i in query], metas)
            for i, meta, emb in zip(query, metas, embeds):
                box = boxes[i]
                if not rescale:
                    box = to_input_pixels(box, meta)
                results[i] = query_instance(box, emb)
        return self.add_pred_to_datasample(batch_data_samples, results)

    # ---------------------------------------------------------- settings
    def test_settings(self) -> Dict[str, Any]:
        """What this model's numbers were measured with
        (``TEST_SETTING_KEYS``; None where the model has no such setting).
        Subclasses fill in theirs."""
        return {key: None for key in TEST_SETTING_KEYS}

    def test_seed_keys(self) -> List[str]:
        """Where this model's test-time randomness is seeded, as attribute
        paths under the model (e.g. ``'test_cfg.seed'``); empty when its
        results do not depend on a seed. The base class knows one: a
        backbone with a ``noise_seed`` that samples or adds noise
        (:class:`StableDiffusionBackbone`)."""
        backbone = getattr(self, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'noise_seed') and (
                getattr(backbone, 'latent', None) == 'sample'
                or getattr(backbone, 'add_noise', False)):
            return ['backbone.noise_seed']
        return []

    def test_seed(self) -> Any:
        """The seed the model holds now: one int, None (no seed, or one
        that draws from torch's global generator), or a dict key -> seed
        when the places of :meth:`test_seed_keys` hold different ones."""
        keys = self.test_seed_keys()
        if not keys:
            return None
        values = [self._get_seed(k) for k in keys]
        if any(v is None for v in values):
            return None
        if len(set(values)) == 1:
            return values[0]
        return {f'model.{k}': v for k, v in zip(keys, values)}

    def set_test_seed(self, seed: int) -> List[str]:
        """Seed every test-time randomness of the model with ``seed``;
        returns the keys set (:meth:`test_seed_keys`). The models read
        their seeds at every forward, so this works on a built and loaded
        model."""
        keys = self.test_seed_keys()
        for key in keys:
            self._set_seed(key, int(seed))
        return keys

    def _get_seed(self, key: str) -> Optional[int]:
        if key == 'backbone.noise_seed':
            return self.backbone.noise_seed
        if key == 'test_cfg.seed':
            return self.test_cfg.get('seed')
        raise KeyError(key)

    def _set_seed(self, key: str, seed: int) -> None:
        if key == 'backbone.noise_seed':
            self.backbone.noise_seed = seed
        elif key == 'test_cfg.seed':
            self.test_cfg.seed = seed
        else:
            raise KeyError(key)
