# Copyright (c) mmpsearch contributors. All rights reserved.
"""Peak memory and time of the DiffPS Stable Diffusion feature extraction:
our way against every attention made explicit, as the public code does.

A full-size SD 2.1-base UNet is built from its config
(``mmpsearch.testing.tiny_sd.SD21_BASE_UNET_CONFIG``; random
weights, nothing is downloaded) and the DiffPS features (7 ReID maps, the K
map and the "person" cross-attention map, Kim et al.) are extracted once
from a latent of a ``--size`` x ``--size`` image, on the CPU in fp32, in two
separate subprocesses:

- ``ours``: every attention fused (diffusers ``AttnProcessor2_0``, SDPA);
  only ``T[3][0].attn2`` materialises its probabilities (one map kept), and
  the pass stops right after ``T[3][1].attn1.to_k``
  (:class:`~mmpsearch.models.layers.unet_feature_tap.UNetFeatureTap`,
  as ``StableDiffusionBackbone`` runs it);
- ``explicit``: every attention through diffusers' ``AttnProcessor``, which
  materialises the (heads, tokens, tokens) probabilities, and the whole UNet
  runs, as the public DiffPS code does.

The VAE is skipped in both (it is the same in both ways and is not what
differs): the UNet starts from a random latent of the right size
(``--size / 8``). Peak memory is the peak resident set size of the
subprocess during the extraction minus its resident size just before it
(the UNet weights, ~3.3 GiB, are in both and excluded): the kernel's peak
counter is reset right before the pass (``/proc/self/clear_refs``) and read
from ``VmHWM`` after it. The features of both ways are compared.

    python tools/analysis_tools/benchmark_sd_memory.py [--size 768]

Needs about 3.5 GiB + the explicit way's peak (~5-6 GiB at 768) of free RAM
and a few minutes of CPU.
"""
import argparse
import gc
import json
import os.path as osp
import subprocess
import sys
import tempfile
import time

from mmpsearch.utils.cli_args import add_timestep_arg

# DiffPS layers, as in configs/_base_/models/diffps_sd21.py
FEATURE_LAYERS = ('T[1][2].attn1.to_q', 'T[2][1].attn1.to_v',
                  'T[2][2].attn1.to_q', 'T[3][0].attn1.to_q',
                  'T[3][0].attn1.to_k', 'T[3][0].attn1.to_v',
                  'T[3][1].attn1.to_k')
MAP_LAYER = 'T[3][0].attn2'


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def worker(mode: str, size: int, timestep: int, threads: int,
           out_file: str) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import (AttnProcessor,
                                                      AttnProcessor2_0)

    from mmpsearch.models.layers.unet_feature_tap import (UNetFeatureTap,
                                                          expand_layer_name)
    from mmpsearch.testing.tiny_sd import SD21_BASE_UNET_CONFIG

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG).eval()
    unet.requires_grad_(False)
    n_params = sum(p.numel() for p in unet.parameters())
    unet.set_attn_processor(AttnProcessor2_0() if mode ==
                            'ours' else AttnProcessor())
    tap = UNetFeatureTap(
        unet, [expand_layer_name(n) for n in FEATURE_LAYERS],
        expand_layer_name(MAP_LAYER),
        attn_map_head=1,
        attn_map_token=1,
        stop_early=(mode == 'ours'))
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=g)
    cond = torch.randn(1, 77, 1024, generator=g)
    t = torch.tensor([timestep])

    gc.collect()
    before = _rss_kib('VmRSS')
    exact = _reset_peak()
    start = time.perf_counter()
    with torch.no_grad():
        out = tap(latent, t, cond)
    seconds = time.perf_counter() - start
    peak = _rss_kib('VmHWM')
    torch.save({k: v.clone() for k, v in out.items()}, out_file)
    print(
        json.dumps(
            dict(
                mode=mode,
                params=n_params,
                rss_before_mib=before / 1024,
                peak_mib=peak / 1024,
                delta_mib=(peak - before) / 1024,
                peak_exact=exact,
                seconds=seconds,
                shapes={
                    k: list(v.shape)
                    for k, v in out.items()
                })),
        flush=True)


def run(mode: str, args, out_file: str) -> dict:
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--worker', mode, '--size',
        str(args.size), '--timestep',
        str(args.timestep), '--threads',
        str(args.threads), '--out-file', out_file
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f'the "{mode}" subprocess failed '
                         f'(exit code {res.returncode})')
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('{')]
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Peak memory / time of the DiffPS SD feature extraction')
    parser.add_argument('--size', type=int, default=768, help='image side')
    add_timestep_arg(parser, note='; memory does not depend on it')
    parser.add_argument(
        '--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument(
        '--modes',
        nargs='+',
        default=['ours', 'explicit'],
        choices=['ours', 'explicit'])
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--out-file', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size % 64:
        parser.error(f'--size {args.size} must be a multiple of 64')
    if args.worker:
        worker(args.worker, args.size, args.timestep, args.threads,
               args.out_file)
        return

    import torch
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            out_file = osp.join(tmp, f'{mode}.pth')
            results[mode] = run(mode, args, out_file)
            results[mode]['file'] = out_file
        print(f'SD 2.1-base UNet ({results[args.modes[0]]["params"] / 1e6:.0f}'
              f'M parameters, random weights, fp32, CPU), image '
              f'{args.size}x{args.size} -> latent {args.size // 8}x'
              f'{args.size // 8}, t={args.timestep}; VAE skipped (same in '
              'both ways)')
        print(f'{"way":<10}{"peak RSS delta":>16}{"peak RSS":>12}'
              f'{"time":>10}')
        for mode, r in results.items():
            print(f'{mode:<10}{r["delta_mib"]:>12.0f} MiB'
                  f'{r["peak_mib"]:>8.0f} MiB{r["seconds"]:>9.1f}s')
        if not all(r['peak_exact'] for r in results.values()):
            print('(peak counter could not be reset: the peak includes the '
                  'model construction)')
        if set(results) == {'ours', 'explicit'}:
            ours, expl = results['ours'], results['explicit']
            print(
                f'memory: {expl["delta_mib"] / max(ours["delta_mib"], 1):.1f}'
                f'x less with ours; time: '
                f'{expl["seconds"] / ours["seconds"]:.1f}x faster')
            a = torch.load(ours['file'], weights_only=True)
            b = torch.load(expl['file'], weights_only=True)
            diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            print(f'same features: max |ours - explicit| = {diff:.2e} over '
                  f'{len(a)} maps')


if __name__ == '__main__':
    main()
