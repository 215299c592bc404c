# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff: person search as dual denoising of boxes and ReID embeddings."""
import zlib
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.models.detectors.base import BaseDetector
from mmdet.structures import OptSampleList, SampleList
from mmdet.structures.bbox import (bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh,
                                   scale_boxes)
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmpsearch.registry import MODELS, TASK_UTILS
from mmpsearch.utils.thresholds import check_cfg_thresholds
from ..diffusion import DDIMSampler, DiffusionSampler

#: What ``test_cfg`` holds when the config says nothing.
DEFAULT_TEST_CFG = dict(
    num_proposals=300,
    sampling_steps=8,
    sampler=dict(type=DDIMSampler, eta=1.0),
    seed=0,
    score_thr=0.5,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=100,
    box_renewal=False,
    renewal_thr=0.5,
    use_ensemble=False)


@MODELS.register_module()
class DiffusionPersonSearch(BaseDetector):
    """PSDiff (Jia et al., "PSDiff: Diffusion Model for Person Search with
    Iterative and Collaborative Refinement"): backbone + FPN + one
    Collaborative Denoising Layer reused at every step (Fig. 2, Alg. 1-2).

    Training (Alg. 1): the ``DualNoiseGenerator`` transform has made
    (b_t, e_t, t) per image (eq. 10); the CDL predicts (b̂_0, ê_0) and the
    set-prediction criterion scores them (eq. 13-14).

    Inference (Alg. 2): backbone + neck run ONCE per image; N_test boxes and
    embeddings start as Gaussian noise and go through ``sampling_steps``
    steps, each one CDL pass and one sampler update (DDIM, DPM-Solver,
    DPM-Solver++, picked by name in ``test_cfg.sampler``). The detections
    are the last pass's predictions (the last update would only feed a pass
    that is not run), optionally merged with every step's (ensembling),
    filtered by score and NMS. DiffusionDet's box renewal (proposals scoring
    below ``renewal_thr`` restart from noise) is optional.

    Randomness is seeded: each image gets a ``torch.Generator`` seeded from
    ``test_cfg.seed`` and its ``img_id`` (CRC32), drawn on the CPU, so a
    result does not depend on the batch it came in, on the device, or on
    earlier images; ``seed=None`` uses torch's global generator.

    Query images (metainfo ``split == 'query'``): the embedding is computed
    from the given box by the same k-step sampler. Proposal 0 is the query
    box, put back (clean, i.e. ``(2 b_0 - 1) s1``) into the box part of x_t
    before every pass, so every RoIAlign reads the query person; its
    embedding part is denoised from Gaussian noise like any other, and the
    other N_test - 1 proposals are ordinary random proposals that give the
    self-attention the context it had in training. The query embedding is
    proposal 0's ê_0 of the last pass, so query and gallery embeddings come
    out of the same process. The output is the given box (original pixels),
    score 1, label 0, and that embedding. The query box is read from
    ``gt_instances.bboxes`` in ORIGINAL image pixels: the test pipelines
    (``configs/_base_/datasets``) load the annotations after ``Resize``.

    Args:
        backbone (dict): E.g. mmdet's ResNet-50 or Swin-B.
        neck (dict): FPN (256 channels, strides 4-32).
        head (dict): :class:`CDLHead`.
        diffusion (dict): ``num_timesteps`` (T), ``beta_schedule``,
            ``box_snr_scale`` (s1) and ``embed_snr_scale`` (s2); must match
            the training pipeline's ``DualNoiseGenerator``.
        train_cfg (dict, optional): ``num_passes`` (default 1, the paper):
            how many times the one CDL is applied per training image, each
            pass starting from the previous pass's (detached) boxes and
            embeddings at the same t, every pass scored by the criterion
            (DiffusionDet's cascade, with the weights shared). More passes
            train the layer on the refined boxes it meets in the later
            sampling steps.
        test_cfg (dict, optional): See ``DEFAULT_TEST_CFG``.
        data_preprocessor (dict, optional): mmdet's DetDataPreprocessor.
    """

    #: The keys of the plain sub-dicts of the config, checked against
    #: ``--cfg-options`` before anything is built
    #: (``mmpsearch.utils.cfg_signature``).
    CFG_KEYS = dict(
        test_cfg=tuple(DEFAULT_TEST_CFG), train_cfg=('num_passes', ))

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 head: ConfigType,
                 diffusion: dict = dict(
                     num_timesteps=1000,
                     beta_schedule='cosine',
                     box_snr_scale=2.0,
                     embed_snr_scale=3.0),
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.head = MODELS.build(head)
        unknown = set(diffusion) - {
            'num_timesteps', 'beta_schedule', 'box_snr_scale',
            'embed_snr_scale'
        }
        if unknown:
            raise KeyError(f'model.diffusion has unknown keys '
                           f'{sorted(unknown)}')
        self.num_timesteps = int(diffusion.get('num_timesteps', 1000))
        self.beta_schedule = diffusion.get('beta_schedule', 'cosine')
        self.box_snr_scale = float(diffusion.get('box_snr_scale', 2.0))
        self.embed_snr_scale = float(diffusion.get('embed_snr_scale', 3.0))
        self.train_cfg = ConfigDict(dict(num_passes=1))
        self.train_cfg.update(train_cfg or {})
        unknown = set(self.train_cfg) - {'num_passes'}
        if unknown:
            raise KeyError(f'model.train_cfg has unknown keys '
                           f'{sorted(unknown)}; known: [\'num_passes\']')
        if int(self.train_cfg.num_passes) < 1:
            raise ValueError('model.train_cfg.num_passes must be >= 1, got '
                             f'{self.train_cfg.num_passes}')
        cfg = ConfigDict(DEFAULT_TEST_CFG)
        cfg.update(test_cfg or {})
        unknown = set(cfg) - set(DEFAULT_TEST_CFG)
        if unknown:
            raise KeyError(f'model.test_cfg has unknown keys '
                           f'{sorted(unknown)}; known: '
                           f'{sorted(DEFAULT_TEST_CFG)}')
        self.test_cfg = cfg
        self.check_test_cfg()

    def check_test_cfg(self) -> None:
        """Refuse ``test_cfg`` values that would silently run something
        else: a proposal or step count that is not a positive whole number
        (``int(2.5)`` would quietly run 2 steps) or a sampler name that is not
        registered. Called at build time and before every sampling run, as
        tools change ``test_cfg`` on a built model."""
        cfg = self.test_cfg
        for key in ('num_proposals', 'sampling_steps'):
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f'model.test_cfg.{key} must be a whole '
                                 f'number >= 1, got {value!r}')
        sampler = cfg.sampler
        kind = sampler if isinstance(sampler, str) else (
            sampler.get('type') if isinstance(sampler, dict) else None)
        cls = TASK_UTILS.get(kind) if isinstance(kind, str) else kind
        if not (isinstance(cls, type) and issubclass(cls, DiffusionSampler)):
            known = sorted(
                k for k, v in TASK_UTILS.module_dict.items()
                if isinstance(v, type) and issubclass(v, DiffusionSampler))
            raise KeyError(f'model.test_cfg.sampler {sampler!r} is not a '
                           f'diffusion sampler; known: {known}')
        # score_thr, nms.iou_threshold, renewal_thr: NaN or 5 would drop
        # (or keep) every box and print zeros
        check_cfg_thresholds(cfg, 'model.test_cfg')

    # ------------------------------------------------------------------
    # Features and the mapping between x_t and boxes.
    # ------------------------------------------------------------------
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """Backbone + neck: the image condition c of eq. 12."""
        return tuple(self.neck(self.backbone(batch_inputs)))

    @staticmethod
    def _img_whwh(batch_img_metas: List[dict], ref: Tensor) -> Tensor:
        return ref.new_tensor([[m['img_shape'][1], m['img_shape'][0]] * 2
                               for m in batch_img_metas])

    def x_to_boxes(self, x_boxes: Tensor, whwh: Tensor) -> Tensor:
        """b_t (B, N, 4) in the scaled space -> x1y1x2y2 pixels.

        Clamped to [-s1, s1] first (DiffusionDet); widths and heights are
        kept >= 1e-4 of the image so a box never collapses to zero size,
        from which box deltas could not recover it.
        """
        s1 = self.box_snr_scale
        x = (x_boxes.clamp(-s1, s1) / s1 + 1) / 2
        x = torch.cat([x[..., :2], x[..., 2:].clamp(min=1e-4)], dim=-1)
        return bbox_cxcywh_to_xyxy(x) * whwh[:, None]

    def boxes_to_x(self, boxes: Tensor, whwh: Tensor) -> Tensor:
        """x1y1x2y2 pixels -> b_0 in the scaled space, clamped to
        [-s1, s1]."""
        s1 = self.box_snr_scale
        x = bbox_xyxy_to_cxcywh(boxes / whwh[:, None])
        return ((x * 2 - 1) * s1).clamp(-s1, s1)

    # ------------------------------------------------------------------
    # Training.
    # ------------------------------------------------------------------
    def _noisy_inputs(self, batch_data_samples: SampleList,
                      device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        boxes, embeds, ts = [], [], []
        for ds in batch_data_samples:
            if 'noisy_instances' not in ds or 'diffusion_t' not in ds:
                raise KeyError(
                    f'data sample of image {ds.metainfo.get("img_id")} has '
                    'no noisy_instances / diffusion_t: the training '
                    'pipeline needs DualNoiseGenerator before '
                    'PackPersonSearchInputs')
            boxes.append(ds.noisy_instances.bboxes)
            embeds.append(ds.noisy_instances.embeds)
            ts.append(int(ds.diffusion_t))
        shapes = {tuple(b.shape) for b in boxes}
        if len(shapes) > 1:
            raise ValueError(f'noisy_bboxes of different shapes in one '
                             f'batch: {sorted(shapes)}; every image needs '
                             'the same DualNoiseGenerator.num_proposals')
        if not all(0 <= t < self.num_timesteps for t in ts):
            raise ValueError(f'diffusion_t {ts} outside [0, '
                             f'{self.num_timesteps}): the pipeline and '
                             'model.diffusion disagree on T')
        return (torch.stack(boxes).float().to(device),
                torch.stack(embeds).float().to(device),
                torch.tensor(ts, device=device))

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """One CDL pass on (b_t, e_t, t) and the criterion (Alg. 1)."""
        feats = self.extract_feat(batch_inputs)
        x_boxes, x_embeds, ts = self._noisy_inputs(batch_data_samples,
                                                   batch_inputs.device)
        metas = [ds.metainfo for ds in batch_data_samples]
        gts = [ds.gt_instances for ds in batch_data_samples]
        whwh = self._img_whwh(metas, x_boxes)
        boxes = self.x_to_boxes(x_boxes, whwh)
        embeds = x_embeds / self.embed_snr_scale
        num_passes = int(self.train_cfg.num_passes)
        head_feats = self.head.prepare(feats) if num_passes > 1 else feats
        losses: Dict[str, Tensor] = {}
        for k in range(num_passes):
            outs = self.head(head_feats, boxes, embeds, ts)
            prefix = '' if k == num_passes - 1 else f'p{k}.'
            for name, value in self.head.loss_by_feat(outs, gts,
                                                      metas).items():
                losses[prefix + name] = value
            # The next pass reads this one's b̂_0 and ê_0 as a sampling
            # step would (ê_0 normalised: x_0 = Norm(ê_0) s2, divided by s2).
            boxes = self.x_to_boxes(
                self.boxes_to_x(outs['bboxes'].detach(), whwh), whwh)
            embeds = F.normalize(outs['embeds'].detach(), dim=-1)
        return losses

    # ------------------------------------------------------------------
    # Inference.
    # ------------------------------------------------------------------
    def build_sampler(self) -> DiffusionSampler:
        """The sampler named in ``test_cfg.sampler`` (on the model's
        schedule)."""
        cfg = self.test_cfg.sampler
        if isinstance(cfg, str):
            cfg = dict(type=cfg)
        key = repr(cfg)
        cached = getattr(self, '_sampler_cache', None)
        if cached is None or cached[0] != key:
            sampler = TASK_UTILS.build(
                cfg,
                default_args=dict(
                    num_timesteps=self.num_timesteps,
                    beta_schedule=self.beta_schedule))
            self._sampler_cache = (key, sampler)
        return self._sampler_cache[1]

    def _generators(self, batch_img_metas: List[dict]
                    ) -> List[Optional[torch.Generator]]:
        seed = self.test_cfg.seed
        if seed is None:
            return [None] * len(batch_img_metas)
        gens = []
        for i, meta in enumerate(batch_img_metas):
            key = meta.get('img_id', meta.get('img_path', i))
            gen = torch.Generator()
            gen.manual_seed(zlib.crc32(f'{int(seed)}/{key}'.encode()))
            gens.append(gen)
        return gens

    @staticmethod
    def _randn(gens: List[Optional[torch.Generator]], shape: Tuple[int, ...],
               ref: Tensor) -> Tensor:
        """(B, *shape) standard normal, image i from generator i."""
        return torch.stack([
            torch.randn(shape, generator=g, dtype=torch.float32)
            for g in gens
        ]).to(device=ref.device, dtype=ref.dtype)

    def _query_boxes(self, batch_data_samples: SampleList
                     ) -> List[Optional[Tensor]]:
        """Per sample, None or the query box (1, 4) in ORIGINAL pixels."""
        out = []
        for ds in batch_data_samples:
            if ds.metainfo.get('split') != 'query':
                out.append(None)
                continue
            gt = ds.get('gt_instances')
            if gt is None or 'bboxes' not in gt or len(gt.bboxes) != 1:
                n = 0 if gt is None or 'bboxes' not in gt else len(gt.bboxes)
                raise ValueError(
                    f'query image {ds.metainfo.get("img_id")} (query_index '
                    f'{ds.metainfo.get("query_index")}) has {n} boxes in '
                    'gt_instances, expected exactly the query box: the '
                    'query pipeline must load annotations')
            boxes = gt.bboxes
            out.append(boxes.tensor if hasattr(boxes, 'tensor') else boxes)
        return out

    @staticmethod
    def _to_input_pixels(box: Tensor, meta: dict) -> Tensor:
        """Original pixels -> pixels of the (resized) network input."""
        return scale_boxes(box.reshape(1, 4).float(), meta['scale_factor'])

    def denoise(self, feats: Tuple[Tensor, ...], batch_img_metas: List[dict],
                query_boxes: Optional[List[Optional[Tensor]]] = None
                ) -> List[Dict[str, Tensor]]:
        """Run the sampler (Alg. 2) on precomputed image features.

        Args:
            feats: Output of :meth:`extract_feat` for the batch.
            batch_img_metas: ``img_shape`` (and ``img_id`` for seeding).
            query_boxes: Per image, None or a (1, 4) box in pixels of the
                network input, held fixed as proposal 0.

        Returns:
            list[dict]: The head outputs (``cls_scores``, ``bboxes``,
            ``embeds``) of every step, the last one last.
        """
        self.check_test_cfg()
        cfg = self.test_cfg
        B = feats[0].shape[0]
        N, D = int(cfg.num_proposals), self.head.embed_dims
        sampler = self.build_sampler()
        if cfg.box_renewal and not sampler.supports_renewal:
            raise ValueError(
                f'test_cfg.box_renewal needs a sampler without a history '
                f'of earlier steps (DDIMSampler); {type(sampler).__name__} '
                'keeps one. Set box_renewal=False.')
        run = sampler.start(int(cfg.sampling_steps))
        ref = feats[0]
        whwh = self._img_whwh(batch_img_metas, ref)
        gens = self._generators(batch_img_metas)
        x = self._randn(gens, (N, 4 + D), ref)

        query_boxes = query_boxes or [None] * B
        is_query = torch.tensor([q is not None for q in query_boxes],
                                device=ref.device)
        known = torch.zeros(B, 4, device=ref.device, dtype=ref.dtype)
        for i, q in enumerate(query_boxes):
            if q is not None:
                known[i] = self.boxes_to_x(
                    q.to(ref).reshape(1, 1, 4), whwh[i:i + 1])[0, 0]

        s2 = self.embed_snr_scale
        head_feats = self.head.prepare(feats)  # once, reused by every step
        steps = []
        timesteps = run.timesteps
        for k, t in enumerate(timesteps):
            if is_query.any():
                x[is_query, 0, :4] = known[is_query]
            t_batch = torch.full((B, ), t, device=ref.device,
                                 dtype=torch.long)
            outs = self.head(head_feats, self.x_to_boxes(x[..., :4], whwh),
                             x[..., 4:] / s2, t_batch)
            steps.append(outs)
            if k == len(timesteps) - 1:
                break
            x0 = torch.cat([
                self.boxes_to_x(outs['bboxes'], whwh),
                F.normalize(outs['embeds'], dim=-1) * s2
            ], dim=-1)
            noise = self._randn(gens, (N, 4 + D), ref) \
                if run.stochastic else None
            x = run.step(x0, t, x, noise)
            if cfg.box_renewal:
                # DiffusionDet: proposals scoring below the threshold
                # restart from noise (the query box is kept).
                scores = outs['cls_scores'].sigmoid().amax(-1)
                renew = scores < cfg.renewal_thr
                renew[is_query, 0] = False
                for i, gen in enumerate(gens):
                    num = int(renew[i].sum())
                    if num:
                        x[i, renew[i]] = torch.randn(
                            (num, 4 + D), generator=gen).to(x)
        return steps

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections and embeddings of gallery images; the embedding of
        the given box for query images (see the class docstring)."""
        feats = self.extract_feat(batch_inputs)  # once per image
        return self.predict_by_feat(feats, batch_data_samples, rescale)

    def predict_by_feat(self,
                        feats: Tuple[Tensor, ...],
                        batch_data_samples: SampleList,
                        rescale: bool = True) -> SampleList:
        """:meth:`predict` after :meth:`extract_feat`: the k sampling steps
        and the post-processing."""
        metas = [ds.metainfo for ds in batch_data_samples]
        query_boxes = self._query_boxes(batch_data_samples)
        steps = self.denoise(feats, metas, [
            None if q is None else self._to_input_pixels(q, meta)
            for q, meta in zip(query_boxes, metas)
        ])
        results = []
        for i, meta in enumerate(metas):
            if query_boxes[i] is not None:
                results.append(
                    self._query_result(steps[-1], i, query_boxes[i], meta,
                                       rescale))
            else:
                use = steps if self.test_cfg.use_ensemble else steps[-1:]
                results.append(self._gallery_result(use, i, meta, rescale))
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _query_result(self, outs: Dict[str, Tensor], i: int, box: Tensor,
                      meta: dict, rescale: bool) -> InstanceData:
        res = InstanceData()
        box = box.to(outs['bboxes']).reshape(1, 4)
        if not rescale:
            box = self._to_input_pixels(box, meta)
        res.bboxes = box
        res.scores = box.new_ones(1)
        res.labels = torch.zeros(1, dtype=torch.long, device=box.device)
        res.embeddings = F.normalize(outs['embeds'][i, :1], dim=-1)
        return res

    def _gallery_result(self, steps: List[Dict[str, Tensor]], i: int,
                        meta: dict, rescale: bool) -> InstanceData:
        cfg = self.test_cfg
        img_h, img_w = meta['img_shape'][:2]
        boxes, scores, labels, embeds = [], [], [], []
        for outs in steps:
            s, lab = outs['cls_scores'][i].sigmoid().max(dim=-1)
            keep = s >= cfg.score_thr
            b = outs['bboxes'][i][keep]
            b = torch.stack([
                b[:, 0].clamp(0, img_w), b[:, 1].clamp(0, img_h),
                b[:, 2].clamp(0, img_w), b[:, 3].clamp(0, img_h)
            ], dim=-1)
            boxes.append(b)
            scores.append(s[keep])
            labels.append(lab[keep])
            embeds.append(outs['embeds'][i][keep])
        boxes, scores = torch.cat(boxes), torch.cat(scores)
        labels, embeds = torch.cat(labels), torch.cat(embeds)
        if len(boxes) > 0 and cfg.nms is not None:
            _, keep = batched_nms(boxes, scores, labels, cfg.nms)
            boxes, scores = boxes[keep], scores[keep]
            labels, embeds = labels[keep], embeds[keep]
        order = scores.argsort(descending=True)[:cfg.max_per_img]
        res = InstanceData()
        boxes = boxes[order]
        if rescale:
            boxes = scale_boxes(boxes, [1 / s for s in meta['scale_factor']])
        res.bboxes = boxes
        res.scores = scores[order]
        res.labels = labels[order]
        res.embeddings = F.normalize(embeds[order], dim=-1)
        return res

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: OptSampleList = None
                 ) -> Tuple[Tensor, ...]:
        """Features plus one CDL pass from noise at t = T - 1 (for FLOP
        counting and export): (cls_scores, bboxes, embeds)."""
        feats = self.extract_feat(batch_inputs)
        if batch_data_samples is None:
            h, w = batch_inputs.shape[-2:]
            metas = [dict(img_shape=(h, w), img_id=str(i))
                     for i in range(batch_inputs.shape[0])]
        else:
            metas = [ds.metainfo for ds in batch_data_samples]
        cfg = self.test_cfg
        steps = self.test_cfg.sampling_steps
        try:
            cfg.sampling_steps = 1
            outs = self.denoise(feats, metas)[-1]
        finally:
            cfg.sampling_steps = steps
        return outs['cls_scores'], outs['bboxes'], outs['embeds']
