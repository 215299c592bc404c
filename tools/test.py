# Copyright (c) mmpsearch contributors. All rights reserved.
"""Test a person searcher: ``python tools/test.py CONFIG CHECKPOINT``.

Prints search mAP, CMC top-1/5/10 and detection AP/recall under the
dataset's standard protocol; ``--out results.pkl`` also saves the raw
detections and embeddings in the documented results format, which
``tools/analysis_tools/eval_search.py`` re-scores offline.
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmpsearch.utils import register_all_modules, setup_cpu_distributed
from mmpsearch.utils.config import check_config, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and eval) a person searcher')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='save the detections and embeddings of the gallery and the '
        'query embeddings to this pickle file (results format, see '
        'docs/en/results_format.md); an existing file is not overwritten')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file, e.g. '
        'model.test_cfg.sampling_steps=4')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args) -> None:
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks; '
            'refer to configs/_base_/default_runtime.py')
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        visualization_hook['test_out_dir'] = args.show_dir


def _type_name(cfg_type) -> str:
    return getattr(cfg_type, '__name__', cfg_type)


def set_results_file(cfg, out: str) -> None:
    """Point the config's PersonSearchMetric(s) at ``out``."""
    if not out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out {out}: the results file must be a .pkl file')
    if osp.exists(out):
        raise SystemExit(f'--out {out} already exists; choose another name '
                         '(results files are never overwritten)')
    evaluators = cfg.test_evaluator
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    found = False
    for evaluator in evaluators:
        if _type_name(evaluator.get('type')) == 'PersonSearchMetric':
            evaluator['results_file'] = out
            found = True
    if not found:
        raise SystemExit('--out needs a PersonSearchMetric in test_evaluator '
                         f'of {cfg.filename}')


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=False)

    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    check_config(cfg, ('model', 'test_dataloader', 'test_cfg',
                       'test_evaluator'))

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint} does not exist')
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    if args.out is not None:
        set_results_file(cfg, args.out)

    setup_cpu_distributed(cfg, args.launcher)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.test()


if __name__ == '__main__':
    main()
