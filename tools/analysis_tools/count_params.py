# Copyright (c) mmpsearch contributors. All rights reserved.
"""Trainable parameters of a model config, part by part, without building
the parts named by ``--skip`` (for DiffPS the frozen Stable Diffusion
backbone, whose weights are not needed to count the trainable rest)::

    python tools/analysis_tools/count_params.py \\
        configs/diffps/diffps_sd21_cuhk.py --skip backbone

Every entry of ``model`` that is a config with a ``type`` (backbone, neck,
heads, losses, ...) is built on its own with random weights (no pretrained
checkpoint is loaded) and its parameters that require a gradient are
counted. Stable Diffusion is frozen and kept out of the module tree, so it
adds nothing either way; ``--skip backbone`` only avoids loading it.
"""
import argparse
from typing import Dict, Sequence

from mmengine.config import Config, ConfigDict

from mmpsearch.utils.cli_args import add_cfg_options_arg


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Trainable parameters of a model config, part by part')
    parser.add_argument('config', help='model config file')
    parser.add_argument(
        '--skip',
        nargs='*',
        default=[],
        help='model entries not to build (e.g. backbone)')
    add_cfg_options_arg(
        parser, help='override settings of the config, as in tools/train.py')
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmpsearch.registry import MODELS  # noqa: E402
from mmpsearch.utils import register_all_modules  # noqa: E402
from mmpsearch.utils.config import load_config  # noqa: E402


def count_parts(cfg: Config, skip: Sequence[str] = ()) -> Dict[str, int]:
    """Trainable parameters of each buildable entry of ``cfg.model``."""
    model = cfg.model
    unknown = set(skip) - set(model)
    if unknown:
        raise KeyError(f'--skip names {sorted(unknown)}, which the config\'s '
                       f'model does not have; its entries: {sorted(model)}')
    counts = {}
    for name, part in model.items():
        if name in skip or not isinstance(part, (dict, ConfigDict)) or \
                'type' not in part or name == 'data_preprocessor':
            continue
        part = ConfigDict(part)
        part.pop('init_cfg', None)  # no pretrained download to count
        if name in ('roi_head', 'rpn_head'):
            # their train/test settings live at the model level
            key = 'rcnn' if name == 'roi_head' else 'rpn'
            part.setdefault('train_cfg', None)
            part.setdefault('test_cfg', model.get('test_cfg', {}).get(key))
        module = MODELS.build(part)
        counts[name] = sum(p.numel() for p in module.parameters()
                           if p.requires_grad)
    return counts


def main() -> None:
    args = parse_args()
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    counts = count_parts(cfg, args.skip)
    width = max(len(k) for k in counts)
    for name, n in counts.items():
        print(f'{name:<{width}}  {n:>12,d}')
    print(f'{"total":<{width}}  {sum(counts.values()):>12,d}')
    if args.skip:
        print(f'(not built: {", ".join(args.skip)})')


if __name__ == '__main__':
    main()
