# Copyright (c) mmpsearch contributors. All rights reserved.
"""Write a tiny, randomly initialised Stable Diffusion folder (diffusers
layout, SD 2.1 block structure) for tests and the synthetic DiffPS config::

    python tools/misc/make_tiny_sd.py work_dirs/tiny_sd

See :mod:`mmpsearch.models.backbones.tiny_sd` for what is in it.
"""
import argparse
import os.path as osp

from mmpsearch.models.backbones.tiny_sd import make_tiny_sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', help='folder to write (created)')
    parser.add_argument('--seed', type=int, default=0, help='weight seed')
    args = parser.parse_args()
    out = make_tiny_sd(args.out, seed=args.seed)
    print(f'tiny Stable Diffusion written to {osp.abspath(out)}')


if __name__ == '__main__':
    main()
