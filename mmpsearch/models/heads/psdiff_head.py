# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's head: the dual reverse process around one reused CDL."""
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from mmdet.utils import ConfigType, InstanceList, OptConfigType
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torchvision.ops import batched_nms

from mmpsearch.diffusion import DiffusionSampler, DiffusionSettings
from mmpsearch.registry import MODELS, TASK_UTILS
from mmpsearch.utils.checked_config import CheckedConfigDict
from ..losses import DualDenoisingCriterion
from ..utils.query_gallery import (query_boxes, query_instance,
                                   to_input_pixels, to_original_pixels)
from .psdiff_settings import (PSDiffTestSettings, PSDiffTrainSettings,
                              check_resolved_test_cfg)


@MODELS.register_module()
class PSDiffHead(BaseModule):
    """The head of PSDiff (Jia et al., "PSDiff: Diffusion Model for Person
    Search with Iterative and Collaborative Refinement"): the dual denoising
    of boxes and ReID embeddings (Sec. III, Alg. 1-2) around one
    Collaborative Denoising Layer (``denoiser``, :class:`CDLHead`, eq. 12)
    reused at every step. It owns the denoiser, the criterion (eq. 13-14),
    the schedule and the sampler, as DiffusionDet's head does in mmdet
    (``projects/DiffusionDet``).

    Training (Alg. 1, :meth:`loss`): the ``DualNoiseGenerator`` transform has
    made (b_t, e_t, t) per image (eq. 10); the CDL predicts (b̂_0, ê_0) and
    the criterion scores them.

    Inference (Alg. 2, :meth:`predict`): N_test boxes and embeddings start as
    Gaussian noise and go through ``sampling_steps`` steps (:meth:`denoise`),
    each ``test_cfg.num_passes`` chained CDL passes at the step's t (by
    default as many as ``train_cfg.num_passes``, so a step returns what
    training scored last) and one sampler update (DDIM, DPM-Solver,
    DPM-Solver++, picked by name in ``test_cfg.sampler``) on features
    computed once per image. The detections are the last pass's predictions
    (the last update would only feed a pass that is not run), optionally
    merged with every step's (ensembling), filtered by score and NMS
    (:meth:`predict_by_feat`). DiffusionDet's box renewal (proposals scoring
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
    score 1, label 0, and that embedding.

    Args:
        denoiser (dict): The CDL, :class:`CDLHead`; its ``embed_dims``
            defaults to ``diffusion.embed_dims``.
        criterion (dict): :class:`DualDenoisingCriterion`.
        diffusion (dict): :class:`~mmpsearch.diffusion.DiffusionSettings`
            (T, schedule, s1, s2, N_train, D), the same dict the training
            pipeline's ``DualNoiseGenerator`` gets.
        train_cfg (dict, optional): ``num_passes`` (default 1, the paper):
            how many times the one CDL is applied per training image, each
            pass starting from the previous pass's (detached) boxes and
            embeddings at the same t, every pass scored by the criterion
            (DiffusionDet's cascade, with the weights shared). More passes
            train the layer on the refined boxes it meets in the later
            sampling steps. The keys, defaults and checks:
            :class:`~.psdiff_settings.PSDiffTrainSettings`.
        test_cfg (dict, optional): The keys, defaults and checks:
            :class:`~.psdiff_settings.PSDiffTestSettings`.
        num_layers (int): 1 (the paper: one CDL reused by every pass and
            step), or K distinct layers of the same config, pass k using
            layer min(k, K - 1) (an ablation: Sparse R-CNN / DiffusionDet
            stack separate heads).
    """

    #: The keys of the plain sub-dicts of the config, checked against
    #: ``--cfg-options`` before anything is built
    #: (``mmpsearch.utils.cfg_signature``): the fields of the settings
    #: classes.
    CFG_KEYS = dict(
        test_cfg=PSDiffTestSettings.keys(),
        train_cfg=PSDiffTrainSettings.keys(),
        diffusion=DiffusionSettings.keys())

    def __init__(self,
                 denoiser: ConfigType,
                 criterion: ConfigType = dict(type=DualDenoisingCriterion),
                 diffusion: Optional[dict] = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 num_layers: int = 1,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(
                num_layers,
                bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError('model.bbox_head.num_layers must be a whole '
                             f'number >= 1, got {num_layers!r}')
        self.diffusion = DiffusionSettings.from_cfg(
            diffusion, 'model.bbox_head.diffusion')
        denoiser = dict(denoiser)
        if self.diffusion.embed_dims is not None:
            given = denoiser.setdefault('embed_dims',
                                        self.diffusion.embed_dims)
            if given != self.diffusion.embed_dims:
                raise ValueError(
                    f'model.bbox_head.denoiser.embed_dims ({given}) differs '
                    'from model.bbox_head.diffusion.embed_dims '
                    f'({self.diffusion.embed_dims}); set it once, in '
                    'diffusion')
        self.denoiser = MODELS.build(denoiser)
        # The ablation of separate weights per pass (a cascade, as in Sparse
        # R-CNN / DiffusionDet): pass k uses layer min(k, num_layers - 1).
        self.extra_layers = nn.ModuleList(
            MODELS.build(denoiser) for _ in range(num_layers - 1))
        self.criterion = MODELS.build(criterion)
        self.set_train_cfg(train_cfg)
        self.set_test_cfg(test_cfg)

    # ------------------------------------------------------------ settings
    def layer(self, k: int) -> nn.Module:
        """The CDL of pass ``k`` (0-based): the one shared layer of the
        paper, or, with ``num_layers`` > 1, layer ``min(k, num_layers - 1)``.
        """
        if k == 0 or not len(self.extra_layers):
            return self.denoiser
        return self.extra_layers[min(k, len(self.extra_layers)) - 1]

    @property
    def embed_dims(self) -> int:
        return self.denoiser.embed_dims

    @property
    def num_timesteps(self) -> int:
        return self.diffusion.num_timesteps

    @staticmethod
    def _with_defaults(settings: type, cfg: OptConfigType) -> ConfigDict:
        """``cfg`` merged (as mmengine merges) over the defaults of
        ``settings`` (:class:`PSDiffTestSettings` or
        :class:`PSDiffTrainSettings`), in the order of its fields."""
        merged = ConfigDict(settings.defaults())
        merged.update(cfg or {})
        return merged

    def set_train_cfg(self, train_cfg: OptConfigType) -> None:
        cfg = self._with_defaults(PSDiffTrainSettings, train_cfg)
        PSDiffTrainSettings.from_cfg(cfg)  # unknown keys, bad values
        self.train_cfg = cfg

    def set_test_cfg(self, test_cfg: OptConfigType) -> None:
        cfg = self._with_defaults(PSDiffTestSettings, test_cfg)
        if cfg.num_proposals is None:
            cfg.num_proposals = self.diffusion.num_proposals
        # checked now (unknown keys, bad values) and whenever a tool
        # changes one of its values
        self.test_cfg = CheckedConfigDict(cfg, check=check_resolved_test_cfg)

    def check_test_cfg(self) -> None:
        """Check ``test_cfg`` as it is now (:func:`~.psdiff_settings.
        check_resolved_test_cfg`). It need not be called before a run:
        ``test_cfg`` checks itself when it is set and whenever a tool
        changes one of its values."""
        check_resolved_test_cfg(self.test_cfg)

    # ------------------------------------------- the x_t <-> boxes maps
    @staticmethod
    def img_whwh(batch_img_metas: List[dict], ref: Tensor) -> Tensor:
        return ref.new_tensor([[m['img_shape'][1], m['img_shape'][0]] * 2
                               for m in batch_img_metas])

    def x_to_boxes(self, x_boxes: Tensor, whwh: Tensor) -> Tensor:
        """b_t (B, N, 4) in the scaled space -> x1y1x2y2 pixels.

        Clamped to [-s1, s1] first (DiffusionDet); widths and heights are
        kept >= 1e-4 of the image so a box never collapses to zero size,
        from which box deltas could not recover it.
        """
        s1 = self.diffusion.box_snr_scale
        x = (x_boxes.clamp(-s1, s1) / s1 + 1) / 2
        x = torch.cat([x[..., :2], x[..., 2:].clamp(min=1e-4)], dim=-1)
        return bbox_cxcywh_to_xyxy(x) * whwh[:, None]

    def boxes_to_x(self, boxes: Tensor, whwh: Tensor) -> Tensor:
        """x1y1x2y2 pixels -> b_0 in the scaled space, clamped to
        [-s1, s1]."""
        s1 = self.diffusion.box_snr_scale
        x = bbox_xyxy_to_cxcywh(boxes / whwh[:, None])
        return ((x * 2 - 1) * s1).clamp(-s1, s1)

    # ---------------------------------------------------------- training
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
        # T of the pipeline and of the model agree: checked once, before
        # training (TeacherEmbeddingsCheckHook, DualNoiseGenerator.
        # check_model), not on every batch
        return (torch.stack(boxes).float().to(device),
                torch.stack(embeds).float().to(device),
                torch.tensor(ts, device=device))

    def loss(self, x: Tuple[Tensor, ...],
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """CDL passes on (b_t, e_t, t) and the criterion (Alg. 1)."""
        x_boxes, x_embeds, ts = self._noisy_inputs(batch_data_samples,
                                                   x[0].device)
        metas = [ds.metainfo for ds in batch_data_samples]
        gts = [ds.gt_instances for ds in batch_data_samples]
        whwh = self.img_whwh(metas, x_boxes)
        boxes = self.x_to_boxes(x_boxes, whwh)
        embeds = x_embeds / self.diffusion.embed_snr_scale
        num_passes = int(self.train_cfg.num_passes)
        feats = self.denoiser.prepare(x) if num_passes > 1 else x
        losses: Dict[str, Tensor] = {}
        for k in range(num_passes):
            outs = self.layer(k)(feats, boxes, embeds, ts)
            prefix = '' if k == num_passes - 1 else f'p{k}.'
            for name, value in self.loss_by_feat(outs, gts, metas).items():
                losses[prefix + name] = value
            # The next pass reads this one's b̂_0 and ê_0 as a sampling
            # step would (ê_0 normalised: x_0 = Norm(ê_0) s2, divided by s2).
            boxes = self.x_to_boxes(
                self.boxes_to_x(outs['bboxes'].detach(), whwh), whwh)
            embeds = F.normalize(outs['embeds'].detach(), dim=-1)
        return losses

    def loss_by_feat(self, outs: Dict[str, Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """The criterion (eq. 13-14) on one pass of the denoiser."""
        return self.criterion(outs['cls_scores'], outs['bboxes'],
                              outs['embeds'], batch_gt_instances,
                              batch_img_metas)

    # --------------------------------------------------------- sampling
    def build_sampler(self) -> DiffusionSampler:
        """The sampler named in ``test_cfg.sampler`` (on the head's
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
                    num_timesteps=self.diffusion.num_timesteps,
                    beta_schedule=self.diffusion.beta_schedule))
            self._sampler_cache = (key, sampler)
        return self._sampler_cache[1]

    def _generators(
            self,
            batch_img_metas: List[dict]) -> List[Optional[torch.Generator]]:
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
            torch.randn(shape, generator=g, dtype=torch.float32) for g in gens
        ]).to(
            device=ref.device, dtype=ref.dtype)

    def denoise(self,
                feats: Sequence[Tensor],
                batch_img_metas: List[dict],
                query_boxes: Optional[List[Optional[Tensor]]] = None,
                sampling_steps: Optional[int] = None,
                num_passes: Optional[int] = None) -> List[Dict[str, Tensor]]:
        """Run the sampler (Alg. 2) on precomputed image features.

        Args:
            feats: The detector's ``extract_feat`` output for the batch.
            batch_img_metas: ``img_shape`` (and ``img_id`` for seeding).
            query_boxes: Per image, None or a (1, 4) box in pixels of the
                network input, held fixed as proposal 0.
            sampling_steps: How many steps; default ``test_cfg``'s.
            num_passes: CDL passes per step; default ``test_cfg``'s, whose
                default (None) is ``train_cfg.num_passes``.

        Returns:
            list[dict]: The denoiser outputs (``cls_scores``, ``bboxes``,
            ``embeds``) of every step's last pass, the last step last.
        """
        cfg = self.test_cfg
        B = feats[0].shape[0]
        N, D = int(cfg.num_proposals), self.embed_dims
        sampler = self.build_sampler()
        if cfg.box_renewal and not sampler.supports_renewal:
            raise ValueError(
                f'test_cfg.box_renewal needs a sampler without a history '
                f'of earlier steps (DDIMSampler); {type(sampler).__name__} '
                'keeps one. Set box_renewal=False.')
        run = sampler.start(
            int(cfg.sampling_steps if sampling_steps is
                None else sampling_steps))
        ref = feats[0]
        whwh = self.img_whwh(batch_img_metas, ref)
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

        s2 = self.diffusion.embed_snr_scale
        passes = self.passes_per_step(num_passes)
        prepared = self.denoiser.prepare(feats)  # reused by every step
        steps = []
        timesteps = run.timesteps
        for k, t in enumerate(timesteps):
            t_batch = torch.full((B, ), t, device=ref.device, dtype=torch.long)
            # The passes of one step chain as in training (:meth:`loss`):
            # each reads the previous pass's b̂_0 through the box space and
            # its ê_0 normalised, at the same t; the query box stays pinned.
            x_in = x
            for j in range(passes):
                if is_query.any():
                    x_in = x_in.clone()
                    x_in[is_query, 0, :4] = known[is_query]
                outs = self.layer(j)(prepared,
                                     self.x_to_boxes(x_in[..., :4], whwh),
                                     x_in[..., 4:] / s2, t_batch)
                x_in = torch.cat([
                    self.boxes_to_x(outs['bboxes'], whwh),
                    F.normalize(outs['embeds'], dim=-1) * s2
                ],
                                 dim=-1)
            steps.append(outs)
            if k == len(timesteps) - 1:
                break
            x0 = x_in
            if is_query.any():
                x[is_query, 0, :4] = known[is_query]
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
                        x[i, renew[i]] = torch.randn((num, 4 + D),
                                                     generator=gen).to(x)
        return steps

    def passes_per_step(self, num_passes: Optional[int] = None) -> int:
        """CDL passes per sampling step: ``num_passes``, else
        ``test_cfg.num_passes``, else ``train_cfg.num_passes`` (sampling
        then repeats what training taught the layer: with 3 training passes,
        one pass per step returns what training calls pass 0)."""
        for value in (num_passes, self.test_cfg.num_passes,
                      self.train_cfg.num_passes):
            if value is not None:
                if isinstance(value, bool) or int(value) != value or \
                        value < 1:
                    raise ValueError('num_passes (CDL passes per sampling '
                                     f'step) must be a whole number >= 1, '
                                     f'got {value!r}')
                return int(value)
        return 1

    def forward(self, x: Sequence[Tensor],
                batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """One sampling step (its ``num_passes`` CDL passes) from noise at
        t = T - 1 (for FLOP counting and export): (cls_scores, bboxes,
        embeds)."""
        outs = self.denoise(x, batch_img_metas, sampling_steps=1)[-1]
        return outs['cls_scores'], outs['bboxes'], outs['embeds']

    # -------------------------------------------------------- inference
    def predict(self,
                x: Sequence[Tensor],
                batch_data_samples: SampleList,
                rescale: bool = True) -> InstanceList:
        """Detections and embeddings of gallery images; the embedding of
        the given box for query images (see the class docstring)."""
        metas = [ds.metainfo for ds in batch_data_samples]
        boxes = query_boxes(batch_data_samples, type(self).__name__)
        steps = self.denoise(x, metas, [
            None if q is None else to_input_pixels(q, meta)
            for q, meta in zip(boxes, metas)
        ])
        return self.predict_by_feat(steps, metas, boxes, rescale)

    def embed_boxes(self, x: Sequence[Tensor], boxes: Sequence[Tensor],
                    batch_img_metas: List[dict]) -> List[Tensor]:
        """Per image, the (1, D) embedding of its one given box (original
        pixels): the box is pinned as proposal 0 of the k-step sampler and
        its embedding is proposal 0's ê_0 of the last pass (see the class
        docstring)."""
        for b, meta in zip(boxes, batch_img_metas):
            if b.numel() != 4:
                raise ValueError(
                    f'{type(self).__name__} embeds one given box per image '
                    f'(pinned as proposal 0), got {b.numel() // 4} for '
                    f'image {meta.get("img_id")}')
        steps = self.denoise(x, batch_img_metas, [
            to_input_pixels(b, meta)
            for b, meta in zip(boxes, batch_img_metas)
        ])
        return [self._query_embedding(steps[-1], i) for i in range(len(boxes))]

    @staticmethod
    def _query_embedding(outs: Dict[str, Tensor], i: int) -> Tensor:
        """Proposal 0's embedding of image ``i`` (the pinned query box)."""
        return F.normalize(outs['embeds'][i, :1], dim=-1)

    def predict_by_feat(self,
                        steps: List[Dict[str, Tensor]],
                        batch_img_metas: List[dict],
                        query_boxes: Optional[List[Optional[Tensor]]] = None,
                        rescale: bool = True) -> InstanceList:
        """The post-processing of :meth:`denoise`'s outputs, per image."""
        query_boxes = query_boxes or [None] * len(batch_img_metas)
        results = []
        for i, meta in enumerate(batch_img_metas):
            if query_boxes[i] is not None:
                box = query_boxes[i] if rescale else to_input_pixels(
                    query_boxes[i], meta)
                results.append(
                    query_instance(box, self._query_embedding(steps[-1], i)))
            else:
                use = steps if self.test_cfg.use_ensemble else steps[-1:]
                results.append(
                    self._predict_by_feat_single(use, i, meta, rescale))
        return results

    def _predict_by_feat_single(self, steps: List[Dict[str, Tensor]], i: int,
                                meta: dict, rescale: bool) -> InstanceData:
        """Score threshold, clipping, NMS over the steps used (the last, or
        all of them with ``use_ensemble``) and ``max_per_img``."""
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
            ],
                            dim=-1)
            boxes.append(b)
            scores.append(s[keep])
            labels.append(lab[keep])
            embeds.append(outs['embeds'][i][keep])
        boxes, scores = torch.cat(boxes), torch.cat(scores)
        labels, embeds = torch.cat(labels), torch.cat(embeds)
        if len(boxes) > 0 and cfg.nms is not None:
            # torchvision's NMS, not mmcv's: the main job then needs no
            # compiled mmcv op on any device (mmcv's CUDA build is the
            # ecosystem's most reported install failure)
            keep = batched_nms(boxes.float(), scores.float(), labels,
                               float(cfg.nms['iou_threshold']))
            boxes, scores = boxes[keep], scores[keep]
            labels, embeds = labels[keep], embeds[keep]
        order = scores.argsort(descending=True)[:cfg.max_per_img]
        res = InstanceData()
        boxes = boxes[order]
        if rescale:
            boxes = to_original_pixels(boxes, meta)
        res.bboxes = boxes
        res.scores = scores[order]
        res.labels = labels[order]
        res.embeddings = F.normalize(embeds[order], dim=-1)
        return res
