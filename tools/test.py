# Copyright (c) mmpsearch contributors. All rights reserved.
"""Test a person searcher: ``python tools/test.py CONFIG CHECKPOINT``.

Search mAP, CMC top-1/5/10 and detection AP/recall under the dataset's
protocol; ``--out`` saves the results file (docs/en/results_format.md),
``--json`` the metrics with their settings. ``--seeds 0 1 2`` is a thin flag
for ``test_cfg=dict(type='MultiSeedTestLoop', seeds=[0, 1, 2])``.
"""
import argparse

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_launcher_arg, add_model_args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and eval) a person searcher')
    add_model_args(parser, 'test config file path', 'checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        help='save the detections and embeddings of the gallery and the '
        'query embeddings to this pickle file (results format, see '
        'docs/en/results_format.md); an existing file is not overwritten')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        help='run the test set once per seed of the model\'s test-time '
        'randomness (PSDiff: model.test_cfg.seed) and report the mean and '
        'std of every metric (test_cfg: MultiSeedTestLoop); --out FILE.pkl '
        'writes FILE_seed{S}.pkl per seed. Refused for a model without '
        'test-time randomness')
    parser.add_argument(
        '--json',
        help='write the metrics (with --seeds: their means, stds and the '
        'per-seed values) and the settings they were measured with to this '
        'JSON file (a new one)')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved (under '
        'work_dir/timestamp/)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    add_cfg_options_arg(
        parser,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file, e.g. '
        'model.test_cfg.sampling_steps=4')
    add_launcher_arg(parser)
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='evaluate even when the checkpoint leaves weights of the model '
        'unloaded (they stay random) or holds keys the model does not have; '
        'refused otherwise')
    add_force_arg(
        parser,
        help='run although another run holds the work dir, --out or --json '
        '(their locks are taken over), and overwrite an existing --json '
        'file; refused otherwise')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch,
# mmdet: seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmdet.engine.hooks.utils import trigger_visualization_hook  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402

from mmpsearch.engine.runner import results_files  # noqa: E402
from mmpsearch.engine.runner import use_multi_seed_test_loop  # noqa: E402
from mmpsearch.engine.runner import SeedsError, check_seeds  # noqa: E402
from mmpsearch.utils import safe_checkpoint_loading  # noqa: E402
from mmpsearch.utils import setup_cpu_distributed  # noqa: E402
from mmpsearch.utils.checkpoint import CheckpointMismatchError  # noqa: E402
from mmpsearch.utils.checkpoint import NonFiniteCheckpointError  # noqa: E402
from mmpsearch.utils.cli import build_runner  # noqa: E402
from mmpsearch.utils.cli import checkpoint_file_problem  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.cli import load_runner_config  # noqa: E402
from mmpsearch.utils.cli import refuse_existing_json  # noqa: E402
from mmpsearch.utils.cli import write_json  # noqa: E402
from mmpsearch.utils.config import check_config  # noqa: E402
from mmpsearch.utils.run_lock import hold_run_locks  # noqa: E402


@exit_on_refusal(SeedsError)  # refusals: the message
def main() -> None:
    args = parse_args()
    cfg = load_runner_config(args)
    check_config(cfg,
                 ('model', 'test_dataloader', 'test_cfg', 'test_evaluator'))
    problem = checkpoint_file_problem(args.checkpoint)
    if problem:
        raise SystemExit(f'checkpoint {args.checkpoint} {problem}')
    cfg.load_from = args.checkpoint
    # a checkpoint of another model is an error, not a partly random model
    cfg.default_hooks = cfg.get('default_hooks') or dict()
    cfg.default_hooks['checkpoint_fit'] = dict(
        type='mmpsearch.CheckpointFitHook',
        allow_partial=args.allow_partial,
        allow_empty=args.allow_partial,  # opted in: even if nothing loads
        filename=args.checkpoint,
        hint='Pass --allow-partial to evaluate it anyway')
    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    check_seeds(args.seeds)
    if args.seeds and len(args.seeds) > 1 and (args.show or args.show_dir):
        raise SystemExit('--show / --show-dir paint one run; give a single '
                         f'seed with them, not --seeds {args.seeds}')
    out_files = results_files(args.out, args.seeds)
    use_multi_seed_test_loop(cfg, args.seeds, args.out)
    refuse_existing_json(args)
    setup_cpu_distributed(cfg, args.launcher)

    # one run at a time writes into the work dir and each output file:
    # locked for the life of this run, refused while another run holds one
    with hold_run_locks([(cfg.work_dir, 'work dir', True),
                         (args.json, '--json', False)] +
                        [(f, '--out', False) for f in out_files],
                        'tools/test.py', args.force, args.launcher), \
            safe_checkpoint_loading():
        runner = build_runner(cfg)
        try:
            summary = runner.test()
        except CheckpointMismatchError as e:
            raise SystemExit(str(e)) from None
        except NonFiniteCheckpointError as e:
            raise SystemExit(f'{type(e).__name__}: {e}') from None
        if args.json is not None and is_main_process():
            write_json(
                summary,
                args.json,
                args.force,
                'metrics and settings written to',
                makedirs=True)


if __name__ == '__main__':
    main()
