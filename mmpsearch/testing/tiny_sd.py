# Copyright (c) mmpsearch contributors. All rights reserved.
"""A tiny, randomly initialised Stable Diffusion folder for tests and the
synthetic config.

It has the block structure of SD 2.1 (four UNet levels: three
``CrossAttnDownBlock2D`` + ``DownBlock2D`` down, ``UpBlock2D`` + three
``CrossAttnUpBlock2D`` up, ``layers_per_block=2`` so every up block holds
three transformer blocks, linear projections, per-level head counts like
2.1's ``attention_head_dim``), so every layer name of the DiffPS config
exists, but channels of 32-64 and a 2-layer text encoder of width 32. The
tokenizer is a hand-made CLIP BPE vocabulary that knows the words the
prompts use.
"""
import json
import os
import os.path as osp
from typing import Iterable

import torch

# Words that become single tokens (prompt and SFAN body parts).
TINY_SD_WORDS = ('person', 'head', 'shirts', 'pants', 'shoes', 'a', 'photo',
                 'of')

# Stable Diffusion 2.1-base, unet/config.json
SD21_BASE_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'CrossAttnDownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn='silu',
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    dual_cross_attention=False,
    use_linear_projection=True,
    only_cross_attention=False,
    upcast_attention=False,
    num_class_embeds=None,
)

# SD 2.1-base's UNet (its blocks, layer names and linear projections) at a
# test's size: an 8 x 8 latent, 32-64 channels, 16 channels a head (2.1:
# 64; diffusers' ``attention_head_dim`` is the number of heads per level)
TINY_UNET_CONFIG = dict(
    SD21_BASE_UNET_CONFIG,
    sample_size=8,
    block_out_channels=(32, 48, 64, 64),
    attention_head_dim=(2, 3, 4, 4),
    cross_attention_dim=32,
    norm_num_groups=16)

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.18215,
)


def _bytes_to_unicode() -> dict:
    """CLIP's reversible byte -> printable character table."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    return bytes_to_unicode()


def _apply_merges(symbols: list, ranks: dict) -> list:
    """Byte-pair encoding of one word: merge the adjacent pair of the lowest
    rank, all its occurrences, until no pair has a rank."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p), p) for p in zip(symbols, symbols[1:])]
        known = [rp for rp in pairs if rp[0] is not None]
        if not known:
            break
        first, second = min(known)[1]
        merged, k = [], 0
        while k < len(symbols):
            if (k + 1 < len(symbols) and symbols[k] == first
                    and symbols[k + 1] == second):
                merged.append(first + second)
                k += 2
            else:
                merged.append(symbols[k])
                k += 1
        symbols = merged
    return symbols


def write_tiny_clip_tokenizer(out_dir: str,
                              words: Iterable[str] = TINY_SD_WORDS) -> None:
    """Write ``vocab.json`` / ``merges.txt`` of a CLIP BPE tokenizer whose
    merges turn each of ``words`` into one token; any other text falls back
    to single characters."""
    os.makedirs(out_dir, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + '</w>', len(vocab))
    merges = []
    ranks: dict = {}
    for word in words:
        # what the merges so far make of the word (a pair that an earlier
        # word merges, e.g. p+e of "person" in "stripes", is merged first),
        # then merge those pieces left to right: p+e, pe+r, ... ,
        # perso+n</w>. New merges rank after all earlier ones, so earlier
        # words still end as one token.
        symbols = _apply_merges(list(word[:-1]) + [word[-1] + '</w>'], ranks)
        cur = symbols[0]
        for sym in symbols[1:]:
            pair = (cur, sym)
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            cur = cur + sym
            vocab.setdefault(cur, len(vocab))
        vocab.setdefault(symbols[0] if len(symbols) == 1 else cur, len(vocab))
    vocab.setdefault('<|startoftext|>', len(vocab))
    vocab.setdefault('<|endoftext|>', len(vocab))
    with open(osp.join(out_dir, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(osp.join(out_dir, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n')
        for a, b in merges:
            f.write(f'{a} {b}\n')


def make_tiny_sd(out_dir: str,
                 seed: int = 0,
                 words: Iterable[str] = TINY_SD_WORDS) -> str:
    """Write a tiny random Stable Diffusion folder (diffusers layout:
    ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``) to ``out_dir`` and return it.

    ``words`` are the words the tokenizer keeps as single tokens (the text
    encoder's vocabulary grows with them); the default gives the folder of
    the tests."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)

    tok_dir = osp.join(out_dir, 'tokenizer')
    words = tuple(dict.fromkeys(words))
    write_tiny_clip_tokenizer(tok_dir, words)
    tokenizer = CLIPTokenizer(
        osp.join(tok_dir, 'vocab.json'),
        osp.join(tok_dir, 'merges.txt'),
        model_max_length=77)
    for word in words:
        ids = tokenizer(word).input_ids
        if len(ids) != 3:  # start, word, end
            raise RuntimeError(f'tiny tokenizer splits "{word}" into {ids}')
    tokenizer.save_pretrained(tok_dir)

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    CLIPTextModel(text_config).save_pretrained(
        osp.join(out_dir, 'text_encoder'))

    UNet2DConditionModel(**TINY_UNET_CONFIG).save_pretrained(
        osp.join(out_dir, 'unet'))
    AutoencoderKL(**TINY_VAE_CONFIG).save_pretrained(osp.join(out_dir, 'vae'))
    DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule='scaled_linear',
        clip_sample=False,
        prediction_type='epsilon').save_pretrained(
            osp.join(out_dir, 'scheduler'))

    import diffusers
    model_index = {
        '_class_name': 'StableDiffusionPipeline',
        '_diffusers_version': diffusers.__version__,
        'feature_extractor': [None, None],
        'requires_safety_checker': False,
        'safety_checker': [None, None],
        'scheduler': ['diffusers', 'DDPMScheduler'],
        'text_encoder': ['transformers', 'CLIPTextModel'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['diffusers', 'UNet2DConditionModel'],
        'vae': ['diffusers', 'AutoencoderKL'],
    }
    with open(osp.join(out_dir, 'model_index.json'), 'w') as f:
        json.dump(model_index, f, indent=2)
    return out_dir
