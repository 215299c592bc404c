# Copyright (c) mmpsearch contributors. All rights reserved.
"""Loading the frozen Stable Diffusion of DiffPS from a local folder.

Kim et al., ICCV 2025, Sec. 3.2: the VAE, UNet and text encoder of Stable
Diffusion 2.1-base, frozen. They are read from a local folder in the
diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``) with ``local_files_only=True``, after a check that names
every missing part; weights are never downloaded at run time.
"""
import os
import os.path as osp
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# Files that a component of the diffusers layout must hold; each inner tuple
# lists alternatives (one of them is enough).
_DIFFUSERS_WEIGHTS = ('diffusion_pytorch_model.safetensors',
                      'diffusion_pytorch_model.bin',
                      'diffusion_pytorch_model.safetensors.index.json',
                      'diffusion_pytorch_model.fp16.safetensors',
                      'diffusion_pytorch_model.fp16.bin')
_TRANSFORMERS_WEIGHTS = ('model.safetensors', 'pytorch_model.bin',
                         'model.safetensors.index.json',
                         'pytorch_model.bin.index.json',
                         'model.fp16.safetensors', 'pytorch_model.fp16.bin')


def check_sd_folder(sd_path: str, need_scheduler: bool = False) -> None:
    """Raise ``FileNotFoundError`` naming every missing part of a local
    Stable Diffusion folder in the diffusers layout."""
    if not osp.isdir(sd_path):
        raise FileNotFoundError(
            f'Stable Diffusion weights folder "{sd_path}" does not exist. '
            'Expected a local copy in the diffusers layout (unet/, vae/, '
            'text_encoder/, tokenizer/, scheduler/), e.g. of '
            'stabilityai/stable-diffusion-2-1-base; weights are never '
            'downloaded at run time.')
    required = {
        'unet': (('config.json', ), _DIFFUSERS_WEIGHTS),
        'vae': (('config.json', ), _DIFFUSERS_WEIGHTS),
        'text_encoder': (('config.json', ), _TRANSFORMERS_WEIGHTS),
        'tokenizer': (('vocab.json', ), ('merges.txt', )),
    }
    if need_scheduler:
        required['scheduler'] = (('scheduler_config.json', ), )
    missing = []
    for sub, groups in required.items():
        folder = osp.join(sd_path, sub)
        if not osp.isdir(folder):
            missing.append(f'{sub}/ (the whole subfolder)')
            continue
        for alternatives in groups:
            if not any(osp.isfile(osp.join(folder, f)) for f in alternatives):
                missing.append(f'{sub}/' + ' or '.join(alternatives))
    if missing:
        raise FileNotFoundError(
            f'Stable Diffusion weights folder "{sd_path}" is incomplete; '
            'missing: ' + '; '.join(missing) + '. Expected the diffusers '
            'layout written by `DiffusionPipeline.save_pretrained` (or '
            '`tools/misc/make_tiny_sd.py` for a tiny test folder).')


def _low_cpu_mem_usage() -> bool:
    """diffusers' fast loading path needs ``accelerate``; ask for it only
    where it is installed (otherwise diffusers warns on every load)."""
    import importlib.util
    return importlib.util.find_spec('accelerate') is not None


def _weights_variant(folder: str, candidates: Sequence[str]) -> Optional[str]:
    """'fp16' when a component holds only the fp16 variant of its weights."""
    plain = [c for c in candidates if '.fp16.' not in c]
    if any(osp.isfile(osp.join(folder, c)) for c in plain):
        return None
    return 'fp16'


def _load_diffusers(cls, sd_path: str, subfolder: str) -> nn.Module:
    """A diffusers model (``cls``: the UNet or the VAE) of ``subfolder``, in
    fp32, from local files only (its fp16 variant when that is all there
    is)."""
    return cls.from_pretrained(
        sd_path,
        subfolder=subfolder,
        local_files_only=True,
        torch_dtype=torch.float32,
        low_cpu_mem_usage=_low_cpu_mem_usage(),
        variant=_weights_variant(
            osp.join(sd_path, subfolder), _DIFFUSERS_WEIGHTS))


def load_vae(sd_path: str) -> nn.Module:
    """The whole VAE (encoder and decoder) of the local folder ``sd_path``,
    in fp32, frozen and in eval mode; the folder is not checked here (see
    :func:`check_sd_folder`)."""
    from diffusers import AutoencoderKL
    vae = _load_diffusers(AutoencoderKL, sd_path, 'vae')
    vae.requires_grad_(False)
    return vae.eval()


def load_frozen_sd(sd_path: str, need_scheduler: bool = False) -> tuple:
    """The UNet, VAE (encoder only), tokenizer and text encoder of the local
    folder ``sd_path``, in fp32, frozen (``requires_grad=False``) and in
    eval mode.

    The folder is checked first (:func:`check_sd_folder`, with
    ``scheduler/`` when ``need_scheduler``); nothing reaches a hub, also for
    libraries that read the offline switches from the environment lazily.

    Returns:
        tuple: ``(unet, vae, tokenizer, text_encoder)``.
    """
    # never reach a hub, also for libraries that read the env lazily
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    check_sd_folder(sd_path, need_scheduler=need_scheduler)
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = _load_diffusers(UNet2DConditionModel, sd_path, 'unet')
    vae = load_vae(sd_path)
    # only the encoder is ever used: free the decoder
    vae.decoder = nn.Identity()
    tokenizer = CLIPTokenizer.from_pretrained(
        sd_path, subfolder='tokenizer', local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(
        sd_path,
        subfolder='text_encoder',
        local_files_only=True,
        torch_dtype=torch.float32,
        variant=_weights_variant(
            osp.join(sd_path, 'text_encoder'), _TRANSFORMERS_WEIGHTS))
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    return unet, vae, tokenizer, text_encoder


def load_noise_scheduler(sd_path: str, kind: str,
                         timestep: int) -> Tuple[object, Tensor]:
    """The noise scheduler of ``scheduler/`` (``kind`` ``'euler'`` or
    ``'ddpm'``), set to ``timestep``, and the timestep the UNet receives.

    Returns:
        tuple: ``(scheduler, unet_timestep)``; the UNet gets Euler's float
        timestep or DDPM's integer one.
    """
    from diffusers import DDPMScheduler, EulerDiscreteScheduler
    cls = dict(euler=EulerDiscreteScheduler, ddpm=DDPMScheduler)[kind]
    scheduler = cls.from_pretrained(
        sd_path, subfolder='scheduler', local_files_only=True)
    n = scheduler.config.num_train_timesteps
    if not 0 <= timestep < n:
        raise ValueError(
            f'timestep={timestep} is outside the scheduler\'s 0..{n - 1}')
    if kind == 'euler':
        # This one timestep, so sigma is sigma_t of the training schedule
        # whatever the config's timestep_spacing / steps_offset; the
        # public code instead takes the last of set_timesteps(1000) (0
        # for SD 2.1-base's config).
        scheduler.set_timesteps(timesteps=[timestep])
        scheduler.set_begin_index(0)  # as img2img: noise at this step
        unet_timestep = scheduler.timesteps[0].clone()
    else:
        unet_timestep = torch.tensor(timestep)
    return scheduler, unet_timestep


def encode_text(tokenizer, text_encoder, text: str, token: int) -> Tensor:
    """The text encoder's output (1, L, D), in fp32, for ``text`` padded to
    the tokenizer's length, after checking that token index ``token`` is a
    word of ``text``."""
    enc = tokenizer(
        text,
        padding='max_length',
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors='pt')
    ids = enc.input_ids
    # real tokens = start + words + end (SD 2's pad token is not the end)
    n_words = int(enc.attention_mask[0].sum()) - 2
    if n_words < token:
        raise ValueError(
            f'Prompt "{text}" has {n_words} word token(s), so token index '
            f'{token} is not a word; use a longer prompt or a smaller '
            'token index.')
    return text_encoder(ids)[0].float()
