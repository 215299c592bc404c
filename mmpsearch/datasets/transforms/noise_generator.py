# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's dual noise generator (eq. 10), as a data transform."""
import math
from typing import Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform

from mmpsearch.datasets.teacher_cache import TeacherEmbeddings
from mmpsearch.diffusion import DiffusionSettings, NoiseSchedule
from mmpsearch.registry import TRANSFORMS


def _l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@TRANSFORMS.register_module()
class DualNoiseGenerator(BaseTransform):
    """Noisy boxes and noisy ReID embeddings for one training image.

    Implements the dual noise generator of PSDiff (Jia et al., "PSDiff:
    Diffusion Model for Person Search with Iterative and Collaborative
    Refinement", eq. 10):

    - the ground truth is brought to ``num_proposals`` entries (padded with
      random boxes as DiffusionDet does, or repeated),
    - one timestep ``t`` is drawn uniformly (0-based, ``0 .. T-1``) and one
      ``abar_t`` (cosine schedule) is used for both modalities,
    - ``b_t = s1 * sqrt(abar_t) * (2 b_0 - 1) + sqrt(1 - abar_t) * eps_1``
      with b_0 = (cx, cy, w, h) normalised by the (resized) image size,
    - ``e_t = s2 * sqrt(abar_t) * Norm(e_0) + sqrt(1 - abar_t) * eps_2``
      with e_0 the ReID teacher's embedding of the box (eq. 11), read from
      the file written by ``tools/extract_teacher_embeddings.py``.

    ``b_t`` is stored exactly as eq. 10 gives it (not clamped); the model
    clamps it to ``[-s1, s1]`` when it turns it into boxes, as DiffusionDet
    does. Padding entries get a random box (cx, cy, w, h ~ N(0.5, 1/6), w and
    h at least 1e-4) and a random unit embedding. An image without any
    person gets only padding entries.

    Place it after all geometric transforms (resize, flip, crop) and before
    ``PackPersonSearchInputs``. Unlabeled persons get their teacher
    embeddings too: every annotated box has one.

    Required keys: ``img_id``, ``img_shape``, ``instances`` (the data info's,
    whose boxes index the teacher file), ``gt_bboxes``; optional
    ``gt_ignore_flags``.

    Added keys:

    - ``noisy_bboxes`` (float32, (N, 4)): b_t, cx cy w h, in the
      normalised and SNR-scaled space.
    - ``noisy_embeds`` (float32, (N, D)): e_t.
    - ``noise_gt_inds`` (int64, (N,)): for each entry the index of the ground
      truth it was made from, counted among the non-ignored boxes (the order
      of ``gt_instances`` after packing), -1 for padding.
    - ``diffusion_t`` (int): the timestep.
    - ``gt_teacher_embeds`` (float32, (n, D)): the teacher's e_0 of every
      box of ``gt_bboxes`` (L2-normalised), the regression target of the
      ReID branch.

    Args:
        teacher_embeds (str): Path of the teacher embeddings ``.npz``.
        diffusion (dict, optional): The settings shared with the model,
            :class:`~mmpsearch.diffusion.DiffusionSettings`:
            ``num_timesteps`` (T), ``beta_schedule``, ``box_snr_scale``
            (s1), ``embed_snr_scale`` (s2), ``num_proposals`` (N_train) and
            ``embed_dims`` (D, the width the teacher file must have). The
            configs give the same dict to the model's ``PSDiffHead``.
            None: the defaults (300, 2.0, 3.0, 1000, ``'cosine'``, None).
        pad_mode (str): ``'random'`` (DiffusionDet's Gaussian boxes) or
            ``'repeat'`` (cycle the ground truth). Defaults to ``'random'``.
        timestep_range (tuple[int, int], optional): Draw t from
            ``[low, high)`` instead of ``[0, T)``; for analysis of single
            noise levels. Defaults to None.
        center_teacher (bool): Use ``Norm(Norm(e_0) - mu)`` as the target,
            mu the mean of the file's normalised embeddings. A teacher whose
            embedding is a global average pool after ReLU (ours in
            ``configs/teacher``) gives vectors with a large common part
            (mean cosine between different people 0.42 on the synthetic
            data), so a constant prediction already scores well and the
            CDL's image path gets little gradient; a BNNeck teacher's are
            centred already. Defaults to False (eq. 10 as written).
    """

    PAD_MODES = ('random', 'repeat')
    #: ``diffusion``'s keys, checked against ``--cfg-options`` before
    #: anything is built (``mmpsearch.utils.cfg_signature``).
    CFG_KEYS = dict(diffusion=DiffusionSettings.keys())

    def __init__(self,
                 teacher_embeds: str,
                 diffusion: Optional[dict] = None,
                 pad_mode: str = 'random',
                 timestep_range: Optional[Tuple[int, int]] = None,
                 center_teacher: bool = False) -> None:
        settings = DiffusionSettings.from_cfg(diffusion,
                                              'DualNoiseGenerator.diffusion')
        if not teacher_embeds:
            raise ValueError(
                'DualNoiseGenerator needs teacher_embeds: the path of the '
                'file written by tools/extract_teacher_embeddings.py')
        if pad_mode not in self.PAD_MODES:
            raise ValueError(f'DualNoiseGenerator: pad_mode must be one of '
                             f'{self.PAD_MODES}, got {pad_mode!r}')
        self.teacher_embeds = teacher_embeds
        self.settings = settings
        self.schedule = NoiseSchedule(settings.num_timesteps,
                                      settings.beta_schedule)
        self.pad_mode = pad_mode
        if timestep_range is None:
            timestep_range = (0, self.schedule.num_timesteps)
        low, high = (int(v) for v in timestep_range)
        if not 0 <= low < high <= self.schedule.num_timesteps:
            raise ValueError(
                f'DualNoiseGenerator: timestep_range {timestep_range} must '
                f'satisfy 0 <= low < high <= {self.schedule.num_timesteps}')
        self.timestep_range = (low, high)
        self.center_teacher = bool(center_teacher)
        self._teacher: Optional[TeacherEmbeddings] = None

    # The settings read by the transform, by their names in eq. 10.
    @property
    def num_proposals(self) -> int:
        return self.settings.num_proposals

    @property
    def box_snr_scale(self) -> float:
        return self.settings.box_snr_scale

    @property
    def embed_snr_scale(self) -> float:
        return self.settings.embed_snr_scale

    @property
    def embed_dims(self) -> Optional[int]:
        return self.settings.embed_dims

    @property
    def teacher(self) -> TeacherEmbeddings:
        # Opened on first use, so a config can be built (and the dataset
        # forked into workers) without reading the file.
        if self._teacher is None:
            teacher = TeacherEmbeddings(self.teacher_embeds)
            if self.embed_dims is not None and teacher.dim != self.embed_dims:
                raise ValueError(
                    f'{self.teacher_embeds} holds {teacher.dim}-d teacher '
                    f'embeddings but DualNoiseGenerator.embed_dims (the '
                    f'denoiser\'s embed_dims) is {self.embed_dims}')
            self._teacher = teacher
        return self._teacher

    def check_model(self, num_timesteps: int) -> None:
        """Check, before training, that the model samples on the T this
        transform draws t from (the configs give both one ``diffusion``
        dict; a leaf or ``--cfg-options`` may change only one of them). Once,
        not on every batch: :class:`~mmpsearch.engine.hooks.
        TeacherEmbeddingsCheckHook` calls it."""
        if self.schedule.num_timesteps != int(num_timesteps):
            raise ValueError(
                f'DualNoiseGenerator draws diffusion_t from [0, '
                f'{self.schedule.num_timesteps}) but the model has '
                f'T = {num_timesteps}: the pipeline and '
                'model.bbox_head.diffusion disagree on T')

    def check_dataset(self,
                      dataset,
                      embed_dims: Optional[int] = None,
                      max_shown: int = 5) -> int:
        """Check, before training, that the teacher file holds one row per
        annotated box of every image of ``dataset`` (the boxes within
        0.5 px) and, with ``embed_dims`` (the model's), that its width is
        that. Opening the file also checks that every row is finite.

        Returns the number of images checked; raises ValueError naming the
        first images that do not fit.
        """
        teacher = self.teacher
        if embed_dims is not None and teacher.dim != int(embed_dims):
            raise ValueError(
                f'{self.teacher_embeds} holds {teacher.dim}-d teacher '
                f'embeddings but the model embeds in {embed_dims} dimensions '
                '(bbox_head.embed_dims)')
        problems = []
        num = len(dataset)
        for i in range(num):
            info = dataset.get_data_info(i)
            boxes = np.asarray([inst['bbox'] for inst in info['instances']],
                               dtype=np.float32).reshape(-1, 4)
            problem = teacher.check_image(str(info['img_id']), boxes)
            if problem:
                problems.append(problem)
        if problems:
            shown = '\n  '.join(problems[:max_shown])
            more = f'\n  ... ({len(problems) - max_shown} more)' \
                if len(problems) > max_shown else ''
            raise ValueError(
                f'{self.teacher_embeds} does not fit the training set: '
                f'{len(problems)} of its {num} images have no or other '
                f'teacher embeddings than their boxes:\n  {shown}{more}\n'
                'Re-run tools/extract_teacher_embeddings.py on this split.')
        return num

    def _teacher_embeds(self, results: dict, num_gts: int) -> np.ndarray:
        img_id = results.get('img_id')
        if img_id is None:
            raise KeyError('DualNoiseGenerator needs results["img_id"] to '
                           'look up the teacher embeddings')
        instances = results.get('instances', [])
        orig_boxes = np.asarray([inst['bbox'] for inst in instances],
                                dtype=np.float32).reshape(-1, 4)
        # The file's rows follow the data info's instances; the check of
        # TeacherEmbeddings.get compares the boxes themselves.
        embeds = self.teacher.get(img_id, orig_boxes)
        if len(embeds) != num_gts:
            raise ValueError(
                f'DualNoiseGenerator: image {img_id!r} has {len(instances)} '
                f'annotated instances but {num_gts} gt_bboxes reach the '
                'transform; a transform before it dropped boxes, so the '
                'teacher embeddings cannot be matched to them. Put '
                'DualNoiseGenerator before any box-dropping transform.')
        embeds = _l2_normalize(np.asarray(embeds, dtype=np.float64))
        if self.center_teacher:
            embeds = _l2_normalize(embeds - self.teacher.mean)
        return embeds.astype(np.float32)

    def q_sample(self, x0: np.ndarray, t: int,
                 noise: np.ndarray) -> np.ndarray:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (eq. 7), in the
        dtype of ``x0`` and ``noise``: the coefficients are Python floats,
        which keep float32 arrays float32 (NumPy 2 would promote them to
        float64 with ``np.float64`` coefficients)."""
        abar = float(self.schedule.alpha_bar(t))
        return math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * noise

    @staticmethod
    def _randn(*shape: int) -> np.ndarray:
        """Standard normal float32 noise from NumPy's global generator (the
        one ``mmengine``'s seeding sets): the stream of ``np.random.randn``,
        rounded to float32."""
        return np.random.randn(*shape).astype(np.float32)

    def _random_boxes(self, num: int) -> np.ndarray:
        # DiffusionDet: cx cy w h ~ N(0.5, 1/6) (3 sigma = 1/2), w, h > 0.
        boxes = self._randn(num, 4) / np.float32(6.0) + np.float32(0.5)
        boxes[:, 2:] = np.clip(boxes[:, 2:], np.float32(1e-4), None)
        return boxes

    def _random_embeds(self, num: int, dim: int) -> np.ndarray:
        return _l2_normalize(self._randn(num, dim))

    def transform(self, results: dict) -> dict:
        if 'gt_bboxes' not in results:
            raise KeyError('DualNoiseGenerator needs gt_bboxes: put '
                           'LoadPersonSearchAnnotations before it')
        gt_bboxes = results['gt_bboxes']
        gt_bboxes = np.asarray(
            gt_bboxes.numpy() if hasattr(gt_bboxes, 'numpy') else gt_bboxes,
            dtype=np.float64).reshape(-1, 4)
        num_gts = len(gt_bboxes)
        teacher = self._teacher_embeds(results, num_gts)
        dim = self.teacher.dim
        ignore = np.asarray(
            results.get('gt_ignore_flags', np.zeros(num_gts, bool)),
            dtype=bool).reshape(-1)
        valid = ~ignore
        boxes = gt_bboxes[valid]
        embeds = teacher[valid]  # float32

        # x1y1x2y2 (resized pixels) -> cx cy w h in [0, 1].
        img_h, img_w = results['img_shape'][:2]
        scale = np.array([img_w, img_h, img_w, img_h], dtype=np.float64)
        cxcywh = np.concatenate(
            [(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]],
            axis=1) / scale
        cxcywh = np.clip(cxcywh, 0.0, 1.0)

        n, num = len(boxes), self.num_proposals
        if n >= num:
            inds = np.sort(np.random.permutation(n)[:num])
        elif n > 0 and self.pad_mode == 'repeat':
            inds = np.arange(num) % n
        else:
            inds = np.concatenate([np.arange(n), -np.ones(num - n, int)])
        inds = inds.astype(np.int64)
        pad = inds < 0
        # float32 from here on: the noise (num x D draws per image) and
        # eq. 10 as the model consumes them
        b0 = np.empty((num, 4), dtype=np.float32)
        e0 = np.empty((num, dim), dtype=np.float32)
        b0[~pad] = cxcywh[inds[~pad]]
        e0[~pad] = embeds[inds[~pad]]
        b0[pad] = self._random_boxes(int(pad.sum()))
        e0[pad] = self._random_embeds(int(pad.sum()), dim)

        t = int(np.random.randint(*self.timestep_range))
        b_start = (2.0 * b0 - 1.0) * float(self.box_snr_scale)
        e_start = _l2_normalize(e0) * float(self.embed_snr_scale)
        results['noisy_bboxes'] = self.q_sample(b_start, t,
                                                self._randn(num, 4))
        results['noisy_embeds'] = self.q_sample(e_start, t,
                                                self._randn(num, dim))
        results['noise_gt_inds'] = inds
        results['diffusion_t'] = t
        results['gt_teacher_embeds'] = teacher
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'teacher_embeds={self.teacher_embeds!r}, '
                f'num_proposals={self.num_proposals}, '
                f'box_snr_scale={self.box_snr_scale}, '
                f'embed_snr_scale={self.embed_snr_scale}, '
                f'schedule={self.schedule!r}, pad_mode={self.pad_mode!r}, '
                f'center_teacher={self.center_teacher})')
