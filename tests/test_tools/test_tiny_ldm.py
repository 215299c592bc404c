# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/misc/train_tiny_ldm.py (a tiny latent diffusion model trained on
captioned synthetic scenes), the captions it reads, and
tools/analysis_tools/attention_mass.py (DiffPS's "person" map against the
person boxes)."""
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch

from mmpsearch.datasets import make_synthetic
from mmpsearch.datasets.cuhk_sysu import cuhk_train_annotations
from mmpsearch.datasets.synthetic import (PALETTE, SCENES_FILE, identity_looks,
                                          scene_caption)
from mmpsearch.testing.files import tree_digest
from mmpsearch.testing.tiny_sd import TINY_UNET_CONFIG
from ..conftest import load_tool

SEED, NUM_IDS, SIZE = 5, 16, (128, 96)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def ldm_tool():
    return load_tool('tools/misc/train_tiny_ldm.py', 'train_tiny_ldm_tool')


@pytest.fixture(scope='module')
def mass_tool():
    return load_tool('tools/analysis_tools/attention_mass.py',
                     'attention_mass_tool')


@pytest.fixture(scope='module')
def described(tmp_path_factory):
    """The smallest CUHK-layout tree, with and without ``scenes.json``."""
    base = tmp_path_factory.mktemp('described')
    roots = {}
    for describe in (False, True):
        roots[describe] = str(base / f'describe_{describe}')
        make_synthetic(
            'cuhk',
            roots[describe],
            num_images=202,
            num_ids=NUM_IDS,
            seed=SEED,
            image_size=SIZE,
            describe=describe)
    return roots


# ------------------------------------------------------------- captions
def test_describe_adds_only_scenes_json(described):
    plain, desc = tree_digest(described[False]), tree_digest(described[True])
    assert set(desc) - set(plain) == {SCENES_FILE}
    assert {k: desc[k] for k in plain} == plain


def test_describe_is_for_the_cuhk_layout(tmp_path):
    with pytest.raises(ValueError, match='CUHK'):
        make_synthetic(
            'prw',
            str(tmp_path),
            num_images=8,
            num_ids=4,
            image_size=SIZE,
            describe=True)
    assert os.listdir(tmp_path) == []


def test_captions_name_the_colours_the_renderer_used(described):
    """The looks are rebuilt here from the renderer's identity generator
    (the first draws of the CUHK writer), not from the description."""
    rng = np.random.default_rng([SEED, 0])
    looks = identity_looks(rng, NUM_IDS)
    idnums = [int(v) for v in rng.permutation(NUM_IDS) + 1]
    look_of = {pid: looks[k] for k, pid in enumerate(idnums)}
    name_of = {bgr: name for name, bgr in PALETTE.items()}

    root = described[True]
    with open(osp.join(root, SCENES_FILE)) as f:
        scenes = {s['imname']: s for s in json.load(f)['images']}
    train = cuhk_train_annotations(root)
    assert {a.img_id
            for a in train
            } == {n
                  for n, s in scenes.items() if s['split'] == 'train'}
    labeled = 0
    for ann in train:
        scene = scenes[ann.img_id]
        caption = scene_caption(scene)
        assert caption.startswith('person in ')
        assert caption.count('person') == len(scene['persons'])
        # the boxes are those of Images.mat
        xyxy = np.array([[x, y, x + w, y + h]
                         for x, y, w, h in (p['box']
                                            for p in scene['persons'])])
        np.testing.assert_array_equal(np.sort(xyxy, 0), np.sort(ann.boxes, 0))
        for person in scene['persons']:
            if person['pid'] is None:
                continue
            labeled += 1
            look = look_of[person['pid']]
            upper, lower = name_of[look.upper], name_of[look.lower]
            assert (person['upper'], person['lower']) == (upper, lower)
            assert f' {upper} ' in f' {caption} '
            assert f'{lower} pants' in caption
            if look.hat is not None:
                assert f'{name_of[look.hat]} hat' in caption
    assert labeled > 50


def test_caption_wording():
    scene = dict(
        ground='grey',
        wall='light grey',
        persons=[
            dict(
                upper='red',
                lower='blue',
                pattern='hstripes',
                accent='green',
                hat='yellow',
                bag='white'),
            dict(
                upper='dull',
                lower='dull',
                pattern='plain',
                accent=None,
                hat=None,
                bag=None)
        ])
    assert scene_caption(scene) == (
        'person in red shirts with green stripes and blue pants with yellow '
        'hat and white bag, person in dull clothes, on grey ground by light '
        'grey wall')


# --------------------------------------------------------------- trainer
def _args(root, out, *extra):
    return [
        root, out, '--num-images', '4', '--vae-iters', '2', '--vae-batch', '2',
        '--vae-crop', '64', '--unet-iters', '3', '--unet-batch', '2',
        '--log-interval', '1', '--seed', '1'
    ] + list(extra)


def test_trainer_writes_a_folder_the_backbone_loads(ldm_tool, described,
                                                    tmp_path, capsys):
    from transformers import CLIPTokenizer

    from mmpsearch.datasets.synthetic import CAPTION_WORDS
    from mmpsearch.models.backbones.stable_diffusion import \
        StableDiffusionBackbone
    out = str(tmp_path / 'ldm')
    ldm_tool.main(_args(described[True], out))
    printed = capsys.readouterr().out
    assert printed.count('[vae] iter') == 2
    assert printed.count('[unet] iter') == 3
    assert not [p for p in os.listdir(tmp_path) if p != 'ldm']  # no temp

    with open(osp.join(out, 'train_log.json')) as f:
        log = json.load(f)
    assert [p['iter'] for p in log['unet_curve']] == [1, 2, 3]
    assert all(math.isfinite(p['loss']) for p in log['unet_curve'])
    assert log['num_scenes'] == 4
    with open(osp.join(out, 'vae', 'config.json')) as f:
        assert json.load(f)['scaling_factor'] == pytest.approx(
            log['scaling_factor'])
    tok = CLIPTokenizer.from_pretrained(out, subfolder='tokenizer')
    for word in CAPTION_WORDS:  # one token a word
        assert len(tok(word).input_ids) == 3, word

    # captions start with "person": in the causal text encoder its token
    # embedding is exactly the one of DiffPS's prompt
    from transformers import CLIPTextModel
    text_encoder = CLIPTextModel.from_pretrained(out, subfolder='text_encoder')
    emb = ldm_tool.encode_text(tok, text_encoder,
                               ['person', log['example_captions'][0]])
    torch.testing.assert_close(emb[0, :2], emb[1, :2])
    assert not torch.allclose(emb[0, 2], emb[1, 2])

    backbone = StableDiffusionBackbone(out)
    backbone.eval()
    torch.testing.assert_close(backbone.prompt_embeds[0], emb[0])
    img = torch.rand(1, 3, 64, 128) * 2 - 1
    with torch.no_grad():
        feats = backbone(img)
    assert feats['det_feat'].shape[-2:] == (8, 16)
    assert feats['attn_map'].shape == (1, 1, 8, 16)
    assert torch.isfinite(feats['det_feat']).all()
    # the trained weights are the ones loaded
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(out, subfolder='unet')
    for a, b in zip(unet.parameters(), backbone.unet.parameters()):
        torch.testing.assert_close(a, b)


def test_persons_in_crop(ldm_tool):
    scene = dict(persons=[
        dict(box=[10, 10, 20, 40], name='a'),  # x 10..30, y 10..50
        dict(box=[100, 0, 20, 40], name='b'),  # x 100..120
    ])

    def names(*args, **kwargs):
        return [p['name'] for p in ldm_tool.persons_in_crop(*args, **kwargs)]

    assert names(scene, (0, 0, 64)) == ['a']
    assert names(scene, (64, 0, 64)) == ['b']
    # half of a's box inside (x 20..30 of 10..30): in at 0.5, out above
    assert names(scene, (20, 0, 64)) == ['a']
    assert names(scene, (20, 0, 64), min_inside=0.6) == []
    assert names(scene, (21, 0, 64)) == []
    # in the flip over a width of 128, a is at x 98..118 and b at 8..28
    assert names(scene, (0, 0, 64), flip_width=128) == ['b']
    assert names(scene, (64, 0, 64), flip_width=128) == ['a']


def test_crop_batches_are_captioned_by_the_persons_inside(ldm_tool):
    """Each crop's caption names the persons at least half inside it and
    only them; a crop without one is captioned by its background and never
    by DiffPS's bare prompt."""
    person = dict(
        upper='red',
        lower='blue',
        pattern='plain',
        accent=None,
        hat=None,
        bag=None,
        box=[0, 0, 32, 64])  # the top-left corner of a 128 x 192 image
    scenes = [dict(ground='grey', wall='grey', persons=[person])]
    lat = torch.arange(2 * 4 * 16 * 24, dtype=torch.float32).view(2, 4, 16, 24)
    encoded = []

    def encode(texts):
        encoded.extend(texts)
        return torch.stack([torch.full((77, 2), float(len(t))) for t in texts])

    prompt_embed = torch.full((1, 77, 2), -1.0)
    draw = ldm_tool.SceneBatches(
        scenes,
        lat,
        torch.zeros_like(lat),  # posterior std 0: z0 is the mean
        torch.tensor([[128, 192]]),
        1.0,
        encode,
        prompt_embed,
        prompt_prob=1.0,
        crop=64)
    rng = np.random.default_rng(0)
    with_person = without = 0
    for _ in range(20):
        z0, cond = draw(4, rng)
        assert z0.shape == (4, 4, 8, 8) and cond.shape == (4, 77, 2)
        for z, c in zip(z0, cond):
            # where the crop came from: the first value of the crop
            k, rest = divmod(int(z[0, 0, 0]), 4 * 16 * 24)
            cy, cx = divmod(rest, 24)
            flipped = k == 1
            x = 192 - 32 if flipped else 0  # the person's box, in pixels
            inside = (min(x + 32, cx * 8 + 64) - max(x, cx * 8)) * (
                min(64, cy * 8 + 64) - cy * 8) >= 0.5 * 32 * 64
            if inside:  # prompt_prob 1: the bare prompt
                with_person += 1
                assert (c == -1).all()
            else:
                without += 1
                background = 'on grey ground by grey wall'
                assert (c == len(background)).all()
    assert with_person and without
    assert draw.without_person == without and draw.drawn == 80
    # every caption is encoded once
    assert len(encoded) == len(set(encoded))


def test_trainer_refuses_an_existing_output(ldm_tool, described, tmp_path):
    out = tmp_path / 'ldm'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    with pytest.raises(SystemExit, match='--overwrite'):
        ldm_tool.main(_args(described[True], str(out)))
    assert os.listdir(out) == ['keep.txt']
    # with --overwrite the old folder is replaced as a whole
    ldm_tool.main(
        _args(described[True], str(out), '--overwrite', '--vae-iters', '1',
              '--unet-iters', '1'))
    assert not (out / 'keep.txt').exists()
    assert (out / 'unet' / 'config.json').exists()
    assert sorted(os.listdir(tmp_path)) == ['ldm']


def test_trainer_trains_on_captioned_crops(ldm_tool, described, tmp_path,
                                           capsys):
    out = str(tmp_path / 'ldm')
    ldm_tool.main(_args(described[True], out, '--unet-crop', '64'))
    assert capsys.readouterr().out.count('[unet] iter') == 3
    with open(osp.join(out, 'train_log.json')) as f:
        log = json.load(f)
    assert log['args']['unet_crop'] == 64
    assert 0 <= log['unet_without_person'] <= 1
    with pytest.raises(SystemExit, match='--unet-crop 96'):
        ldm_tool.main(
            _args(described[True], str(tmp_path / 'bad'), '--unet-crop', '96'))
    assert not (tmp_path / 'bad').exists()


def test_trainer_needs_the_scene_description(ldm_tool, described, tmp_path):
    with pytest.raises(SystemExit, match='--describe'):
        ldm_tool.main(_args(described[False], str(tmp_path / 'ldm')))
    assert not (tmp_path / 'ldm').exists()


def _tiny_unet_and_scheduler(seed=0):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule='scaled_linear',
        clip_sample=False)
    return unet, scheduler


def test_denoising_loss_is_zero_for_the_true_noise(ldm_tool):
    """An oracle that reads eps back from x_t (it knows z0) has loss 0, so
    the loss noises with the scheduler's sqrt(alpha_bar) mixing."""
    _, scheduler = _tiny_unet_and_scheduler()
    z0 = torch.randn(3, 4, 8, 8)
    abar = scheduler.alphas_cumprod

    class Oracle(torch.nn.Module):

        def forward(self, x_t, t, encoder_hidden_states):
            a = abar[t].view(-1, 1, 1, 1)
            eps = (x_t - a.sqrt() * z0) / (1 - a).sqrt()
            return type('Out', (), dict(sample=eps))

    t = torch.tensor([0, 400, 999])
    loss = ldm_tool.denoising_loss(Oracle(), scheduler, z0,
                                   torch.zeros(3, 77, 32),
                                   torch.randn_like(z0), t)
    assert float(loss) < 1e-8


def test_unet_stage_loss_falls_on_a_fixed_batch(ldm_tool):
    unet, scheduler = _tiny_unet_and_scheduler()
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 16, 16, generator=g)
    cond = torch.randn(2, 77, 32, generator=g)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([100, 700])
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    hist = []
    for _ in range(20):
        loss = ldm_tool.denoising_loss(unet, scheduler, z0, cond, noise, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss))
    assert hist[0] > 0.5
    assert hist[-1] < 0.25 * hist[0], hist


def test_vae_loss_preview_term(ldm_tool):
    """The preview term is the L1 between a 1 x 1 conv of the posterior
    mean and the image pooled to the latent's size, added with its weight
    (the same posterior draw: the same seed)."""
    from diffusers import AutoencoderKL

    from mmpsearch.testing.tiny_sd import TINY_VAE_CONFIG
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    preview = torch.nn.Conv2d(4, 3, 1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.manual_seed(1)
    plain, l1, kl = ldm_tool.vae_loss(vae, x, 1e-6)
    torch.manual_seed(1)
    with_preview, l1_, kl_ = ldm_tool.vae_loss(vae, x, 1e-6, preview, 0.5)
    mean = vae.encode(x).latent_dist.mean
    expected = (preview(mean) -
                torch.nn.functional.avg_pool2d(x, 8)).abs().mean()
    assert float(expected) > 0.01
    torch.testing.assert_close(with_preview - plain, 0.5 * expected)
    torch.testing.assert_close((l1, kl), (l1_, kl_))
    # it trains the encoder
    with_preview.backward()
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0


def test_latent_colour_r2(ldm_tool):
    """1 for a latent that is the pooled chroma itself, about 0 for noise;
    only the cells of person boxes count."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    scenes = [dict(persons=[dict(box=[0, 0, 32, 64])])] * 4

    class Latent:

        def __init__(self, fn):
            self.fn = fn

        def encode(self, x):
            dist = type('Dist', (), dict(mean=self.fn(x)))
            return type('Out', (), dict(latent_dist=dist))

    def chroma(x):
        rgb = torch.nn.functional.avg_pool2d(x, 8)
        return torch.cat([rgb - rgb.mean(1, keepdim=True), rgb[:, :1]], 1)

    def noise(x):
        return torch.randn(len(x), 4, 8, 8, generator=g)

    assert ldm_tool.latent_colour_r2(Latent(chroma), images,
                                     scenes) == pytest.approx(
                                         1.0, abs=1e-4)
    assert ldm_tool.latent_colour_r2(Latent(noise), images, scenes) < 0.2

    # outside the boxes the latent may be anything
    def half(x):
        z = chroma(x)
        z[..., 4:] = torch.randn(z[..., 4:].shape, generator=g)
        return z

    assert ldm_tool.latent_colour_r2(Latent(half), images,
                                     scenes) == pytest.approx(
                                         1.0, abs=1e-4)


def test_scaling_factor_whitens_the_latents(ldm_tool):
    mean = torch.randn(6, 4, 5, 5) * 3 + 1
    std = torch.full_like(mean, 2.0)
    sf = ldm_tool.latent_scaling_factor(mean, std)
    z = (mean + std * torch.randn(50, *mean.shape)) * sf
    assert float(z.std()) == pytest.approx(1.0, abs=0.05)


# -------------------------------------------------------- attention mass
def test_attention_mass_on_hand_made_maps(mass_tool):
    box = np.array([[8, 8, 24, 24]])  # 16 x 16 of a 32 x 32 image
    inside = torch.zeros(4, 4)
    inside[1:3, 1:3] = 1.0  # the cells of the box
    res = mass_tool.attention_mass(inside, box, (32, 32))
    assert res['area_fraction'] == pytest.approx(0.25)
    assert res['mass_inside'] == pytest.approx(1.0)
    assert res['ratio'] == pytest.approx(4.0)  # 1 / area fraction

    res = mass_tool.attention_mass(torch.full((4, 4), 0.3), box, (32, 32))
    assert res['ratio'] == pytest.approx(1.0)

    outside = 1.0 - inside
    assert mass_tool.attention_mass(outside, box, (32, 32))['ratio'] == 0.0

    # padding (rows below a 24-pixel-high image) is left out: the last map
    # row covers only padding
    res = mass_tool.attention_mass(
        torch.cat([torch.full((3, 4), 0.1),
                   torch.full((1, 4), 9.0)]), np.array([[0, 0, 16, 24]]),
        (24, 32))
    assert res['area_fraction'] == pytest.approx(0.5)
    assert res['ratio'] == pytest.approx(1.0)

    assert math.isnan(
        mass_tool.attention_mass(inside, np.zeros((0, 4)), (32, 32))['ratio'])


def test_attention_mass_tool_on_the_tiny_sd(mass_tool, tiny_sd_dir, described,
                                            tmp_path):
    from mmpsearch.models.backbones.stable_diffusion import \
        StableDiffusionBackbone

    # the normalised map is the one DGRPN gets from forward()
    backbone = StableDiffusionBackbone(tiny_sd_dir)
    backbone.eval()
    scenes = mass_tool.load_scenes(described[False], 'gallery', 1)
    img = mass_tool.load_image(scenes[0][0])
    assert img.shape[-2:] == (128, 128)
    maps = mass_tool.person_maps(backbone, img)
    with torch.no_grad():
        torch.testing.assert_close(maps['normalised'],
                                   backbone(img)['attn_map'][0, 0])
    assert maps['prob'].min() >= 0 and maps['prob'].max() <= 1

    out = tmp_path / 'mass'
    before = tree_digest(described[False])
    report = mass_tool.main([
        described[False], '--sd-paths', tiny_sd_dir, '--labels', 'random',
        '--num-images', '2', '--show', '2', '--out-dir',
        str(out)
    ])
    summary = report['models']['random']['summary']['prob']
    assert summary['images'] == 2
    assert 0 < summary['area_fraction'] < 1
    assert math.isfinite(summary['pooled_ratio'])
    assert (out / 'attention_maps.png').stat().st_size > 1000
    assert tree_digest(described[False]) == before  # the scenes are only read
    with open(out / 'attention_mass.json') as f:
        assert json.load(f)['images'] == report['images']
    with pytest.raises(SystemExit, match='--overwrite'):
        mass_tool.main([
            described[False], '--sd-paths', tiny_sd_dir, '--out-dir',
            str(out)
        ])
