# Copyright (c) mmpsearch contributors. All rights reserved.
"""Train a tiny text-conditioned latent diffusion model on the synthetic
scenes and write it as a Stable Diffusion folder (diffusers layout) that
DiffPS's ``StableDiffusionBackbone`` loads unchanged::

    python tools/dataset_converters/make_synthetic.py --format cuhk \\
        --out data/synthetic_cuhk --describe
    python tools/misc/train_tiny_ldm.py data/synthetic_cuhk \\
        work_dirs/tiny_ldm

Latent diffusion as Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022, at the sizes of the tiny random Stable
Diffusion of the tests (:mod:`mmpsearch.testing.tiny_sd`: SD 2.1's block
structure, UNet widths 32-64, VAE widths 8-16, a 2-layer CLIP text encoder of
width 32), so that DiffPS (Kim et al., ICCV 2025) can be tried on a diffusion
model whose features have seen people, without any Stable Diffusion weights:

1. **Autoencoder.** diffusers' ``AutoencoderKL`` trained on random crops
   (and flips) of the training scenes with the L1 reconstruction term and a
   small KL term of Rombach et al.'s KL-regularised autoencoder (Sec. 3.1,
   App. G: weight 1e-6 relative to the pixel-summed L1); the perceptual and
   adversarial terms are left out (no LPIPS weights here, and a GAN does not
   fit the budget). One term is added (``--preview-weight``, default 1): a
   1 x 1 conv of the posterior mean, trained alongside and then dropped,
   must give the image average-pooled to the latent's size (L1). Stable
   Diffusion's latent has that property (a fixed 4 x 3 linear map of it is
   the colour preview that diffusion front-ends show while sampling); the
   tiny autoencoder trained without it keeps the colour out of its latent
   and reconstructs grey scenes (measured on the synthetic scenes: linear
   R^2 of the persons' colour from the latent 0.01 on the training persons,
   against 0.51 with the term; the random VAE's is 0.13), so nothing
   downstream of it could tell
   people apart by their clothes, which is what identity is in these scenes.
   ``latent_colour_r2`` in ``train_log.json`` is that R^2 after training.
   Its ``scaling_factor`` is then set to 1 / the standard
   deviation of the training latents, as Rombach et al. did for SD (0.18215),
   so the UNet sees unit-variance latents.
2. **Denoiser.** diffusers' ``UNet2DConditionModel`` trained as an
   epsilon-predicting denoiser (Ho et al., NeurIPS 2020) on posterior samples
   of the frozen autoencoder's latents of the whole (padded) scenes, with
   ``DDPMScheduler.add_noise`` at uniform timesteps of the tiny SD's scaled
   linear schedule, conditioned through cross-attention on the embeddings of
   the scene's caption.

With ``--unet-crop``, the denoiser trains on random square crops instead,
each captioned by the persons at least half inside it and by its background
alone when there is none, so that the word "person" comes and goes with the
people (measured: the "person" map got no closer to the people than with
whole scenes; see ``docs/en/model_zoo.md``).

Captions come from the renderer's own scene description (``scenes.json`` of
``make_synthetic.py --describe``, see
:mod:`mmpsearch.datasets.synthetic.captions`), e.g. "person in red shirts and
blue pants, person in dull clothes, on grey ground by light grey wall". With
probability ``--prompt-prob`` a scene is captioned by DiffPS's prompt
"person" alone, so that the exact conditioning DiffPS gives the UNet is seen
in training.

**The text encoder stays frozen at its random initialisation.** Its token
embeddings still differ per word (and the tokenizer keeps every caption word
as one token), so the UNet's cross-attention can learn to bind "person" and
the colour words to image regions; that binding is what DiffPS's "person"
map reads. It is frozen because (a) Stable Diffusion conditions on a CLIP
text encoder that was trained elsewhere and stays frozen while the UNet
learns (Rombach et al.'s own text-to-image LDM trained its transformer
jointly; SD, which DiffPS uses, does not), and DiffPS keeps it frozen too;
(b) CLIP's text encoder is causal, so the embedding of the first word
depends on nothing after it: every caption starts with "person", so the
frozen encoder gives DiffPS's prompt "person" exactly the token embedding
the UNet was trained with, while a jointly trained encoder would have only
the epsilon loss to keep the words' embeddings apart; (c) it leaves the CPU
budget to the UNet.

Everything is seeded (``--seed``); the folder is written to a temporary
folder beside OUT and renamed into place at the end, so OUT is either the
complete model or absent; an existing OUT is refused unless ``--overwrite``.
The loss curve is printed every ``--log-interval`` iterations and kept, with
the settings and timings, in ``OUT/train_log.json``.

Defaults (600 autoencoder and 3000 denoiser iterations on the 400 training
scenes of ``make_synthetic.py``'s defaults) took 19.9 minutes with one thread
(``--threads 1``, seed 0, beside another job on the second core): the
autoencoder 3.1 min (0.31 s an iteration of 8 crops of 128 x 128), the
denoiser 16.4 min (0.33 s an iteration of 2 scenes of 320 x 256, latents
40 x 32). With ``--unet-crop 128 --unet-batch 8`` the denoiser took 11.4 min
(0.23 s an iteration).
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import signal
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmpsearch.utils.cli_args import add_force_arg

#: DiffPS's prompt (``StableDiffusionBackbone.prompt``).
PROMPT = 'person'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a tiny latent diffusion model (diffusers layout, '
        'loadable by StableDiffusionBackbone) on captioned synthetic scenes.')
    parser.add_argument(
        'data_root',
        help='synthetic CUHK-layout folder written with make_synthetic.py '
        '--describe (holds scenes.json)')
    parser.add_argument('out', help='Stable Diffusion folder to write')
    add_force_arg(
        parser,
        help='replace an existing OUT (at the end, in one rename)',
        flag='--overwrite')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--split',
        default='train',
        choices=['train', 'gallery', 'all'],
        help='scenes to train on (default: the training scenes only, so the '
        'test gallery stays unseen)')
    parser.add_argument(
        '--num-images',
        type=int,
        default=None,
        help='use only the first N scenes of the split')
    parser.add_argument('--vae-iters', type=int, default=600)
    parser.add_argument('--vae-batch', type=int, default=8)
    parser.add_argument(
        '--vae-crop',
        type=int,
        default=128,
        help='side of the square training crops of the autoencoder')
    parser.add_argument('--vae-lr', type=float, default=1e-3)
    parser.add_argument(
        '--kl-weight',
        type=float,
        default=1e-6,
        help='KL weight relative to the pixel-summed L1 (Rombach et al.)')
    parser.add_argument(
        '--preview-weight',
        type=float,
        default=1.0,
        help='weight of the latent-preview term: a 1 x 1 conv of the latent '
        'must give the image average-pooled to the latent\'s size (Stable '
        'Diffusion\'s latent has this property; without the term the tiny '
        'autoencoder leaves the colour out of its latent); 0: off')
    parser.add_argument('--unet-iters', type=int, default=3000)
    parser.add_argument('--unet-batch', type=int, default=2)
    parser.add_argument('--unet-lr', type=float, default=1e-3)
    parser.add_argument(
        '--unet-crop',
        type=int,
        default=0,
        help='train the denoiser on random square crops of this side (a '
        'multiple of 64 pixels), each captioned by the persons at least half '
        'inside it (the background alone when none is), so that the word '
        '"person" is present or absent with the people; 0: whole scenes, '
        'captioned by all their persons')
    parser.add_argument(
        '--prompt-prob',
        type=float,
        default=0.1,
        help=f'probability of captioning a scene by "{PROMPT}" alone '
        '(DiffPS\'s prompt)')
    parser.add_argument(
        '--log-interval',
        type=int,
        default=50,
        help='print the mean losses every N iterations')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch\'s choice)')
    return parser.parse_args(argv)


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from mmpsearch.datasets.synthetic.captions import CAPTION_WORDS  # noqa: E402
from mmpsearch.datasets.synthetic.captions import SCENES_FILE  # noqa: E402
from mmpsearch.datasets.synthetic.captions import scene_caption  # noqa: E402
from mmpsearch.testing.tiny_sd import TINY_SD_WORDS, make_tiny_sd  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_nonempty_dir  # noqa: E402

#: The tokenizer's single-token words: the tiny SD's and the captions'.
LDM_WORDS = tuple(dict.fromkeys(TINY_SD_WORDS + CAPTION_WORDS))
#: Images are padded to a multiple of this (VAE /8, three UNet
#: downsamplings), as DiffPS's data preprocessor does.
SIZE_DIVISOR = 64


# ---------------------------------------------------------------- data
def load_scenes(data_root: str,
                split: str = 'train',
                num_images: Optional[int] = None) -> List[dict]:
    """The entries of ``scenes.json`` of ``split`` ('train', 'gallery' or
    'all'), the first ``num_images`` of them when given."""
    path = osp.join(data_root, SCENES_FILE)
    if not osp.isfile(path):
        raise SystemExit(
            f'{path} does not exist: the captions are written from the '
            'renderer\'s scene description; render the scenes with '
            '`python tools/dataset_converters/make_synthetic.py --format '
            f'cuhk --out {data_root} --describe` (into a new folder, or with '
            '--force: the other files come out the same).')
    with open(path) as f:
        scenes = json.load(f)['images']
    if split != 'all':
        scenes = [s for s in scenes if s['split'] == split]
    if num_images is not None:
        scenes = scenes[:num_images]
    if not scenes:
        raise SystemExit(f'{path} holds no {split} scene')
    return scenes


def load_images(data_root: str,
                scenes: Sequence[dict]) -> Tuple[Tensor, Tensor]:
    """The scenes as RGB in [-1, 1], padded at the bottom / right with 0 (the
    normalised value DiffPS's preprocessor pads with) to a multiple of 64:
    (N, 3, H, W), and each image's unpadded (h, w) as (N, 2)."""
    from mmpsearch.datasets.cuhk_sysu import IMAGE_DIR
    imgs = []
    for s in scenes:
        path = osp.join(data_root, IMAGE_DIR, s['imname'])
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f'cannot read {path}')
        imgs.append(torch.from_numpy(bgr[..., ::-1].copy()))
    hs = [int(i.shape[0]) for i in imgs]
    ws = [int(i.shape[1]) for i in imgs]
    H = math.ceil(max(hs) / SIZE_DIVISOR) * SIZE_DIVISOR
    W = math.ceil(max(ws) / SIZE_DIVISOR) * SIZE_DIVISOR
    out = torch.zeros(len(imgs), 3, H, W)
    for k, img in enumerate(imgs):
        x = img.permute(2, 0, 1).float() / 127.5 - 1.0
        out[k, :, :x.shape[1], :x.shape[2]] = x
    return out, torch.tensor(list(zip(hs, ws)))


@torch.no_grad()
def encode_text(tokenizer, text_encoder: nn.Module,
                texts: Sequence[str]) -> Tensor:
    """(N, 77, D) embeddings, tokenised and encoded as
    ``StableDiffusionBackbone`` encodes its prompt."""
    ids = tokenizer(
        list(texts),
        padding='max_length',
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors='pt').input_ids
    return text_encoder(ids)[0].float()


def random_crops(images: Tensor, sizes: Tensor, crop: int, batch: int,
                 rng: np.random.Generator) -> Tensor:
    """``batch`` random ``crop`` x ``crop`` crops inside the unpadded part of
    random images, each flipped left-right with probability 1/2."""
    out = []
    for _ in range(batch):
        k = int(rng.integers(len(images)))
        h, w = (int(v) for v in sizes[k])
        ch, cw = min(crop, h), min(crop, w)
        y = int(rng.integers(h - ch + 1))
        x = int(rng.integers(w - cw + 1))
        patch = images[k, :, y:y + ch, x:x + cw]
        if (ch, cw) != (crop, crop):  # an image smaller than the crop
            patch = F.pad(patch, (0, crop - cw, 0, crop - ch))
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        out.append(patch)
    return torch.stack(out)


# ------------------------------------------------------------ schedules
def warmup_cosine(iters: int, warmup: float = 0.05) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` of the iterations, then a cosine decay
    to 0 (a ``LambdaLR`` factor)."""
    n_warm = max(1, int(warmup * iters))

    def factor(it: int) -> float:
        if it < n_warm:
            return (it + 1) / n_warm
        done = (it - n_warm) / max(1, iters - n_warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


class CurveLogger:
    """Prints the mean of each logged value every ``interval`` iterations
    and keeps the printed points."""

    def __init__(self, stage: str, iters: int, interval: int) -> None:
        self.stage, self.iters, self.interval = stage, iters, interval
        self.points: List[dict] = []
        self._acc: Dict[str, List[float]] = {}
        self._start = time.time()

    def update(self, it: int, **values: float) -> None:
        for k, v in values.items():
            self._acc.setdefault(k, []).append(float(v))
        if (it + 1) % self.interval and it + 1 != self.iters:
            return
        point = dict(iter=it + 1)
        point.update({k: float(np.mean(v)) for k, v in self._acc.items()})
        sec = (time.time() - self._start) / (it + 1)
        point['s_per_iter'] = sec
        self.points.append(point)
        self._acc = {}
        vals = '  '.join(f'{k} {v:.4f}' for k, v in point.items()
                         if k not in ('iter', 's_per_iter'))
        eta = sec * (self.iters - it - 1)
        print(
            f'[{self.stage}] iter {it + 1:5d}/{self.iters}  {vals}  '
            f'{sec:.3f} s/iter  eta {eta / 60:.1f} min',
            flush=True)


# ------------------------------------------------------ stage 1: the VAE
def vae_loss(vae: nn.Module,
             x: Tensor,
             kl_weight: float,
             preview: Optional[nn.Module] = None,
             preview_weight: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
    """Rombach et al.'s KL autoencoder loss without its perceptual and
    adversarial terms, per pixel: mean L1 of the reconstruction from a
    posterior sample + ``kl_weight`` x the KL (summed over the latent) per
    pixel; with ``preview``, + ``preview_weight`` x the mean L1 between
    ``preview`` (a 1 x 1 conv, latent -> RGB) of the posterior mean and the
    image average-pooled to the latent's size. Returns (loss, l1, kl per
    latent element)."""
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    l1 = (rec - x).abs().mean()
    kl = post.kl()  # summed over (C, h, w), per image
    loss = l1 + kl_weight * kl.mean() / x[0].numel()
    if preview is not None and preview_weight:
        scale = x.shape[-1] // post.mean.shape[-1]
        target = F.avg_pool2d(x, scale)
        loss = loss + preview_weight * (preview(post.mean) -
                                        target).abs().mean()
    return loss, l1.detach(), kl.mean().detach() / post.mean[0].numel()


def train_vae(vae: nn.Module,
              images: Tensor,
              sizes: Tensor,
              iters: int,
              batch: int,
              crop: int,
              lr: float,
              kl_weight: float,
              rng: np.random.Generator,
              log_interval: int,
              preview_weight: float = 0.0) -> List[dict]:
    """Stage 1; returns the logged loss curve. With ``preview_weight``, a
    1 x 1 conv from the latent to RGB is trained alongside (see
    :func:`vae_loss`) and dropped afterwards."""
    vae.train()
    preview = None
    params = list(vae.parameters())
    if preview_weight:
        preview = nn.Conv2d(vae.config.latent_channels, 3, 1)
        params += list(preview.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(iters))
    log = CurveLogger('vae', iters, log_interval)
    for it in range(iters):
        x = random_crops(images, sizes, crop, batch, rng)
        loss, l1, kl = vae_loss(vae, x, kl_weight, preview, preview_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.update(it, loss=loss.item(), l1=l1, kl_per_elem=kl)
    vae.eval()
    return log.points


@torch.no_grad()
def latent_colour_r2(vae: nn.Module,
                     images: Tensor,
                     scenes: Sequence[dict],
                     chunk: int = 8) -> float:
    """How much of the persons' colour the latent carries, linearly: the R^2
    of a least-squares affine map from the posterior mean of each latent
    cell mostly inside a person box to that cell's mean chroma (RGB minus
    its grey). Identity on these scenes is clothing colour, so DiffPS's
    ReID features hold no more of it than the latent does."""
    mask = torch.zeros(len(images), 1, *images.shape[-2:])
    for k, scene in enumerate(scenes):
        for person in scene['persons']:
            x, y, w, h = person['box']
            mask[k, :, y:y + h, x:x + w] = 1
    z = torch.cat([
        vae.encode(images[k:k + chunk]).latent_dist.mean
        for k in range(0, len(images), chunk)
    ])
    scale = images.shape[-1] // z.shape[-1]
    cells = F.avg_pool2d(mask, scale)[:, 0] > 0.5
    rgb = F.avg_pool2d(images, scale)
    chroma = (rgb - rgb.mean(1, keepdim=True)).permute(0, 2, 3, 1)[cells]
    feats = z.permute(0, 2, 3, 1)[cells]
    if len(feats) <= feats.shape[1] + 1:
        return float('nan')
    feats = torch.cat([feats, torch.ones(len(feats), 1)], 1).double()
    chroma = chroma.double()
    # SVD-based: the default driver mishandles collinear columns
    fit = feats @ torch.linalg.lstsq(feats, chroma, driver='gelsd').solution
    total = (chroma - chroma.mean(0)).pow(2).sum()
    return float(1 - (fit - chroma).pow(2).sum() / total)


@torch.no_grad()
def encode_latents(vae: nn.Module,
                   images: Tensor,
                   chunk: int = 8) -> Tuple[Tensor, Tensor]:
    """Posterior mean and std (N, 4, H/8, W/8) of every image and of its
    left-right flip (the flips follow the originals: 2N in all), unscaled."""
    vae.eval()
    means, stds = [], []
    for flip in (False, True):
        for k in range(0, len(images), chunk):
            x = images[k:k + chunk]
            post = vae.encode(x.flip(-1) if flip else x).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_l1(vae: nn.Module,
                      images: Tensor,
                      means: Tensor,
                      chunk: int = 8) -> float:
    """Mean L1 of the images decoded from their posterior means."""
    err = [(vae.decode(means[k:k + chunk]).sample -
            images[k:k + chunk]).abs().mean() * len(images[k:k + chunk])
           for k in range(0, len(images), chunk)]
    return float(sum(err) / len(images))


def latent_scaling_factor(mean: Tensor, std: Tensor) -> float:
    """1 / the standard deviation of posterior samples over all latents
    (Rombach et al.'s rescaling of the latent space, SD's 0.18215)."""
    var = (mean - mean.mean()).pow(2).mean() + std.pow(2).mean()
    return float(1.0 / var.sqrt())


# --------------------------------------------------- stage 2: the UNet
def denoising_loss(unet: nn.Module, scheduler, z0: Tensor, cond: Tensor,
                   noise: Tensor, t: Tensor) -> Tensor:
    """The epsilon-prediction loss ||eps - eps_theta(x_t, t, c)||^2 with
    ``x_t = DDPMScheduler.add_noise(z0, eps, t)``."""
    x_t = scheduler.add_noise(z0, noise, t)
    pred = unet(x_t, t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), noise.float())


class SceneBatches:
    """Draws the denoiser's batches: posterior samples of the latents of
    whole scenes (or their flips) and their captions' embeddings, or, with
    ``crop`` (pixels, a multiple of 8), random square crops of those latents
    captioned by the persons at least ``min_inside`` inside the crop.

    ``lat_mean`` / ``lat_std`` hold 2N posteriors (the N images, then their
    flips of the padded width); ``sizes`` the images' unpadded (h, w);
    ``encode`` maps captions to (n, 77, D) text embeddings; ``prompt_embed``
    (1, 77, D) is DiffPS's prompt's, which replaces the caption of a batch
    entry with probability ``prompt_prob`` when it shows a person (never a
    crop without one: the prompt would say what is not there).
    """

    def __init__(self,
                 scenes: Sequence[dict],
                 lat_mean: Tensor,
                 lat_std: Tensor,
                 sizes: Tensor,
                 scaling_factor: float,
                 encode: Callable[[Sequence[str]], Tensor],
                 prompt_embed: Tensor,
                 prompt_prob: float,
                 crop: int = 0,
                 min_inside: float = 0.5) -> None:
        if crop % 8:
            raise ValueError(f'crop={crop} is not a multiple of 8 pixels')
        self.scenes, self.sizes = scenes, sizes
        self.lat_mean, self.lat_std = lat_mean, lat_std
        self.scaling_factor = scaling_factor
        self.encode, self.prompt_embed = encode, prompt_embed
        self.prompt_prob, self.crop, self.min_inside = (prompt_prob, crop,
                                                        min_inside)
        self.padded_width = lat_mean.shape[-1] * 8
        self._embeds: Dict[str, Tensor] = {}
        # how many batch entries were drawn, and how many showed no person
        self.drawn = self.without_person = 0
        if not crop:
            self._whole = encode([scene_caption(s) for s in scenes])

    def embed(self, captions: Sequence[str]) -> Tensor:
        """The captions' embeddings, each encoded once."""
        new = [c for c in dict.fromkeys(captions) if c not in self._embeds]
        if new:
            self._embeds.update(zip(new, self.encode(new)))
        return torch.stack([self._embeds[c] for c in captions])

    def __call__(self, batch: int,
                 rng: np.random.Generator) -> Tuple[Tensor, Tensor]:
        """(z0, cond): scaled latents (batch, 4, h, w) and the text
        embeddings (batch, 77, D) that condition them."""
        n = len(self.scenes)
        idx = torch.from_numpy(rng.integers(2 * n, size=batch))
        mean, std = self.lat_mean[idx], self.lat_std[idx]
        z0 = (mean + std * torch.randn_like(mean)) * self.scaling_factor
        if not self.crop:
            cond = self._whole[idx % n].clone()
            shows_person = torch.ones(batch, dtype=torch.bool)
        else:
            z0, captions = self._crops(z0, idx, rng)
            cond = self.embed(captions)
            shows_person = torch.tensor(
                [c.startswith(PROMPT) for c in captions])
        self.drawn += batch
        self.without_person += int((~shows_person).sum())
        bare = torch.from_numpy(rng.random(batch) < self.prompt_prob)
        bare &= shows_person
        cond[bare] = self.prompt_embed.expand(int(bare.sum()), -1, -1)
        return z0, cond

    def _crops(self, z0: Tensor, idx: Tensor,
               rng: np.random.Generator) -> Tuple[Tensor, List[str]]:
        c = self.crop // 8
        lat_h, lat_w = z0.shape[-2:]
        crops, captions = [], []
        for z, k in zip(z0, idx.tolist()):
            scene = self.scenes[k % len(self.scenes)]
            flipped = k >= len(self.scenes)
            # latent cells wholly inside the image (the flip mirrors the
            # padded width, so its image part is on the right)
            h, w = (int(v) // 8 for v in self.sizes[k % len(self.scenes)])
            x_lo = lat_w - w if flipped else 0
            cy = int(rng.integers(max(h - c, 0) + 1))
            cx = x_lo + int(rng.integers(max(w - c, 0) + 1))
            cy, cx = min(cy, lat_h - c), min(cx, lat_w - c)
            crops.append(z[:, cy:cy + c, cx:cx + c])
            persons = persons_in_crop(scene, (cx * 8, cy * 8, self.crop),
                                      self.padded_width if flipped else None,
                                      self.min_inside)
            captions.append(scene_caption(scene, persons))
        return torch.stack(crops), captions


def persons_in_crop(scene: dict,
                    crop: Tuple[int, int, int],
                    flip_width: Optional[int] = None,
                    min_inside: float = 0.5) -> List[dict]:
    """The persons of ``scene`` (an entry of ``scenes.json``, boxes x, y, w,
    h) with at least ``min_inside`` of their box's area inside the square
    ``crop`` = (x0, y0, side) in pixels, of the image or, when
    ``flip_width`` is given, of its left-right flip over that width."""
    x0, y0, side = crop
    inside = []
    for person in scene['persons']:
        x, y, w, h = person['box']
        if flip_width is not None:
            x = flip_width - x - w
        iw = min(x + w, x0 + side) - max(x, x0)
        ih = min(y + h, y0 + side) - max(y, y0)
        if iw > 0 and ih > 0 and iw * ih >= min_inside * w * h:
            inside.append(person)
    return inside


def train_unet(unet: nn.Module, scheduler, draw: SceneBatches, iters: int,
               batch: int, lr: float, rng: np.random.Generator,
               log_interval: int) -> List[dict]:
    """Stage 2 on the batches ``draw`` makes. Returns the logged loss
    curve."""
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(iters))
    num_t = scheduler.config.num_train_timesteps
    log = CurveLogger('unet', iters, log_interval)
    for it in range(iters):
        z0, cond = draw(batch, rng)
        t = torch.randint(0, num_t, (batch, ))
        loss = denoising_loss(unet, scheduler, z0, cond, torch.randn_like(z0),
                              t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        log.update(it, loss=loss.item())
    unet.eval()
    return log.points


# --------------------------------------------------------------- main
def _terminate(signum, frame) -> None:
    raise SystemExit(f'stopped by signal {signum}')


def _publish(tmp: str, out: str) -> None:
    """Move the finished ``tmp`` to ``out``: one rename, after moving an
    existing ``out`` aside (removed afterwards)."""
    old = None
    if osp.lexists(out):
        old = f'{tmp}.old'
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old) if osp.isdir(old) else os.remove(old)


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    out = osp.abspath(args.out)
    with exit_on_refusal():
        refuse_nonempty_dir(out, 'OUT', args.overwrite, flag='--overwrite')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.time()

    scenes = load_scenes(args.data_root, args.split, args.num_images)
    captions = [scene_caption(s) for s in scenes]
    images, sizes = load_images(args.data_root, scenes)
    if args.unet_crop % SIZE_DIVISOR or args.unet_crop > min(
            images.shape[-2:]):
        raise SystemExit(
            f'--unet-crop {args.unet_crop}: expected 0 or a multiple of '
            f'{SIZE_DIVISOR} pixels up to the padded scene size '
            f'{tuple(images.shape[-2:])}')
    print(
        f'{len(scenes)} {args.split} scenes, padded to '
        f'{tuple(images.shape[-2:])}; e.g. "{captions[0]}"',
        flush=True)

    parent = osp.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = osp.join(parent, f'.{osp.basename(out)}.tmp-{os.getpid()}')
    # a SIGTERM (e.g. `timeout`) also removes the temporary folder
    old_handler = signal.signal(signal.SIGTERM, _terminate)
    if osp.lexists(tmp):
        shutil.rmtree(tmp)
    try:
        # the random tiny SD with a tokenizer that knows the caption words
        make_tiny_sd(tmp, seed=args.seed, words=LDM_WORDS)
        from diffusers import (AutoencoderKL, DDPMScheduler,
                               UNet2DConditionModel)
        from transformers import CLIPTextModel, CLIPTokenizer

        # (tiny models: no need of accelerate's low-memory loading)
        vae = AutoencoderKL.from_pretrained(
            tmp, subfolder='vae', low_cpu_mem_usage=False)
        unet = UNet2DConditionModel.from_pretrained(
            tmp, subfolder='unet', low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(tmp, subfolder='scheduler')
        tokenizer = CLIPTokenizer.from_pretrained(tmp, subfolder='tokenizer')
        text_encoder = CLIPTextModel.from_pretrained(
            tmp, subfolder='text_encoder').eval().requires_grad_(False)
        prompt_embed = encode_text(tokenizer, text_encoder, [PROMPT])
        n_tokens = max(len(tokenizer(c).input_ids) for c in captions)
        if n_tokens > tokenizer.model_max_length:
            print(f'warning: the longest caption has {n_tokens} tokens, '
                  f'more than {tokenizer.model_max_length}; it is cut')

        t0 = time.time()
        vae_curve = train_vae(vae, images, sizes, args.vae_iters,
                              args.vae_batch, args.vae_crop, args.vae_lr,
                              args.kl_weight, rng, args.log_interval,
                              args.preview_weight)
        vae_sec = time.time() - t0
        lat_mean, lat_std = encode_latents(vae, images)
        sf = latent_scaling_factor(lat_mean, lat_std)
        vae.register_to_config(scaling_factor=sf)
        n_rec = min(64, len(images))  # (lat_mean: the images, then flips)
        rec_l1 = reconstruction_l1(vae, images[:n_rec], lat_mean[:n_rec])
        # DiffPS draws from this posterior (latent='sample'): how noisy it
        # is matters (the random tiny VAE's std is 3.7x its mean)
        std_over_mean = float(lat_std.mean() / lat_mean.abs().mean())
        colour_r2 = latent_colour_r2(vae, images[:n_rec], scenes[:n_rec])
        print(
            f'[vae] reconstruction L1 of the posterior means {rec_l1:.4f} '
            f'(images in [-1, 1]); posterior std / |mean| '
            f'{std_over_mean:.4f}; scaling_factor {sf:.5f}; persons\' '
            f'colour from the latent (linear R^2) {colour_r2:.3f}',
            flush=True)

        t0 = time.time()
        draw = SceneBatches(
            scenes,
            lat_mean,
            lat_std,
            sizes,
            sf,
            lambda texts: encode_text(tokenizer, text_encoder, texts),
            prompt_embed,
            args.prompt_prob,
            crop=args.unet_crop)
        unet_curve = train_unet(unet, scheduler, draw, args.unet_iters,
                                args.unet_batch, args.unet_lr, rng,
                                args.log_interval)
        unet_sec = time.time() - t0

        vae.save_pretrained(osp.join(tmp, 'vae'))
        unet.save_pretrained(osp.join(tmp, 'unet'))
        with open(osp.join(tmp, 'train_log.json'), 'w') as f:
            json.dump(
                dict(
                    args=vars(args),
                    command=' '.join(sys.argv),
                    num_scenes=len(scenes),
                    image_size=list(images.shape[-2:]),
                    example_captions=captions[:5],
                    scaling_factor=sf,
                    vae_reconstruction_l1=rec_l1,
                    posterior_std_over_mean=std_over_mean,
                    latent_colour_r2=colour_r2,
                    vae_curve=vae_curve,
                    unet_curve=unet_curve,
                    # crops: the fraction captioned without a person
                    unet_without_person=draw.without_person /
                    max(draw.drawn, 1),
                    vae_seconds=vae_sec,
                    unet_seconds=unet_sec,
                    seconds=time.time() - start,
                    threads=torch.get_num_threads()),
                f,
                indent=1)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    print(f'tiny latent diffusion model written to {out} in '
          f'{(time.time() - start) / 60:.1f} min (autoencoder '
          f'{vae_sec:.0f} s, denoiser {unet_sec:.0f} s)')
    return out


if __name__ == '__main__':
    main()
