# Copyright (c) mmpsearch contributors. All rights reserved.
"""What ``--amp`` and the device must not change in the Stable Diffusion
backbone of DiffPS (Kim et al., ICCV 2025): the "person" attention map is
computed in fp32 under autocast, and the eval-time noise of a ``noise_seed``
is drawn on the CPU whatever device the image is on (as diffusers'
``randn_tensor`` does with a CPU generator), so a checkpoint gives the same
features on a CPU and a GPU."""
import pytest
import torch
from diffusers.models.attention_processor import Attention

from mmpsearch.models.backbones.stable_diffusion import StableDiffusionBackbone
from mmpsearch.models.layers.unet_feature_tap import PersonCrossAttnProcessor
from ..conftest import query_key_outputs

H, W = 128, 192
HEAD, TOKEN = 1, 1


def _cross_attention():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8)
    store = {}
    attn.set_processor(PersonCrossAttnProcessor(HEAD, TOKEN, store))
    # large enough logits that a bf16 rounding of them shows in the softmax
    hidden = 4 * torch.randn(2, 24, 16)
    context = 4 * torch.randn(2, 5, 12)
    return attn, store, hidden, context


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_attention_map_is_fp32_under_autocast(dtype):
    """Under ``torch.autocast`` (``--amp``) the projections run in low
    precision, but the logits and their softmax stay fp32: the map equals
    the fp32 softmax of the projections autocast produced."""
    attn, store, hidden, context = _cross_attention()
    with query_key_outputs(attn) as seen, torch.no_grad(), \
            torch.autocast('cpu', dtype=dtype):
        out = attn(hidden, encoder_hidden_states=context)
    assert seen['q'].dtype == dtype  # autocast is on for the projections
    assert out.dtype == dtype
    got = store['attn_map']
    assert got.dtype == torch.float32
    b, n, c = seen['q'].shape
    d = c // attn.heads
    q = seen['q'].float().view(b, n, attn.heads, d)[:, :, HEAD]
    k = seen['k'].float().view(b, -1, attn.heads, d)[:, :, HEAD]
    expected = torch.softmax(q @ k.transpose(1, 2) * attn.scale, dim=-1)
    torch.testing.assert_close(got, expected[..., TOKEN], rtol=1e-5, atol=1e-6)


def _meta_forward(backbone, img, monkeypatch):
    """Run ``backbone`` on ``img`` moved to the 'meta' device, standing in
    for a GPU on a CPU machine. Returns every ``torch.randn`` call as
    (generator device, draw device, the CPU draw or None)."""
    calls = []
    randn = torch.randn

    def spy(*args, generator=None, device=None, **kwargs):
        out = randn(*args, generator=generator, device=device, **kwargs)
        gen_device = None if generator is None else generator.device.type
        draw = out.clone() if out.device.type == 'cpu' else None
        calls.append((gen_device, out.device.type, draw))
        return out

    monkeypatch.setattr(torch, 'randn', spy)
    # meta tensors have no values: skip the [-1, 1] range check
    monkeypatch.setattr(torch.Tensor, '__float__', lambda self: 0.0)
    backbone.to('meta')
    try:
        backbone(img.to('meta'))
    except (NotImplementedError, RuntimeError):
        pass  # an op without a meta kernel; the draws are checked below
    finally:
        monkeypatch.undo()
    return calls


def test_eval_noise_is_drawn_on_the_cpu_whatever_the_device(
        tiny_sd_dir, monkeypatch):
    """The posterior sample and the forward noise of an image on another
    device are the CPU draws of a CPU generator seeded with noise_seed
    (today's code made the generator on the image's device)."""
    backbone = StableDiffusionBackbone(tiny_sd_dir, noise_seed=7).eval()
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    calls = _meta_forward(backbone, img, monkeypatch)
    # per image: the posterior draw, then the noise (diffusers' img2img)
    assert len(calls) == 4, calls
    assert [c[:2] for c in calls] == [('cpu', 'cpu')] * 4
    shape = (1, 4, H // 8, W // 8)
    ref = torch.Generator().manual_seed(7)
    posterior = torch.randn(shape, generator=ref)
    noise = torch.randn(shape, generator=ref)
    for i in range(2):  # every image its own generator
        torch.testing.assert_close(calls[i][2], posterior, rtol=0, atol=0)
        torch.testing.assert_close(calls[2 + i][2], noise, rtol=0, atol=0)
