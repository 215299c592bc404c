# Copyright (c) mmpsearch contributors. All rights reserved.
"""Rename the weights of a checkpoint written by the unreleased 0.1.0 layout
so that the current PSDiff / DiffPS load it (mmdet's
``tools/model_converters/upgrade_model_version.py`` does the same for its
own moved modules)::

    python tools/model_converters/upgrade_checkpoint_0_1_0.py OLD.pth NEW.pth

The moves:

- PSDiff (``DiffusionPersonSearch`` with the CDL as ``head``): ``head.*`` ->
  ``bbox_head.denoiser.*`` (the reverse process moved into ``PSDiffHead``);
- DiffPS (the ReID branch on the detector): ``reid_roi_extractor.*`` ->
  ``reid_roi_head.roi_extractor.*``, ``reid_head.*`` ->
  ``reid_roi_head.embed_head.*``, ``reid_loss.*`` ->
  ``reid_roi_head.loss_reid.*``.

A current checkpoint holds none of the former prefixes and is written back
unchanged. Only the weights move: a config of that layout is replaced by the
current config file of the same model (``configs/psdiff``,
``configs/diffps``), not converted.
"""
import argparse
from collections import OrderedDict
from typing import Dict, Optional

from mmpsearch.utils.cli_args import add_force_arg

#: former prefix -> current prefix, each with its trailing dot
RENAMES = {
    'head.': 'bbox_head.denoiser.',
    'reid_roi_extractor.': 'reid_roi_head.roi_extractor.',
    'reid_head.': 'reid_roi_head.embed_head.',
    'reid_loss.': 'reid_roi_head.loss_reid.',
}


def _renamed(key: str) -> Optional[str]:
    for old, new in RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def upgrade_state_dict(state: Dict[str, object]) -> OrderedDict:
    """``state`` with the former keys renamed, in the same order (module
    metadata, which ``load_state_dict`` looks up by module name, too)."""
    out = OrderedDict()
    for key, value in state.items():
        new = _renamed(key)
        out[key if new is None else new] = value
    metadata = getattr(state, '_metadata', None)
    if metadata is not None:
        out._metadata = OrderedDict(
            ((_renamed(k + '.') or k + '.')[:-1] if k else k, v)
            for k, v in metadata.items())
    return out


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """A checkpoint (``{'state_dict': ..., 'meta': ...}`` or a bare state
    dict) with its weights renamed."""
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        return dict(
            checkpoint,
            state_dict=upgrade_state_dict(checkpoint['state_dict']))
    return upgrade_state_dict(checkpoint)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Rename the weights of a 0.1.0-layout checkpoint')
    parser.add_argument('src', help='the checkpoint to read')
    parser.add_argument('dst', help='where to write the renamed checkpoint')
    add_force_arg(parser, help='replace an existing DST')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # imported after parsing: --help stays fast
    import torch

    from mmpsearch.utils import safe_torch_load
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_existing_file
    if args.src == args.dst:
        raise SystemExit('upgrade_checkpoint_0_1_0: write to another file '
                         f'than {args.src}')
    with exit_on_refusal():
        refuse_existing_file(args.dst, 'dst', args.force)
    checkpoint = safe_torch_load(args.src, map_location='cpu')
    upgraded = upgrade_checkpoint(checkpoint)
    moved = sum(1 for k in checkpoint.get('state_dict', checkpoint)
                if _renamed(k) is not None)
    torch.save(upgraded, args.dst)
    print(f'{args.dst}: {moved} weights renamed')
    return 0


if __name__ == '__main__':
    main()
