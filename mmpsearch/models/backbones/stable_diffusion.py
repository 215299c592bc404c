# Copyright (c) mmpsearch contributors. All rights reserved.
"""The frozen Stable Diffusion feature extractor of DiffPS.

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.2-3.3: an image is encoded by the VAE, passed once
through the frozen UNet at a small timestep, conditioned on the prompt
"person", and the outputs of chosen self-attention projections of the
up-stage transformer blocks are the detection and ReID features; the
cross-attention probability of the word "person" guides the detector (DGRPN).

The loading of the frozen parts from a local folder is in ``sd_loader.py``;
the hooks and the attention processor that take the features out of the
UNet are in ``models/layers/unet_feature_tap.py``.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmpsearch.registry import MODELS
from ..layers.unet_feature_tap import UNetFeatureTap, expand_layer_name
from .sd_loader import encode_text, load_frozen_sd, load_noise_scheduler


@MODELS.register_module()
class StableDiffusionBackbone(BaseModule):
    """Frozen Stable Diffusion UNet features for DiffPS (Kim et al., ICCV
    2025, Sec. 3.2, Fig. 2).

    image in [-1, 1] -> VAE encoder (a posterior sample, or its mean, x
    ``scaling_factor``) -> (optionally forward noise at ``timestep``, by the
    Euler or DDPM scheduler of ``scheduler/``) -> one UNet pass at
    ``timestep`` conditioned on ``prompt`` -> forward hooks on the chosen
    attention projections (``to_q`` / ``to_k`` / ``to_v``) give feature maps
    at the spatial size of their level, and the cross-attention
    ``attn_map_layer`` gives the probability map of text token
    ``attn_map_token`` in head ``attn_map_head``, min-max normalised per
    image.

    Only that cross-attention computes explicit probabilities (a custom
    processor on that module); every other attention stays fused
    (``AttnProcessor2_0``, SDPA), and the UNet pass stops right after the last
    hooked layer (a private exception raised from a hook), so nothing of the
    UNet after ``T[3][1]`` runs.

    Frozen means: the VAE, UNet and text encoder are loaded from a local
    folder with ``local_files_only=True``, get ``requires_grad=False``, stay
    in ``eval()`` mode through ``train()``, run under ``torch.no_grad()``, and
    are held outside the module tree, so they appear neither in
    ``parameters()`` (hence never in the optimizer) nor in ``state_dict()``
    (checkpoints stay small). ``.to()`` / ``.cuda()`` still move them; they
    run in fp16 on a GPU and fp32 on the CPU. The prompt and the body-part
    words (for SFAN) are encoded once at construction into buffers, after
    which the text encoder is dropped.

    Args:
        sd_path (str): Local folder in the diffusers layout (``unet/``,
            ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
        prompt (str): The conditioning prompt. Defaults to 'person'.
        timestep (int): The timestep the UNet actually receives (0-based,
            of the 1000 training steps). Defaults to 0, the public code's
            input: its ``DECOUPLED_TIMESTEP = 1`` is an img2img strength of
            1/1000 on ``set_timesteps(1000)`` of an Euler scheduler, which
            leaves the schedule's last timestep: 0 for SD 2.1-base's
            scheduler config (no ``timestep_spacing``, so "linspace"; a
            "leading" config would give 1, as the pipeline forces
            ``steps_offset=1``). At timestep 0 the UNet input's noise std is
            sqrt(1 - alpha_bar_0) = 0.029 (Euler sigma_0 = 0.029 before
            ``scale_model_input``); at timestep 1 it is 0.041.
        add_noise (bool): Add forward noise at ``timestep`` to the latent
            with ``noise_scheduler`` (loaded from ``scheduler/``). Defaults to
            True, as the public code at train and test time. When off, the
            latent goes to the UNet unchanged (no scheduler is loaded).
        latent (str): ``'sample'`` (default, as the public code: diffusers'
            img2img ``prepare_latents`` draws from the VAE posterior) or
            ``'mean'`` (the posterior mean).
        noise_scheduler (str): ``'euler'`` (default, the public code's
            ``EulerDiscreteScheduler`` set to the single step ``timestep``:
            ``add_noise`` gives z + sigma_t eps and ``scale_model_input``
            divides by sqrt(sigma_t^2 + 1); the UNet gets the float
            timestep) or ``'ddpm'`` (``DDPMScheduler.add_noise``:
            sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) eps, the same input
            up to rounding; the UNet gets the integer timestep).
        det_layer (str): Hooked projection giving the detection feature.
        attn_map_layer (str): Cross-attention whose probabilities give the
            detection guidance map.
        attn_map_head (int): Head of that map. Defaults to 1: the public
            DiffPS code takes index 1 of the heads axis of the stored
            (B, heads, HW, tokens) probabilities (its comment calls it the
            first head); the paper only says "one head".
        attn_map_token (int): Text token of that map (1 = first word after
            the start token, i.e. "person").
        reid_layers (Sequence[Sequence[str]]): Hooked projections for ReID,
            grouped by level from coarse to fine.
        part_prompts (Sequence[str]): Body-part words whose token-1 text
            embeddings SFAN uses.
        part_token (int): Token index of a part word. Defaults to 1.
        frozen_dtype (str): Precision of the frozen modules: ``'auto'``
            (fp16 on CUDA, fp32 on the CPU, as DiffPS), ``'float16'`` or
            ``'float32'`` wherever they are. The outputs are always fp32.
        noise_seed (int): Seed of the eval-time randomness (the posterior
            sample and the noise). In training both are drawn fresh from
            torch's global generator; in eval mode every image gets its own
            CPU generator seeded with ``noise_seed`` (first the posterior
            draw, then the noise, as diffusers' ``prepare_latents``; drawn on
            the CPU and moved, as diffusers' ``randn_tensor`` does for a CPU
            generator), so eval features are repeatable and depend neither
            on the batch nor on the device.

    Layer names are diffusers module names relative to the UNet or the
    paper's shorthand ``T[i][j].attn1.to_k`` for
    ``up_blocks.i.attentions.j.transformer_blocks.0.attn1.to_k``.

    ``forward`` expects images normalised to [-1, 1] (data preprocessor mean
    = std = 127.5) and padded to a multiple of 64, and returns a dict with
    ``det_feat`` (B, C, H/8, W/8), ``attn_map`` (B, 1, H/8, W/8) in [0, 1],
    ``reid_feats`` (a list per level of lists of (B, C_l, H_l, W_l)) and
    ``part_embeds`` (P, D_text), all fp32.
    """

    FROZEN_DTYPES = {
        'auto': None,
        'float16': torch.float16,
        'float32': torch.float32
    }
    LATENTS = ('sample', 'mean')
    NOISE_SCHEDULERS = ('euler', 'ddpm')

    def __init__(self,
                 sd_path: str,
                 prompt: str = 'person',
                 timestep: int = 0,
                 add_noise: bool = True,
                 latent: str = 'sample',
                 noise_scheduler: str = 'euler',
                 det_layer: str = 'T[3][0].attn1.to_k',
                 attn_map_layer: str = 'T[3][0].attn2',
                 attn_map_head: int = 1,
                 attn_map_token: int = 1,
                 reid_layers: Sequence[Sequence[str]] = (
                     ('T[1][2].attn1.to_q', ),
                     ('T[2][1].attn1.to_v', 'T[2][2].attn1.to_q'),
                     ('T[3][0].attn1.to_q', 'T[3][0].attn1.to_k',
                      'T[3][0].attn1.to_v', 'T[3][1].attn1.to_k'),
                 ),
                 part_prompts: Sequence[str] = ('head', 'shirts', 'pants',
                                                'shoes'),
                 part_token: int = 1,
                 frozen_dtype: str = 'auto',
                 noise_seed: int = 0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.sd_path = sd_path
        self.prompt = prompt
        self.timestep = int(timestep)
        self.add_noise = bool(add_noise)
        if latent not in self.LATENTS:
            raise ValueError(f'StableDiffusionBackbone: latent must be one of '
                             f'{list(self.LATENTS)}, got {latent!r}')
        self.latent = latent
        if noise_scheduler not in self.NOISE_SCHEDULERS:
            raise ValueError(f'StableDiffusionBackbone: noise_scheduler must '
                             f'be one of {list(self.NOISE_SCHEDULERS)}, got '
                             f'{noise_scheduler!r}')
        self.noise_scheduler = noise_scheduler
        self.det_layer = expand_layer_name(det_layer)
        self.attn_map_layer = expand_layer_name(attn_map_layer)
        self.attn_map_head = int(attn_map_head)
        self.attn_map_token = int(attn_map_token)
        self.reid_layers = [[expand_layer_name(n) for n in level]
                            for level in reid_layers]
        self.part_prompts = list(part_prompts)
        self.part_token = int(part_token)
        if frozen_dtype not in self.FROZEN_DTYPES:
            raise ValueError(f'StableDiffusionBackbone: frozen_dtype must be '
                             f'one of {sorted(self.FROZEN_DTYPES)}, got '
                             f'{frozen_dtype!r}')
        self.frozen_dtype_cfg = frozen_dtype
        self.noise_seed = noise_seed

        # Plain dicts are not registered by nn.Module: the frozen models stay
        # out of parameters() / state_dict() / train() on purpose.
        self._frozen: Dict[str, nn.Module] = {}

        unet, vae, prompt_embeds, part_embeds, scheduler = self._load()
        self._frozen['unet'] = unet
        self._frozen['vae'] = vae
        self.scheduler = scheduler
        self.register_buffer('prompt_embeds', prompt_embeds, persistent=False)
        self.register_buffer('part_embeds', part_embeds, persistent=False)
        self._set_frozen_dtype()  # again on every .to() / .cuda()
        feat_layers = [self.det_layer]
        feat_layers += [n for level in self.reid_layers for n in level]
        # a plain attribute (not a Module): no registration, no state
        self.tap = UNetFeatureTap(unet, feat_layers, self.attn_map_layer,
                                  self.attn_map_head, self.attn_map_token)

    # ------------------------------------------------------------ loading
    def _load(self):
        """The frozen parts (``sd_loader.py``), the noise scheduler and the
        text embeddings; also sets ``_unet_timestep``, the value the UNet
        receives."""
        from diffusers.models.attention_processor import AttnProcessor2_0
        unet, vae, tokenizer, text_encoder = load_frozen_sd(
            self.sd_path, need_scheduler=self.add_noise)
        if self.add_noise:
            scheduler, self._unet_timestep = load_noise_scheduler(
                self.sd_path, self.noise_scheduler, self.timestep)
        else:
            scheduler = None
            if self.timestep < 0:
                raise ValueError(f'timestep={self.timestep}: expected a '
                                 'timestep >= 0')
            self._unet_timestep = torch.tensor(self.timestep)

        # every attention fused (SDPA); the one map gets its own below
        unet.set_attn_processor(AttnProcessor2_0())

        with torch.no_grad():
            prompt_embeds = encode_text(tokenizer, text_encoder, self.prompt,
                                        self.attn_map_token)
            parts = [
                encode_text(tokenizer, text_encoder, p,
                            self.part_token)[0, self.part_token]
                for p in self.part_prompts
            ]
        part_embeds = torch.stack(parts) if parts else prompt_embeds.new_zeros(
            0, prompt_embeds.shape[-1])
        # the text encoder is not needed after this
        del text_encoder
        return unet, vae, prompt_embeds, part_embeds, scheduler

    # ---------------------------------------------------- frozen modules
    @property
    def unet(self) -> nn.Module:
        return self._frozen['unet']

    @property
    def vae(self) -> nn.Module:
        return self._frozen['vae']

    # ---------------------------------------------------- device / modes
    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in self._frozen.values():
            module._apply(fn)
        self._set_frozen_dtype()
        return self

    def _set_frozen_dtype(self) -> None:
        dtype = self.FROZEN_DTYPES[self.frozen_dtype_cfg]
        if dtype is None:  # auto
            on_gpu = self.prompt_embeds.device.type == 'cuda'
            dtype = torch.float16 if on_gpu else torch.float32
        for module in self._frozen.values():
            module.to(dtype=dtype)

    @property
    def frozen_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen.values():
            module.eval()
        return self

    def frozen_parameters(self) -> List[nn.Parameter]:
        """The Stable Diffusion parameters (all frozen)."""
        return [p for m in self._frozen.values() for p in m.parameters()]

    # ------------------------------------------------------------ forward
    def _generators(self, batch: int) -> Optional[List[torch.Generator]]:
        """None in training (fresh draws from torch's global generator); in
        eval one CPU generator per image seeded with ``noise_seed``.

        The generators live on the CPU whatever the image's device: diffusers'
        ``randn_tensor`` (used for the posterior sample and the noise) then
        draws on the CPU and moves the draw to the image's device, so the
        eval features, hence a checkpoint's numbers, do not depend on the
        device (a CUDA generator gives other numbers for the same seed).
        """
        if self.training:
            return None
        return [
            torch.Generator(device='cpu').manual_seed(self.noise_seed)
            for _ in range(batch)
        ]

    @torch.no_grad()
    def encode_latent(
            self,
            img: Tensor,
            generator: Optional[List[torch.Generator]] = None) -> Tensor:
        """VAE latent (a posterior sample or its mean, see ``latent``) times
        the scaling factor, in fp32."""
        from diffusers.models.autoencoders.vae import \
            DiagonalGaussianDistribution
        dist = self.vae.encode(img.to(self.frozen_dtype)).latent_dist
        # diffusers' posterior again, in fp32: the draw (and so the eval
        # features) does not depend on frozen_dtype
        dist = DiagonalGaussianDistribution(dist.parameters.float())
        z = dist.sample(generator) if self.latent == 'sample' else dist.mean
        return z * self.vae.config.scaling_factor

    @torch.no_grad()
    def unet_input(
        self,
        latent: Tensor,
        generator: Optional[List[torch.Generator]] = None
    ) -> Tuple[Tensor, Tensor]:
        """The UNet input (the latent with forward noise when ``add_noise``,
        scaled by the scheduler) and the (B, ) timesteps it is run at."""
        b = latent.shape[0]
        t = self._unet_timestep.to(latent.device).expand(b)
        if self.add_noise:
            from diffusers.utils.torch_utils import randn_tensor
            noise = randn_tensor(
                latent.shape,
                generator=generator,
                device=latent.device,
                dtype=latent.dtype)
            latent = self.scheduler.add_noise(latent, noise, t)
            # Euler: / sqrt(sigma^2 + 1); DDPM: unchanged
            latent = self.scheduler.scale_model_input(latent, t[:1])
        return latent, t

    @torch.no_grad()
    def run_unet(
        self,
        latent: Tensor,
        generator: Optional[List[torch.Generator]] = None
    ) -> Dict[str, Tensor]:
        """One (truncated) UNet pass on a clean latent; returns the captured
        tensors."""
        x, t = self.unet_input(latent, generator)
        x = x.to(self.frozen_dtype)
        cond = self.prompt_embeds.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.tap(x, t, cond)

    def forward(self, img: Tensor) -> Dict[str, Union[Tensor, list]]:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError('StableDiffusionBackbone expects images of '
                             f'shape (B, 3, H, W), got {tuple(img.shape)}')
        h, w = img.shape[-2:]
        if h % 64 or w % 64:
            raise ValueError(
                f'StableDiffusionBackbone needs H and W divisible by 64 (VAE '
                f'/8 and three UNet downsamplings), got {h}x{w}; set '
                'pad_size_divisor=64 in the data preprocessor.')
        lo, hi = float(img.min()), float(img.max())
        if lo < -1.01 or hi > 1.01:
            raise ValueError(
                f'StableDiffusionBackbone expects images in [-1, 1], got '
                f'values in [{lo:.2f}, {hi:.2f}]; set mean=[127.5]*3 and '
                'std=[127.5]*3 in the data preprocessor.')
        generator = self._generators(img.shape[0])
        latent = self.encode_latent(img, generator)
        cap = self.run_unet(latent, generator)
        attn = cap['attn_map'].float()
        lo_ = attn.amin(dim=(2, 3), keepdim=True)
        hi_ = attn.amax(dim=(2, 3), keepdim=True)
        attn = (attn - lo_) / (hi_ - lo_).clamp_min(1e-12)
        return dict(
            det_feat=cap[self.det_layer].float(),
            attn_map=attn,
            reid_feats=[[cap[n].float() for n in level]
                        for level in self.reid_layers],
            part_embeds=self.part_embeds.float())
