# Copyright (c) mmpsearch contributors. All rights reserved.
"""The forward (noising) process shared by PSDiff's boxes and embeddings."""
from typing import Optional, Union

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import betas_for_alpha_bar

from mmpsearch.registry import TASK_UTILS


@TASK_UTILS.register_module()
class NoiseSchedule:
    """The variance schedule of the dual diffusion (PSDiff eq. 7 and 10).

    PSDiff diffuses boxes and ReID embeddings with one schedule:
    ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``. The paper uses the
    cosine schedule of Nichol & Dhariwal with T = 1000; the betas come from
    diffusers' ``betas_for_alpha_bar`` (the same function its
    ``squaredcos_cap_v2`` schedule uses), so training (the
    ``DualNoiseGenerator``) and sampling (the diffusers schedulers, which get
    these betas as ``trained_betas``) see identical ``abar_t``.

    Timesteps are 0-based indices ``0 .. T-1`` (diffusers' convention); the
    paper's ``t ~ U{1..T}`` is index ``t - 1``.

    Args:
        num_timesteps (int): T. Defaults to 1000.
        beta_schedule (str): ``'cosine'`` (PSDiff, DiffusionDet) or
            ``'linear'`` (DDPM, beta 1e-4 .. 0.02). Defaults to ``'cosine'``.
    """

    def __init__(self,
                 num_timesteps: int = 1000,
                 beta_schedule: str = 'cosine') -> None:
        if int(num_timesteps) < 1:
            raise ValueError(f'NoiseSchedule: num_timesteps must be >= 1, '
                             f'got {num_timesteps}')
        self.num_timesteps = int(num_timesteps)
        self.beta_schedule = beta_schedule
        if beta_schedule == 'cosine':
            betas = betas_for_alpha_bar(
                self.num_timesteps, alpha_transform_type='cosine')
            betas = np.asarray(betas, dtype=np.float64)
        elif beta_schedule == 'linear':
            betas = np.linspace(
                1e-4, 0.02, self.num_timesteps, dtype=np.float64)
        else:
            raise ValueError(
                f'NoiseSchedule: beta_schedule {beta_schedule!r} is not '
                "supported; expected 'cosine' or 'linear'")
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_timesteps='
                f'{self.num_timesteps}, beta_schedule={self.beta_schedule!r})')

    def alpha_bar(self, t: Union[int, np.ndarray, torch.Tensor]):
        """``abar_t`` at the 0-based timestep(s) ``t``."""
        if isinstance(t, torch.Tensor):
            table = torch.as_tensor(self.alphas_cumprod, device=t.device)
            return table[t.long()]
        t_arr = np.asarray(t)
        if np.any(t_arr < 0) or np.any(t_arr >= self.num_timesteps):
            raise ValueError(f'timestep {t} is outside [0, '
                             f'{self.num_timesteps - 1}]')
        return self.alphas_cumprod[t_arr]

    def q_sample(self,
                 x0: torch.Tensor,
                 t: Union[int, torch.Tensor],
                 noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (eq. 7).

        ``t`` is an int or a tensor broadcastable to ``x0``'s leading dims.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, device=x0.device)
        abar = self.alpha_bar(t).to(x0.dtype)
        while abar.dim() < x0.dim():
            abar = abar.unsqueeze(-1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
