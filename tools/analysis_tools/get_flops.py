# Copyright (c) mmpsearch contributors. All rights reserved.
"""Parameters and FLOPs of PSDiff: backbone + neck (run once per image) and
one step of the CDL head (run k times)::

    python tools/analysis_tools/get_flops.py configs/psdiff/psdiff_r50_cuhk.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 800 1333 \\
        --steps 1 2 4 8

Operations are counted by mmengine's ``FlopAnalyzer`` on a jit trace with
random weights and inputs. It counts multiply-adds (MACs, fvcore's
convention); the GFLOPs column is 2 x MACs, the convention under which
PSDiff's Table I gives 301 G for 1 step at 1333x800 (ResNet-50 + FPN alone
is ~2 x 148 G here). The k-step total is ``backbone+neck + k * head step``.
"""
import argparse
from math import prod
from typing import Any, List

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_shape_arg,
                                      add_steps_arg)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs of PSDiff (backbone+neck, one CDL '
        'step)')
    parser.add_argument('config', help='model config file')
    add_shape_arg(parser)
    add_steps_arg(parser, help='step counts for the total column')
    add_cfg_options_arg(
        parser,
        help='override config keys, e.g. model.test_cfg.num_proposals=100')
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.analysis import FlopAnalyzer, parameter_count  # noqa: E402
from mmengine.analysis.jit_handles import get_shape  # noqa: E402

from mmpsearch.models.roi_extractors import RoIFeatureTable  # noqa: E402
from mmpsearch.registry import MODELS  # noqa: E402
from mmpsearch.utils import register_all_modules  # noqa: E402
from mmpsearch.utils.config import load_config  # noqa: E402


def _embedding_bag_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # Weighted sum of gathered rows: one multiply-add per index and channel.
    weight, indices = get_shape(inputs[0]), get_shape(inputs[1])
    return prod(indices) * weight[1]


def _mha_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # torch's fused nn.MultiheadAttention: q/k/v and output projections plus
    # the two attention products.
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch, len_q, dim = q[0], q[1], q[2]
    len_k = k[1]
    return batch * (2 * len_q * dim * dim + 2 * len_k * dim * dim +
                    2 * len_q * len_k * dim)


class _BackboneNeck(nn.Module):

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.extract_feat(x)


class _HeadStep(nn.Module):
    """One CDL pass on prepared features (a sampling step runs
    ``test_cfg.num_passes`` of them)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *args):
        if hasattr(self.head.roi_extractor, 'prepare'):
            feats = RoIFeatureTable(*args[:4])
            rest = args[4:]
        else:
            feats = args[:self.head.num_levels]
            rest = args[self.head.num_levels:]
        out = self.head(feats, *rest)
        return out['cls_scores'], out['bboxes'], out['embeds']


def _count(module: nn.Module, inputs) -> int:
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.set_op_handle('aten::embedding_bag', _embedding_bag_flops)
    analyzer.set_op_handle('aten::_native_multi_head_attention', _mha_flops)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return int(analyzer.total())


def main() -> None:
    args = parse_args()
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    cfg.model.backbone.init_cfg = None  # random weights, nothing to load
    model = MODELS.build(cfg.model).eval()
    h, w = args.shape
    n = int(model.test_cfg.num_proposals)
    head = model.bbox_head.denoiser  # the one CDL every step runs

    params = parameter_count(model)
    p_bb = sum(v for k, v in params.items() if k in ('backbone', 'neck'))
    p_head = params['bbox_head.denoiser']
    with torch.no_grad():
        x = torch.randn(1, 3, h, w)
        f_bb = _count(_BackboneNeck(model), (x, ))
        feats = model.extract_feat(x)
        prepared = head.prepare(feats)
        xy = torch.rand(1, n, 2) * torch.tensor([w, h]) * 0.8
        wh = torch.rand(1, n, 2) * torch.tensor([w, h]) * 0.2 + 8
        boxes = torch.cat([xy, xy + wh], dim=-1)
        embeds = torch.randn(1, n, head.embed_dims)
        t = torch.tensor([500])
        f_pass = _count(_HeadStep(head), (*prepared, boxes, embeds, t))
    # a step chains test_cfg.num_passes passes of (a layer like) this CDL
    passes = model.bbox_head.passes_per_step()
    f_head = passes * f_pass

    print(f'{args.config}: input {h}x{w}, N = {n} proposals')
    print(f'{"part":<34} {"params (M)":>11} {"GMACs":>9} {"GFLOPs":>9}')
    for name, p, f in (('backbone + neck (once)', p_bb, f_bb),
                       (f'CDL head, one step ({passes} pass'
                        f'{"es" if passes > 1 else ""})', p_head, f_head)):
        print(f'{name:<34} {p / 1e6:>11.2f} {f / 1e9:>9.2f} '
              f'{2 * f / 1e9:>9.2f}')
    print(f'{"whole model":<34} {params[""] / 1e6:>11.2f}')
    print('k-step search (backbone + neck once, k head steps):')
    for k in args.steps:
        total = f_bb + k * f_head
        extra = (total - f_bb - f_head) / (f_bb + f_head) * 100
        print(f'  {k} step(s): {total / 1e9:8.2f} GMACs '
              f'{2 * total / 1e9:8.2f} GFLOPs  (+{extra:.1f}% over 1 step)')


if __name__ == '__main__':
    main()
