# Copyright (c) mmpsearch contributors. All rights reserved.
"""Train a person-search model: ``python tools/train.py CONFIG``."""
import argparse
import logging
import os.path as osp

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_launcher_arg)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a person searcher')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    add_force_arg(
        parser,
        help='train into a work dir that already holds checkpoints of an '
        'earlier run (without --resume), overwriting them, or that another '
        'run holds (its lock is taken over); refused otherwise')
    add_cfg_options_arg(
        parser,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    add_launcher_arg(parser)
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch,
# mmdet: seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmengine.logging import print_log  # noqa: E402

from mmpsearch.engine.hooks import NonFiniteLossError  # noqa: E402
from mmpsearch.utils import safe_checkpoint_loading  # noqa: E402
from mmpsearch.utils import setup_cpu_distributed  # noqa: E402
from mmpsearch.utils.checkpoint import CheckpointMismatchError  # noqa: E402
from mmpsearch.utils.checkpoint import NonFiniteCheckpointError  # noqa: E402
from mmpsearch.utils.cli import checkpoint_file_problem  # noqa: E402
from mmpsearch.utils.cli import load_runner_config  # noqa: E402
from mmpsearch.utils.cli import build_runner, exit_on_refusal  # noqa: E402
from mmpsearch.utils.config import check_config  # noqa: E402
from mmpsearch.utils.overwrite import check_train_work_dir  # noqa: E402
from mmpsearch.utils.overwrite import resume_is_complete  # noqa: E402
from mmpsearch.utils.run_lock import hold_run_locks  # noqa: E402


@exit_on_refusal()  # a refused output, a bad --resume: the message
def main() -> None:
    args = parse_args()
    # work_dir is determined in this priority: CLI > config > config name
    cfg = load_runner_config(args)

    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a CUDA GPU (mmengine\'s '
                             'AmpOptimWrapper); this machine has none. '
                             'Train without --amp on the CPU.')
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        optim_wrapper = getattr(optim_wrapper, '__name__', optim_wrapper)
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        problem = checkpoint_file_problem(
            args.resume, 'no such checkpoint', remote=False)
        if problem:
            raise SystemExit(f'--resume {args.resume}: {problem}')
        cfg.resume = True
        cfg.load_from = args.resume
    problem = cfg.get('load_from') and not cfg.get('resume') and \
        checkpoint_file_problem(cfg.load_from, 'no such checkpoint')
    if problem:
        raise SystemExit(f'load_from={cfg.load_from}: {problem}')
    # One run at a time in a work dir: a lock for the life of this run,
    # refused while another run holds it. Nothing of an earlier run is
    # overwritten unless asked (--resume, --force), and a bad
    # last_checkpoint is named before any work.
    with hold_run_locks([(cfg.work_dir, 'work dir', True)],
                        'tools/train.py',
                        force=args.force,
                        launcher=args.launcher), safe_checkpoint_loading():
        _train(cfg, args)


def _train(cfg, args) -> None:
    """Resume or check the (locked) work dir, then train."""
    resume = (cfg.get('load_from') or 'auto') if cfg.get('resume') else None
    resume_from = check_train_work_dir(cfg.work_dir, resume, args.force)
    if resume == 'auto' and '://' not in str(cfg.work_dir):
        if resume_from is None:
            print_log(
                f'--resume: no {osp.join(cfg.work_dir, "last_checkpoint")} '
                'yet, nothing to resume: training starts from the beginning',
                logger='current')
            cfg.resume = False
        else:
            cfg.load_from = resume_from
    # past max_iters mmengine trained nothing, rewrote the config, exit 0
    if cfg.get('resume') and cfg.get('load_from') and resume_is_complete(
            cfg.load_from, cfg.get('train_cfg')):
        print_log(
            f'--resume: {cfg.load_from} is of iteration train_cfg.max_iters'
            f' = {cfg.train_cfg.max_iters}: the run is complete, nothing '
            'to train',
            logger='current')
        return

    check_config(cfg)
    # Without CUDA, distributed runs go through gloo (see mmpsearch.utils).
    setup_cpu_distributed(cfg, args.launcher)

    runner = build_runner(cfg)
    try:
        runner.train()
    except (NonFiniteLossError, NonFiniteCheckpointError,
            CheckpointMismatchError) as e:
        # a NaN run, NaN weights or a load_from that loads nothing: the
        # message, no traceback
        raise SystemExit(f'{type(e).__name__}: {e}') from None


if __name__ == '__main__':
    main()
