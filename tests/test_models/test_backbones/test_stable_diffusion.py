# Copyright (c) mmpsearch contributors. All rights reserved.
import os
import os.path as osp

import pytest
import torch

from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.models.layers.unet_feature_tap import (PersonCrossAttnProcessor,
                                                      expand_layer_name)
from mmpsearch.testing.tiny_sd import TINY_UNET_CONFIG
from ..conftest import query_key_outputs

H, W = 128, 192  # non-square on purpose


def _images(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, H, W, generator=g) * 2 - 1


def _level_shape(i: int, b: int = 2):
    """(B, C, H, W) of up block i of the tiny UNet."""
    channels = list(reversed(TINY_UNET_CONFIG['block_out_channels']))[i]
    stride = 8 * 2**(3 - i)
    return (b, channels, H // stride, W // stride)


def _tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = tokens.shape
    return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)


def test_layer_shorthand():
    assert expand_layer_name('T[3][0].attn1.to_k') == \
        'up_blocks.3.attentions.0.transformer_blocks.0.attn1.to_k'
    full = 'up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q'
    assert expand_layer_name(full) == full


def test_feature_shapes(tiny_backbone):
    out = tiny_backbone(_images())
    assert out['det_feat'].shape == _level_shape(3)
    assert out['attn_map'].shape == (2, 1) + _level_shape(3)[2:]
    shapes = [[tuple(f.shape) for f in level] for level in out['reid_feats']]
    assert shapes == [[_level_shape(1)], [_level_shape(2)] * 2,
                      [_level_shape(3)] * 4]
    assert out['part_embeds'].shape == (4, 32)
    for t in [out['det_feat'], out['attn_map']]:
        assert t.dtype == torch.float32 and t.grad_fn is None


def test_features_are_the_projections_at_their_pixels(tiny_backbone):
    """Recompute T[3][0].attn1.to_k and T[2][1].attn1.to_v by hand from the
    transformer inputs: checks the token -> (H, W) layout on a non-square
    map."""
    unet = tiny_backbone.unet
    inputs = {}
    handles = []
    for i, j in [(3, 0), (2, 1)]:
        tr = unet.up_blocks[i].attentions[j]

        def hook(module, args, key=(i, j)):
            inputs[key] = args[0].detach().clone()

        handles.append(tr.register_forward_pre_hook(hook))
    try:
        out = tiny_backbone(_images())
    finally:
        for h in handles:
            h.remove()

    def manual(i, j, proj):
        tr = unet.up_blocks[i].attentions[j]
        x = inputs[(i, j)]
        b, c, h, w = x.shape
        t = tr.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        t = tr.proj_in(t)
        blk = tr.transformer_blocks[0]
        t = getattr(blk.attn1, proj)(blk.norm1(t))
        return _tokens_to_map(t, h, w)

    with torch.no_grad():
        torch.testing.assert_close(out['det_feat'], manual(3, 0, 'to_k'))
        torch.testing.assert_close(out['reid_feats'][1][0],
                                   manual(2, 1, 'to_v'))
        torch.testing.assert_close(out['reid_feats'][2][0],
                                   manual(3, 0, 'to_q'))


def test_attention_map_is_the_explicit_softmax(tiny_backbone):
    attn2 = tiny_backbone.unet.up_blocks[3].attentions[0] \
        .transformer_blocks[0].attn2
    with query_key_outputs(attn2) as cap:
        out = tiny_backbone(_images())
    heads = attn2.heads
    q, k = cap['q'], cap['k']
    b, n, c = q.shape
    d = c // heads
    # the public DiffPS code reads index 1 of the heads axis
    head = tiny_backbone.attn_map_head
    assert head == 1
    q0 = q.view(b, n, heads, d)[:, :, head]
    k0 = k.view(b, -1, heads, d)[:, :, head]
    probs = torch.softmax(q0 @ k0.transpose(1, 2) / d**0.5, dim=-1)
    m = probs[:, :, 1]  # token 1 = "person"
    m = (m - m.min(1, keepdim=True).values) / (
        m.max(1, keepdim=True).values - m.min(1, keepdim=True).values)
    expected = m.view(b, 1, H // 8, W // 8)
    torch.testing.assert_close(out['attn_map'], expected, atol=1e-5, rtol=1e-4)
    assert float(out['attn_map'].amin()) == 0.0
    assert float(out['attn_map'].amax()) == 1.0


def test_only_one_attention_is_explicit(tiny_backbone):
    kinds = [
        type(p).__name__ for p in tiny_backbone.unet.attn_processors.values()
    ]
    assert kinds.count(PersonCrossAttnProcessor.__name__) == 1
    assert set(kinds) == {'AttnProcessor2_0', 'PersonCrossAttnProcessor'}


def test_unet_pass_stops_after_last_needed_layer(tiny_backbone):
    unet = tiny_backbone.unet
    calls = {'last': 0, 'after': 0, 'conv_out': 0, 'next_block': 0}
    blk = unet.up_blocks[3].attentions[1].transformer_blocks[0]

    def counter(key):
        return lambda *args: calls.__setitem__(key, calls[key] + 1)

    handles = [
        # a pre-hook: the backbone's own hook on to_k ends the pass
        blk.attn1.to_k.register_forward_pre_hook(counter('last')),
        blk.attn1.to_v.register_forward_pre_hook(counter('after')),
        unet.conv_out.register_forward_hook(counter('conv_out')),
        unet.up_blocks[3].attentions[2].register_forward_hook(
            counter('next_block')),
    ]
    try:
        tiny_backbone(_images(1))
    finally:
        for h in handles:
            h.remove()
    assert calls == {'last': 1, 'after': 0, 'conv_out': 0, 'next_block': 0}


def test_frozen_and_hidden(tiny_backbone):
    sd_params = tiny_backbone.frozen_parameters()
    assert len(sd_params) > 0
    assert all(not p.requires_grad for p in sd_params)
    ids = {id(p) for p in sd_params}
    assert not any(id(p) in ids for p in tiny_backbone.parameters())
    assert len(list(tiny_backbone.parameters())) == 0
    assert tiny_backbone.state_dict() == {}
    tiny_backbone.train()
    try:
        assert not tiny_backbone.unet.training
        assert not tiny_backbone.vae.training
        with torch.enable_grad():
            out = tiny_backbone(_images(1))
        assert out['det_feat'].grad_fn is None
    finally:
        tiny_backbone.eval()


def test_to_moves_and_keeps_fp32_on_cpu(tiny_backbone):
    tiny_backbone.to(torch.float64)  # any _apply reaches the SD modules...
    try:
        # ...and the dtype policy puts them back to fp32 on the CPU
        assert tiny_backbone.frozen_dtype == torch.float32
    finally:
        tiny_backbone.to(torch.float32)


def test_input_checks(tiny_backbone):
    with pytest.raises(ValueError, match='divisible by 64'):
        tiny_backbone(torch.zeros(1, 3, 96, 128))
    with pytest.raises(ValueError, match=r'\[-1, 1\]'):
        tiny_backbone(torch.full((1, 3, 64, 64), 255.0))


def test_bad_layer_names(tiny_sd_dir):
    with pytest.raises(ValueError, match='up_blocks.3.attentions.7'):
        StableDiffusionBackbone(tiny_sd_dir, det_layer='T[3][7].attn1.to_k')
    with pytest.raises(ValueError, match='not an attention projection'):
        StableDiffusionBackbone(tiny_sd_dir, det_layer='T[3][0].attn1')
    with pytest.raises(ValueError, match='attn_map_head=9'):
        StableDiffusionBackbone(tiny_sd_dir, attn_map_head=9)


def test_noise_option_is_deterministic_in_eval(tiny_sd_dir, tiny_backbone):
    noisy = StableDiffusionBackbone(tiny_sd_dir, add_noise=True).eval()
    x = _images(1)
    a, b = noisy(x)['det_feat'], noisy(x)['det_feat']
    torch.testing.assert_close(a, b)
    plain = StableDiffusionBackbone(
        tiny_sd_dir, timestep=1, latent='mean', add_noise=False).eval()
    assert not torch.allclose(a, plain(x)['det_feat'])


def _fake_sd_folder(root: str, skip: str = '') -> str:
    files = [
        'unet/config.json', 'unet/diffusion_pytorch_model.safetensors',
        'vae/config.json', 'vae/diffusion_pytorch_model.safetensors',
        'text_encoder/config.json', 'text_encoder/model.safetensors',
        'tokenizer/vocab.json', 'tokenizer/merges.txt',
        'scheduler/scheduler_config.json'
    ]
    for f in files:
        if f.startswith(skip) and skip:
            continue
        os.makedirs(osp.join(root, osp.dirname(f)), exist_ok=True)
        open(osp.join(root, f), 'w').close()
    return root


def test_missing_weights_name_the_missing_part(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        StableDiffusionBackbone(str(tmp_path / 'nowhere'))
    for skip, expected in [
        ('unet/diffusion_pytorch_model', 'unet/diffusion_pytorch_model'),
        ('text_encoder/model', 'text_encoder/model.safetensors'),
        ('tokenizer', 'tokenizer/ \\(the whole subfolder\\)'),
        ('vae/config.json', 'vae/config.json'),
    ]:
        root = _fake_sd_folder(str(tmp_path / skip.replace('/', '_')), skip)
        with pytest.raises(FileNotFoundError, match=expected):
            StableDiffusionBackbone(root)
    # the scheduler is only needed when noise is added
    root = _fake_sd_folder(str(tmp_path / 'nosched'), 'scheduler')
    with pytest.raises(FileNotFoundError, match='scheduler/'):
        StableDiffusionBackbone(root, add_noise=True)


def test_token_index_must_be_a_word(tiny_sd_dir):
    with pytest.raises(ValueError, match='token index 2 is not a word'):
        StableDiffusionBackbone(tiny_sd_dir, attn_map_token=2)


def test_fp16_path_matches_fp32(tiny_sd_dir, tiny_backbone):
    # The GPU default is fp16; the same casts run on the CPU when forced.
    half = StableDiffusionBackbone(tiny_sd_dir, frozen_dtype='float16')
    half.eval()
    assert half.frozen_dtype == torch.float16
    assert all(p.dtype == torch.float16 for p in half.frozen_parameters())
    assert tiny_backbone.frozen_dtype == torch.float32  # 'auto' on the CPU
    img = _images()
    ref, out = tiny_backbone(img), half(img)
    for key in ('det_feat', 'attn_map'):
        assert out[key].dtype == torch.float32
        scale = float(ref[key].abs().max())
        torch.testing.assert_close(
            out[key], ref[key], atol=0.02 * scale, rtol=0)
    # the explicit map is still a min-max normalised softmax
    assert float(out['attn_map'].amin()) == 0.0
    assert float(out['attn_map'].amax()) == 1.0
    with pytest.raises(ValueError, match='frozen_dtype'):
        StableDiffusionBackbone(tiny_sd_dir, frozen_dtype='fp8')
