# Copyright (c) mmpsearch contributors. All rights reserved.
"""Reverse-process samplers for PSDiff inference (Alg. 2, Table V).

Each sampler wraps a diffusers scheduler configured for a model that
predicts x_0 (``prediction_type='sample'``): the CDL outputs the clean boxes
and embeddings (b_0, e_0), never the noise. Boxes and embeddings are stepped
together as one tensor (the update is element-wise and both share abar_t).
"""
import warnings
from abc import ABCMeta, abstractmethod
from typing import List, Optional

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from mmpsearch.registry import TASK_UTILS
from .noise_schedule import NoiseSchedule


class _DDIMScheduler(DDIMScheduler):
    """diffusers' DDIM with its variance kept a hair below ``1 - abar_prev``.

    DDIM takes ``sqrt(1 - abar_prev - sigma_t**2)``. With the cosine
    schedule ``abar_{T-1}`` is ~2e-9, so for eta = 1 that difference is
    zero up to float32 rounding and can come out slightly negative (NaN
    after the square root) for step counts like 5; the clamp changes
    sigma_t by at most 1e-5 relative.
    """

    def _get_variance(self, timestep, prev_timestep):
        variance = super()._get_variance(timestep, prev_timestep)
        abar_prev = self.alphas_cumprod[prev_timestep] \
            if prev_timestep >= 0 else self.final_alpha_cumprod
        return torch.minimum(variance, (1 - abar_prev) * (1 - 1e-5))


class SamplingRun:
    """One pass of a sampler over ``num_steps`` timesteps.

    diffusers schedulers keep state (multistep solvers store earlier model
    outputs), so every image batch gets a fresh run from
    :meth:`DiffusionSampler.start`.
    """

    def __init__(self, scheduler: SchedulerMixin, stochastic: bool,
                 step_kwargs: dict) -> None:
        self.scheduler = scheduler
        self.stochastic = stochastic
        self.step_kwargs = step_kwargs

    @property
    def timesteps(self) -> List[int]:
        """The 0-based timesteps to visit, from noisiest to cleanest."""
        return [int(t) for t in self.scheduler.timesteps]

    def step(self,
             x0_pred: torch.Tensor,
             timestep: int,
             sample: torch.Tensor,
             noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t -> x_{t_prev} given the model's x_0 prediction.

        Args:
            x0_pred (Tensor): Predicted clean sample, same shape as
                ``sample``.
            timestep (int): The current timestep (one of :attr:`timesteps`).
            sample (Tensor): x_t.
            noise (Tensor, optional): Standard normal noise of ``sample``'s
                shape; required by stochastic samplers (DDIM with eta > 0),
                so that the caller controls the random stream and a run is
                repeatable.
        """
        kwargs = dict(self.step_kwargs)
        if self.stochastic:
            if noise is None:
                raise ValueError(
                    'this sampler is stochastic (DDIM with eta > 0): pass '
                    'the step noise explicitly so the run is seeded')
            kwargs['variance_noise'] = noise
        out = self.scheduler.step(
            x0_pred, timestep, sample, return_dict=False, **kwargs)
        return out[0]


class DiffusionSampler(metaclass=ABCMeta):
    """Base class: a diffusers scheduler over a :class:`NoiseSchedule`.

    Args:
        num_timesteps (int): T of the training schedule. Defaults to 1000.
        beta_schedule (str): See :class:`NoiseSchedule`. Defaults to
            ``'cosine'``.
        timestep_spacing (str): How the k sampling timesteps are spread;
            ``'trailing'`` starts every run at t = T-1, also for k = 1
            (diffusers' ``'leading'`` would start a 1-step run at t = 0).
    """
    #: Whether :meth:`SamplingRun.step` consumes noise.
    stochastic = False
    #: Whether proposals may be replaced between steps (box renewal):
    #: only samplers without a history of earlier model outputs.
    supports_renewal = False

    def __init__(self,
                 num_timesteps: int = 1000,
                 beta_schedule: str = 'cosine',
                 timestep_spacing: str = 'trailing') -> None:
        self.schedule = NoiseSchedule(num_timesteps, beta_schedule)
        self.timestep_spacing = timestep_spacing

    @abstractmethod
    def build_scheduler(self) -> SchedulerMixin:
        """A fresh diffusers scheduler."""

    def step_kwargs(self) -> dict:
        return {}

    def start(self, num_steps: int, device=None) -> SamplingRun:
        """A fresh run of ``num_steps`` steps."""
        if int(num_steps) < 1 or num_steps > self.schedule.num_timesteps:
            raise ValueError(
                f'sampling_steps must be in [1, '
                f'{self.schedule.num_timesteps}], got {num_steps}')
        scheduler = self.build_scheduler()
        scheduler.set_timesteps(int(num_steps), device=device)
        return SamplingRun(scheduler, self.stochastic, self.step_kwargs())

    def _common_kwargs(self) -> dict:
        return dict(
            num_train_timesteps=self.schedule.num_timesteps,
            trained_betas=self.schedule.betas.astype('float32').tolist(),
            prediction_type='sample',
            timestep_spacing=self.timestep_spacing)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.schedule!r})'


@TASK_UTILS.register_module(name=['DDIMSampler', 'ddim'])
class DDIMSampler(DiffusionSampler):
    """DDIM (Song et al.), the default sampler of PSDiff and DiffusionDet.

    Args:
        eta (float): 0 gives the deterministic DDIM, 1 (DiffusionDet's and
            PSDiff's choice) the DDPM-like stochastic one. Defaults to 1.
        **kwargs: See :class:`DiffusionSampler`.
    """

    supports_renewal = True

    def __init__(self, eta: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if eta < 0:
            raise ValueError(f'DDIMSampler: eta must be >= 0, got {eta}')
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def build_scheduler(self) -> SchedulerMixin:
        # No clipping of x_0: boxes are clamped to [-s1, s1] by the
        # detector and embeddings live in [-s2, s2], not in diffusers' [-1, 1].
        return _DDIMScheduler(
            clip_sample=False, set_alpha_to_one=True, **self._common_kwargs())

    def step_kwargs(self) -> dict:
        return dict(eta=self.eta)


@TASK_UTILS.register_module(name=['DPMSolverSampler', 'dpm-solver'])
class DPMSolverSampler(DiffusionSampler):
    """DPM-Solver (Lu et al., 2022), multistep, as in PSDiff Table V.

    Args:
        solver_order (int): 1, 2 or 3. Defaults to 2.
        algorithm_type (str): ``'dpmsolver'`` (noise-prediction form) or
            ``'dpmsolver++'`` (data-prediction form).
        eta: Not a DPM-Solver setting; refused with an explanation.
        **kwargs: See :class:`DiffusionSampler`.
    """

    algorithm_type = 'dpmsolver'

    def __init__(self,
                 solver_order: int = 2,
                 algorithm_type: Optional[str] = None,
                 eta: Optional[float] = None,
                 **kwargs) -> None:
        if eta is not None:
            # Typically left over from merging a DDIM entry of a config.
            raise ValueError(
                f'{type(self).__name__} got eta={eta}, a DDIM setting. To '
                'switch samplers replace the whole entry, e.g. '
                '--cfg-options model.test_cfg.sampler=dpm-solver++')
        super().__init__(**kwargs)
        if algorithm_type is not None:
            self.algorithm_type = algorithm_type
        if self.algorithm_type not in ('dpmsolver', 'dpmsolver++'):
            raise ValueError(
                f'{self.__class__.__name__}: algorithm_type must be '
                f"'dpmsolver' or 'dpmsolver++', got {self.algorithm_type!r}")
        if solver_order not in (1, 2, 3):
            raise ValueError(f'solver_order must be 1, 2 or 3, got '
                             f'{solver_order}')
        self.solver_order = solver_order

    def build_scheduler(self) -> SchedulerMixin:
        # diffusers allows a zero final sigma only for the data-prediction
        # form; the noise-prediction form stops at the schedule's sigma_min.
        final = 'zero' if self.algorithm_type == 'dpmsolver++' \
            else 'sigma_min'
        kwargs = self._common_kwargs()
        if self.schedule.beta_schedule == 'cosine':
            # diffusers' advice for the cosine schedule: clip lambda(t).
            kwargs['lambda_min_clipped'] = -5.1
        with warnings.catch_warnings():
            # 'dpmsolver' is marked deprecated in diffusers but is the
            # paper's DPM-Solver; keep the log clean.
            warnings.simplefilter('ignore', FutureWarning)
            return DPMSolverMultistepScheduler(
                solver_order=self.solver_order,
                algorithm_type=self.algorithm_type,
                lower_order_final=True,
                final_sigmas_type=final,
                **kwargs)


@TASK_UTILS.register_module(name=['DPMSolverPPSampler', 'dpm-solver++'])
class DPMSolverPPSampler(DPMSolverSampler):
    """DPM-Solver++ (Lu et al., 2022), multistep; see
    :class:`DPMSolverSampler`."""

    algorithm_type = 'dpmsolver++'
