# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the UNet of :class:`StableDiffusionBackbone` receives: the timestep,
the noise level (against diffusers' schedulers), the posterior sample or
mean, and the seeding in eval / training."""
import json
import os.path as osp
import shutil

import pytest
import torch
from diffusers import (DDPMScheduler, EulerDiscreteScheduler,
                       StableDiffusionImg2ImgPipeline)

from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone

H, W = 128, 192

# scheduler/scheduler_config.json of stabilityai/stable-diffusion-2-1-base
# (the public code loads it into an EulerDiscreteScheduler)
SD21_BASE_SCHEDULER = {
    '_class_name': 'PNDMScheduler',
    'beta_end': 0.012,
    'beta_schedule': 'scaled_linear',
    'beta_start': 0.00085,
    'clip_sample': False,
    'num_train_timesteps': 1000,
    'prediction_type': 'epsilon',
    'set_alpha_to_one': False,
    'skip_prk_steps': True,
    'steps_offset': 1,
    'trained_betas': None,
}


def _images(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, H, W, generator=g) * 2 - 1


def _unet_call(backbone, img):
    """Run the backbone once; return (sample, timestep) the UNet got."""
    got = {}

    def hook(module, args):
        got['x'], got['t'] = args[0].detach().clone(), args[1].clone()

    handle = backbone.unet.register_forward_pre_hook(hook)
    try:
        out = backbone(img)
    finally:
        handle.remove()
    return got['x'], got['t'], out


def _posterior(backbone, img):
    with torch.no_grad():
        dist = backbone.vae.encode(img).latent_dist
    return dist.mean, dist.std, backbone.vae.config.scaling_factor


@pytest.fixture(scope='module')
def variants(tiny_sd_dir):

    def make(**kw):
        return StableDiffusionBackbone(tiny_sd_dir, **kw).eval()

    return dict(
        ddpm0=make(noise_scheduler='ddpm'),
        old=make(timestep=1, latent='mean', add_noise=False),
        sample=make(add_noise=False),
        mean=make(add_noise=False, latent='mean'),
    )


def _schedulers(sd_dir):
    kw = dict(subfolder='scheduler', local_files_only=True)
    return (EulerDiscreteScheduler.from_pretrained(sd_dir, **kw),
            DDPMScheduler.from_pretrained(sd_dir, **kw))


def test_official_timestep_and_noise_level(tiny_sd_dir, tiny_backbone,
                                           variants, monkeypatch):
    """Default = the public code: the UNet gets timestep 0 and noise of std
    sqrt(1 - alpha_bar_0) (= Euler sigma_0 / sqrt(sigma_0^2 + 1))."""
    euler, ddpm = _schedulers(tiny_sd_dir)
    euler.set_timesteps(ddpm.config.num_train_timesteps)
    assert float(euler.timesteps[-1]) == 0  # the img2img strength-1/1000 step
    sigma = float(euler.sigmas[-2])  # sigma of the last timestep (0)
    expected = float((1 - ddpm.alphas_cumprod[0]).sqrt())
    assert sigma / (sigma**2 + 1)**0.5 == pytest.approx(expected, rel=1e-5)
    # DDPM t=1 would be clearly different (0.041 against 0.029)
    assert float((1 - ddpm.alphas_cumprod[1]).sqrt()) > 1.3 * expected

    img = _images()
    b, c, h, w = 2, 4, H // 8, W // 8
    for name, backbone in [('euler', tiny_backbone),
                           ('ddpm', variants['ddpm0'])]:
        # a zero clean latent: the UNet input is the added noise alone
        monkeypatch.setattr(
            backbone,
            'encode_latent',
            lambda x, generator=None: torch.zeros(b, c, h, w))
        x, t, _ = _unet_call(backbone, img)
        monkeypatch.undo()
        assert t.tolist() == [0, 0], name
        # eval noise: one generator per image seeded with noise_seed
        eps = torch.randn((1, c, h, w),
                          generator=torch.Generator().manual_seed(
                              backbone.noise_seed)).expand(b, -1, -1, -1)
        torch.testing.assert_close(x, expected * eps, rtol=1e-5, atol=1e-7)
        assert float(x.std()) == pytest.approx(expected, rel=0.05)


@pytest.fixture(scope='module')
def sd21_scheduler_dir(tiny_sd_dir, tmp_path_factory):
    """The tiny SD with SD 2.1-base's scheduler config."""
    root = str(tmp_path_factory.mktemp('tiny_sd21_scheduler') / 'sd')
    shutil.copytree(tiny_sd_dir, root)
    with open(osp.join(root, 'scheduler', 'scheduler_config.json'), 'w') as f:
        json.dump(SD21_BASE_SCHEDULER, f)
    return root


def test_default_matches_diffusers_img2img_path(sd21_scheduler_dir):
    """The public code's extract(t=1) on SD 2.1-base's scheduler: Euler,
    set_timesteps(1000), get_timesteps(1000, 1/1000), prepare_latents
    (posterior sample + noise), scale_model_input. With our eval generators
    it is our default UNet input, at timestep 0."""
    backbone = StableDiffusionBackbone(sd21_scheduler_dir).eval()
    euler, _ = _schedulers(sd21_scheduler_dir)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=backbone.vae,
        text_encoder=None,
        tokenizer=None,
        unet=backbone.unet,
        scheduler=euler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False)
    img = _images()
    pipe.scheduler.set_timesteps(1000)
    timesteps, _ = pipe.get_timesteps(1000, 1 / 1000, 'cpu')
    gens = [
        torch.Generator().manual_seed(backbone.noise_seed) for _ in range(2)
    ]
    with torch.no_grad():
        latents = pipe.prepare_latents(
            img,
            timesteps[:1].repeat(2),
            1,
            2,
            torch.float32,
            'cpu',
            generator=gens)
    ref = pipe.scheduler.scale_model_input(latents, timesteps[:1])
    x, t, _ = _unet_call(backbone, img)
    assert timesteps[:1].tolist() == [0]
    assert t.tolist() == [0, 0] and t.dtype == timesteps.dtype
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)


def test_posterior_sample_or_mean(variants):
    img = _images()
    mean, std, scale = _posterior(variants['sample'], img)
    variants['sample'].train()
    try:
        x1, _, _ = _unet_call(variants['sample'], img)
        x2, _, _ = _unet_call(variants['sample'], img)
    finally:
        variants['sample'].eval()
    assert not torch.allclose(x1, x2)  # fresh draws in training
    for x in (x1, x2):
        z = (x / scale - mean) / std  # the standard normal of the draw
        assert abs(float(z.mean())) < 0.1
        assert float(z.std()) == pytest.approx(1.0, abs=0.1)
    xm, _, _ = _unet_call(variants['mean'], img)
    torch.testing.assert_close(xm, mean * scale, rtol=0, atol=0)


def test_eval_repeatable_train_fresh(tiny_backbone):
    img = _images()
    x1, _, o1 = _unet_call(tiny_backbone, img)
    x2, _, o2 = _unet_call(tiny_backbone, img)
    assert torch.equal(x1, x2)
    for key in ('det_feat', 'attn_map'):
        assert torch.equal(o1[key], o2[key])
    # per-image generators: an image's features do not depend on its batch
    x_one, _, _ = _unet_call(tiny_backbone, img[1:])
    torch.testing.assert_close(x_one[0], x1[1])
    tiny_backbone.train()
    try:
        torch.manual_seed(0)
        xa, _, oa = _unet_call(tiny_backbone, img)
        xb, _, ob = _unet_call(tiny_backbone, img)
        torch.manual_seed(0)
        xc, _, _ = _unet_call(tiny_backbone, img)
    finally:
        tiny_backbone.eval()
    assert not torch.allclose(xa, xb)
    assert not torch.allclose(oa['det_feat'], ob['det_feat'])
    assert not torch.allclose(xa, x1)
    assert torch.equal(xa, xc)  # training noise follows torch's seed


def test_old_input_is_reachable(tiny_sd_dir, variants, tmp_path):
    """timestep=1, latent='mean', add_noise=False: the scaled posterior mean
    at timestep 1, the same in train and eval, no scheduler needed."""
    old = variants['old']
    img = _images()
    mean, _, scale = _posterior(old, img)
    x, t, o1 = _unet_call(old, img)
    assert t.tolist() == [1, 1]
    torch.testing.assert_close(x, mean * scale, rtol=0, atol=0)
    old.train()
    try:
        x2, _, o2 = _unet_call(old, img)
    finally:
        old.eval()
    assert torch.equal(x, x2) and torch.equal(o1['det_feat'], o2['det_feat'])
    # without scheduler/: only the noise-free input can be built
    root = str(tmp_path / 'no_scheduler')
    shutil.copytree(
        tiny_sd_dir,
        root,
        ignore=lambda d, names: ['scheduler'] * ('scheduler' in names))
    StableDiffusionBackbone(root, timestep=1, latent='mean', add_noise=False)
    with pytest.raises(FileNotFoundError, match='scheduler/'):
        StableDiffusionBackbone(root)


def test_argument_checks(tiny_sd_dir):
    with pytest.raises(ValueError, match="latent must be one of"):
        StableDiffusionBackbone(tiny_sd_dir, latent='mode')
    with pytest.raises(ValueError, match='noise_scheduler must be one of'):
        StableDiffusionBackbone(tiny_sd_dir, noise_scheduler='pndm')
    for name in ('euler', 'ddpm'):
        with pytest.raises(ValueError, match='timestep=1000 is outside'):
            StableDiffusionBackbone(
                tiny_sd_dir, timestep=1000, noise_scheduler=name)
    with pytest.raises(ValueError, match='timestep=-1: expected'):
        StableDiffusionBackbone(tiny_sd_dir, timestep=-1, add_noise=False)
