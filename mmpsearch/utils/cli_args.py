# Copyright (c) mmpsearch contributors. All rights reserved.
"""Command-line options that several tools (``tools/``, ``demo/``) share.

Standard library and mmengine's ``DictAction`` only: the tools build their
parsers before they import torch, so that ``--help`` answers at once
(``tests/test_tools/test_help_is_light.py``).
"""
from argparse import ArgumentParser, ArgumentTypeError
from typing import Optional, Sequence

from mmengine.config import DictAction

from .thresholds import check_unit_interval

#: The datasets the analysis tools read (``--dataset``).
DATASETS = ('cuhk', 'prw')


def add_model_args(parser: ArgumentParser, config_help: str,
                   checkpoint_help: str) -> None:
    """The model to load: positionals ``config`` and ``checkpoint``."""
    parser.add_argument('config', help=config_help)
    parser.add_argument('checkpoint', help=checkpoint_help)


def add_force_arg(parser: ArgumentParser,
                  help: Optional[str] = None,
                  flag: str = '--force') -> None:
    """A switch (default False) that lets the tool replace what it would
    refuse to overwrite; ``flag`` is the tool's name for it
    (``--force`` or ``--overwrite``)."""
    parser.add_argument(flag, action='store_true', help=help)


def add_json_args(
        parser: ArgumentParser,
        help: str = 'also write the figures to this (new) JSON file') -> None:
    """``--json FILE``, a JSON file of what the tool prints (None: none),
    and ``--force`` to overwrite an existing one (refused otherwise)."""
    parser.add_argument('--json', help=help)
    add_force_arg(parser, help='overwrite an existing --json file')


def add_cfg_options_arg(parser: ArgumentParser,
                        help: str,
                        as_strings: bool = False) -> None:
    """``--cfg-options KEY=VALUE ...`` merged into the config: a dict (None
    when not given), or with ``as_strings`` the ``KEY=VALUE`` strings as
    given (``[]`` when not given), for a tool that records them (an index
    manifest)."""
    if as_strings:
        parser.add_argument(
            '--cfg-options',
            nargs='+',
            default=[],
            metavar='KEY=VALUE',
            help=help)
    else:
        parser.add_argument(
            '--cfg-options', nargs='+', action=DictAction, help=help)


def add_steps_arg(parser: ArgumentParser,
                  help: str,
                  default: Sequence[int] = (1, 2, 4, 8)) -> None:
    """``--steps N ...``: sampling-step counts (default 1 2 4 8)."""
    parser.add_argument(
        '--steps', type=int, nargs='+', default=list(default), help=help)


def add_shape_arg(parser: ArgumentParser) -> None:
    """``--shape H W``: the size of the model's input images, in pixels
    (default 800 1333, the test scale)."""
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1333],
        metavar=('H', 'W'),
        help='input image size (default 800 1333)')


def add_timestep_arg(parser: ArgumentParser,
                     default: Optional[int] = 0,
                     note: str = '') -> None:
    """``--timestep T``: the diffusion timestep at which DiffPS's Stable
    Diffusion backbone runs the UNet for its features (the paper: 0);
    ``default`` None: the config's. ``note`` ends the help."""
    parser.add_argument(
        '--timestep',
        type=int,
        default=default,
        help='the Stable Diffusion UNet\'s timestep (DiffPS: 0' +
        ('; default: the config\'s' if default is None else '') + note + ')')


def add_launcher_arg(parser: ArgumentParser) -> None:
    """``--launcher`` of ``tools/train.py`` and ``tools/test.py``: how the
    processes were started (mmengine's ``init_dist``); ``none``: one
    process."""
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')


def add_results_args(parser: ArgumentParser,
                     results_help: str = 'results.pkl of tools/test.py',
                     data_root_help: Optional[str] = None) -> None:
    """The saved results file (``tools/test.py --out``) and the dataset it
    was tested on: ``results``, ``--dataset {cuhk,prw}``, ``--data-root``
    (both required)."""
    parser.add_argument('results', help=results_help)
    parser.add_argument('--dataset', required=True, choices=list(DATASETS))
    parser.add_argument('--data-root', required=True, help=data_root_help)


def score_threshold(text: str) -> float:
    """``type=`` of a score-threshold option: a number in [0, 1] (``nan`` or
    ``5`` would drop every detection and print zeros), refused as a usage
    error."""
    try:
        return check_unit_interval(float(text), 'the score threshold')
    except ValueError:
        raise ArgumentTypeError(
            f'must be a number in [0, 1], got {text!r}') from None


def add_score_thr_arg(
    parser: ArgumentParser,
    flag: str = '--score-thr',
    help: str = 'score threshold of gallery detections (protocol: 0.5)'
) -> None:
    """A score threshold of the gallery detections (default 0.5, the
    protocol's), checked by :func:`score_threshold`."""
    parser.add_argument(flag, type=score_threshold, default=0.5, help=help)
