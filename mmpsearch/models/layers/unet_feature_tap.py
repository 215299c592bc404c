# Copyright (c) mmpsearch contributors. All rights reserved.
"""Taps on a frozen diffusers UNet: the feature maps and the detection
guidance map of DiffPS.

Kim et al., "Leveraging Prior Knowledge of Diffusion Model for Person
Search", ICCV 2025, Sec. 3.2-3.3: the outputs of chosen self-attention
projections of the up-stage transformer blocks are the detection and ReID
features; the cross-attention probability of the word "person" guides the
detector (DGRPN). :class:`UNetFeatureTap` collects both during one UNet pass,
:class:`PersonCrossAttnProcessor` computes the probabilities on the one
cross-attention that needs them.
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# ``T[i][j]`` in the paper's notation is this diffusers module.
_SHORT_NAME = re.compile(r'^T\[(\d+)\]\[(\d+)\]\.(.+)$')


def expand_layer_name(name: str) -> str:
    """Turn the paper's ``T[i][j].attn1.to_k`` into the diffusers module
    name ``up_blocks.i.attentions.j.transformer_blocks.0.attn1.to_k``; full
    diffusers names pass unchanged."""
    match = _SHORT_NAME.match(name)
    if match is None:
        return name
    i, j, rest = match.groups()
    return f'up_blocks.{i}.attentions.{j}.transformer_blocks.0.{rest}'


class _StopUNet(Exception):
    """Raised by a hook once every wanted feature is captured, so the UNet
    pass ends there (nothing after the last needed layer is computed)."""


class PersonCrossAttnProcessor:
    """Attention processor that materialises the attention probabilities
    of one cross-attention layer and keeps the map of one head and one text
    token (the paper's detection guidance map M).

    It is installed on that single ``Attention`` module; all the others keep
    diffusers' fused SDPA processor. Written here because diffusers'
    explicit ``AttnProcessor`` does not expose the probabilities.
    """

    def __init__(self,
                 head: int,
                 token: int,
                 store: dict,
                 key: str = 'attn_map') -> None:
        self.head = head
        self.token = token
        self.store = store
        self.key = key

    def __call__(self,
                 attn: nn.Module,
                 hidden_states: Tensor,
                 encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None,
                 temb: Optional[Tensor] = None,
                 *args,
                 **kwargs) -> Tensor:
        if encoder_hidden_states is None:
            raise ValueError('PersonCrossAttnProcessor is meant for a '
                             'cross-attention layer (attn2), but got no '
                             'encoder_hidden_states.')
        b, n, _ = hidden_states.shape
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(
                encoder_hidden_states)
        q = attn.to_q(hidden_states)
        k = attn.to_k(encoder_hidden_states)
        v = attn.to_v(encoder_hidden_states)
        heads = attn.heads
        d = q.shape[-1] // heads
        q = q.view(b, n, heads, d).transpose(1, 2)
        k = k.view(b, -1, heads, d).transpose(1, 2)
        v = v.view(b, -1, heads, d).transpose(1, 2)
        # Logits and softmax in fp32, also under autocast (``--amp``): an
        # fp32 ``matmul`` inside an autocast region is recast to fp16 / bf16,
        # which would quantise the map (DiffPS's detection guidance M).
        with torch.autocast(device_type=q.device.type, enabled=False):
            logits = torch.matmul(q.float(), k.float().transpose(-1, -2))
            logits = logits * attn.scale
            if attention_mask is not None:
                mask = attn.prepare_attention_mask(attention_mask, k.shape[2],
                                                   b)
                logits = logits + mask.view(b, heads, -1,
                                            mask.shape[-1]).float()
            probs = logits.softmax(dim=-1, dtype=torch.float32)
        self.store[self.key] = probs[:, self.head, :, self.token]
        out = torch.matmul(probs.to(v.dtype), v)
        out = out.transpose(1, 2).reshape(b, n, heads * d)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        return out / attn.rescale_output_factor


class UNetFeatureTap:
    """Taps a diffusers UNet: forward hooks turn the outputs of chosen
    self-attention projections into maps, :class:`PersonCrossAttnProcessor`
    on one cross-attention keeps one probability map, and a hook ends the
    pass once everything is captured.

    Plain hooks rather than a UNet subclass, so any ``UNet2DConditionModel``
    (any SD version, loaded or built) can be tapped. Hooks are inert outside
    :meth:`__call__`.

    Args:
        unet: A diffusers ``UNet2DConditionModel``.
        feat_layers (Sequence[str]): ``attn1.to_q/to_k/to_v`` module names.
        attn_map_layer (str): A cross-attention (``attn2``) module name.
        attn_map_head (int): Head of the kept map.
        attn_map_token (int): Text token of the kept map.
        stop_early (bool): End the pass after the last captured layer.
    """

    def __init__(self,
                 unet: nn.Module,
                 feat_layers: Sequence[str],
                 attn_map_layer: str,
                 attn_map_head: int = 1,
                 attn_map_token: int = 1,
                 stop_early: bool = True) -> None:
        from diffusers.models.attention_processor import Attention
        self.unet = unet
        self.feat_layers = list(dict.fromkeys(feat_layers))
        self.attn_map_layer = attn_map_layer
        self.stop_early = stop_early
        self._store: Dict[str, Tensor] = {}
        self._sizes: Dict[str, Tuple[int, int]] = {}
        self._capturing = False
        self.handles: list = []

        modules = dict(unet.named_modules())
        for name in self.feat_layers:
            if name not in modules:
                raise ValueError(
                    f'UNet layer "{name}" does not exist in the UNet '
                    '(expected e.g. up_blocks.3.attentions.0.'
                    'transformer_blocks.0.attn1.to_k or T[3][0].attn1.to_k)')
            if name.rsplit('.', 1)[-1] not in ('to_q', 'to_k', 'to_v'):
                raise ValueError(f'UNet layer "{name}" is not an attention '
                                 'projection (to_q / to_k / to_v).')
            if name.split('.')[-2] != 'attn1':
                raise ValueError(
                    f'UNet layer "{name}": only self-attention (attn1) '
                    'projections have one token per pixel.')
        attn = modules.get(attn_map_layer)
        if not isinstance(attn, Attention) or not attn.is_cross_attention:
            raise ValueError(f'attn_map_layer "{attn_map_layer}" is not a '
                             'cross-attention module of the UNet.')
        if not 0 <= attn_map_head < attn.heads:
            raise ValueError(f'attn_map_head={attn_map_head} but '
                             f'"{attn_map_layer}" has {attn.heads} heads')
        self.map_attention = attn
        attn.set_processor(
            PersonCrossAttnProcessor(
                attn_map_head, attn_map_token, self._store, key='attn_map'))
        self._needed = set(self.feat_layers) | {'attn_map'}

        self.owners = {
            n: self._owner_transformer(modules, n)
            for n in self.feat_layers + [attn_map_layer]
        }
        for owner in set(self.owners.values()):
            self.handles.append(modules[owner].register_forward_pre_hook(
                self._make_size_hook(owner)))
        for name in self.feat_layers:
            self.handles.append(modules[name].register_forward_hook(
                self._make_feat_hook(name, self.owners[name])))
        # the map is stored by the processor; check completeness after it
        self.handles.append(attn.register_forward_hook(self._make_done_hook()))

    @staticmethod
    def _owner_transformer(modules: dict, name: str) -> str:
        """Name of the Transformer2DModel that holds ``name``; its input
        gives the spatial size of the tokens."""
        from diffusers.models.transformers.transformer_2d import \
            Transformer2DModel
        parts = name.split('.')
        for end in range(len(parts) - 1, 0, -1):
            prefix = '.'.join(parts[:end])
            if isinstance(modules.get(prefix), Transformer2DModel):
                return prefix
        raise ValueError(f'UNet layer "{name}" is not inside a transformer '
                         '(Transformer2DModel) block of the UNet.')

    def _make_size_hook(self, owner: str):

        def hook(module, args):
            if self._capturing:
                self._sizes[owner] = tuple(args[0].shape[-2:])

        return hook

    def _make_feat_hook(self, name: str, owner: str):

        def hook(module, args, output):
            if not self._capturing:
                return None
            h, w = self._sizes[owner]
            b, n, c = output.shape
            if n != h * w:
                raise RuntimeError(f'{name}: {n} tokens for a {h}x{w} map')
            # tokens are row-major over (H, W), see Transformer2DModel. The
            # permuted view is channels-last; mmcv's RoIAlign (CPU and CUDA
            # kernels) indexes its input as contiguous NCHW without checking,
            # so the map is made contiguous here.
            fmap = output.reshape(b, h, w, c).permute(0, 3, 1, 2)
            self._store[name] = fmap.contiguous()
            self._check_done()
            return None

        return hook

    def _make_done_hook(self):

        def hook(module, args, output):
            if self._capturing:
                self._check_done()
            return None

        return hook

    def _check_done(self) -> None:
        if self.stop_early and self._needed.issubset(self._store.keys()):
            raise _StopUNet

    def __call__(self, latent: Tensor, timestep: Tensor,
                 cond: Tensor) -> Dict[str, Tensor]:
        """One UNet pass. Returns the maps by layer name and ``attn_map``
        (B, 1, h, w): the raw probabilities of the token in the head."""
        self._store.clear()
        self._sizes.clear()
        self._capturing = True
        try:
            self.unet(latent, timestep, encoder_hidden_states=cond)
        except _StopUNet:
            pass
        finally:
            self._capturing = False
        missing = self._needed - set(self._store)
        if missing:
            raise RuntimeError('UNet pass ended without capturing '
                               f'{sorted(missing)}')
        out = dict(self._store)
        h, w = self._sizes[self.owners[self.attn_map_layer]]
        out['attn_map'] = out['attn_map'].reshape(-1, 1, h, w).contiguous()
        self._store.clear()
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
