# Copyright (c) mmpsearch contributors. All rights reserved.
"""Write a tiny, randomly initialised Stable Diffusion folder (diffusers
layout, SD 2.1 block structure) for tests and the synthetic DiffPS config::

    python tools/misc/make_tiny_sd.py work_dirs/tiny_sd

See :mod:`mmpsearch.testing.tiny_sd` for what is in it.
"""
import argparse
import os.path as osp

from mmpsearch.utils.cli_args import add_force_arg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'out', help='folder to write (created): new or empty, unless --force')
    parser.add_argument('--seed', type=int, default=0, help='weight seed')
    add_force_arg(
        parser,
        help='write into a non-empty OUT (e.g. a real Stable Diffusion '
        'folder), overwriting its files')
    args = parser.parse_args()
    # after parsing: --help answers without the slow imports (torch)
    from mmpsearch.testing.tiny_sd import make_tiny_sd
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_nonempty_dir
    with exit_on_refusal():
        refuse_nonempty_dir(args.out, 'OUT', args.force)
    out = make_tiny_sd(args.out, seed=args.seed)
    print(f'tiny Stable Diffusion written to {osp.abspath(out)}')


if __name__ == '__main__':
    main()
