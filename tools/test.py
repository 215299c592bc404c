# Copyright (c) mmpsearch contributors. All rights reserved.
"""Test a person searcher: ``python tools/test.py CONFIG CHECKPOINT``.

Prints search mAP, CMC top-1/5/10 and detection AP/recall under the
dataset's standard protocol; ``--out results.pkl`` also saves the raw
detections and embeddings in the documented results format, which
``tools/analysis_tools/eval_search.py`` re-scores offline.

``--seeds 0 1 2`` runs the test set once per seed of the model's test-time
randomness (PSDiff: ``model.test_cfg.seed``; a Stable Diffusion backbone:
``model.backbone.noise_seed``; see ``mmpsearch/evaluation/run_settings.py``)
on one Runner and reports the mean +- std (sample, ddof=1) of every metric;
``--out FILE.pkl`` then writes ``FILE_seed0.pkl``, ``FILE_seed1.pkl``, ...
A model without test-time randomness (the two-step baseline) is refused:
its numbers do not depend on a seed. ``--seeds 0`` is exactly a plain run
with seed 0. ``--json FILE`` writes the metrics (the means with
``--seeds``) with the settings they were measured with under
``"settings"`` (docs/en/results_format.md).
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import DictAction


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
        '--seeds',
        type=int,
        nargs='+',
        help='run the test set once per seed of the model\'s test-time '
        'randomness (PSDiff: model.test_cfg.seed) and report the mean and '
        'std of every metric; --out FILE.pkl writes FILE_seed{S}.pkl per '
        'seed. Refused for a model without test-time randomness')
    parser.add_argument(
        '--json',
        help='write the metrics (with --seeds: their means, stds and the '
        'per-seed values) and the settings they were measured with to this '
        'JSON file (a new one)')
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
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='evaluate even when the checkpoint leaves weights of the model '
        'unloaded (they stay random) or holds keys the model does not have; '
        'refused otherwise')
    parser.add_argument(
        '--force',
        action='store_true',
        help='run although another run holds the work dir, --out or --json '
        '(their locks are taken over), and overwrite an existing --json '
        'file; refused otherwise')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


# --help and a usage error answer before the slow imports below (torch,
# mmdet: seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

from mmengine.dist import is_main_process  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmpsearch.evaluation import PersonSearchMetric  # noqa: E402
from mmpsearch.evaluation.run_settings import SETTINGS_KEY  # noqa: E402
from mmpsearch.evaluation.run_settings import evaluation_settings  # noqa: E402
from mmpsearch.evaluation.run_settings import mean_std  # noqa: E402
from mmpsearch.evaluation.run_settings import metric_settings  # noqa: E402
from mmpsearch.evaluation.run_settings import model_settings  # noqa: E402
from mmpsearch.evaluation.run_settings import seed_keys  # noqa: E402
from mmpsearch.evaluation.run_settings import seed_path  # noqa: E402
from mmpsearch.evaluation.run_settings import set_seed  # noqa: E402
from mmpsearch.evaluation.run_settings import unwrap_model  # noqa: E402
from mmpsearch.utils import register_all_modules, setup_cpu_distributed  # noqa
from mmpsearch.utils.cfg_signature import ConfigKeyError  # noqa: E402
from mmpsearch.utils.checkpoint import CheckpointMismatchError  # noqa: E402
from mmpsearch.utils.checkpoint import NonFiniteCheckpointError  # noqa: E402
from mmpsearch.utils.config import check_config, load_config  # noqa: E402
from mmpsearch.utils.overwrite import refuse_existing_file  # noqa: E402
from mmpsearch.utils.run_lock import hold_run_locks  # noqa: E402


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
    # results files are never overwritten (no flag gets past this)
    refuse_existing_file(out, '--out', flag=None)
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


def check_seeds(args) -> None:
    """``--seeds``: distinct, and not painted over each other."""
    if args.seeds is None:
        return
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f'--seeds {args.seeds}: seeds repeat')
    if len(args.seeds) > 1 and (args.show or args.show_dir):
        raise SystemExit('--show / --show-dir paint one run; give a single '
                         'seed with them, not --seeds '
                         f'{" ".join(map(str, args.seeds))}')


def results_files(args) -> list:
    """The results file of each run: ``--out`` itself, or with ``--seeds``
    one ``FILE_seed{S}.pkl`` per seed; none may exist yet (checked before
    anything runs)."""
    if args.out is None:
        return []
    if not args.out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out {args.out}: the results file must be a '
                         '.pkl file')
    if args.seeds is None:
        return [args.out]
    files = [seed_path(args.out, s) for s in args.seeds]
    for f in files:
        refuse_existing_file(f, f'--out {args.out} --seeds: results file',
                             flag=None)
    return files


def check_json(args) -> None:
    """``--json``: a new file (checked before anything runs)."""
    if args.json is not None:
        refuse_existing_file(args.json, '--json', args.force)


def _metric_objects(runner) -> list:
    """The PersonSearchMetric(s) of the (built) test loop's evaluator."""
    return [
        m for m in runner.test_loop.evaluator.metrics
        if isinstance(m, PersonSearchMetric)
    ]


def _keep_mmengine_json(runner, seed: int) -> None:
    """mmengine's LoggerHook writes each run's metrics to
    ``{log_dir}/{timestamp}.json``; keep each seed's as
    ``{timestamp}_seed{S}.json`` instead of the next run's replacing it."""
    if not is_main_process():
        return
    path = osp.join(runner.log_dir, f'{runner.timestamp}.json')
    if osp.isfile(path):
        os.replace(path, seed_path(path, seed))


def run_test(runner, args, out_files: list) -> dict:
    """``runner.test()`` once, or once per ``--seeds`` (the seed set in the
    built model, the results file and its meta set in the built metric);
    returns what ``--json`` writes."""
    model = unwrap_model(runner.model)
    seeds = args.seeds
    if seeds is not None and not seed_keys(model):
        raise SystemExit(
            f'--seeds: {type(model).__name__} has no seeded test-time '
            'randomness (no test_cfg.seed, no backbone noise_seed), so its '
            'numbers do not depend on a seed; run it once without --seeds')
    metric_objs = _metric_objects(runner)
    # a results_file from the config (not --out): one per seed as well
    config_files = {}
    if seeds is not None and not out_files:
        for m in metric_objs:
            if m.results_file is None:
                continue
            config_files[id(m)] = [seed_path(m.results_file, s) for s in seeds]
            existing = [f for f in config_files[id(m)] if osp.exists(f)]
            if existing and not m.overwrite:
                raise SystemExit(f'--seeds: {", ".join(existing)} (the '
                                 'config\'s results_file per seed) already '
                                 'exist(s); results files are not overwritten')
    runs, files = [], []
    for i, seed in enumerate(seeds if seeds is not None else [None]):
        if seed is not None:
            set_seed(model, seed)
            runner.logger.info(f'--seeds: run {i + 1}/{len(seeds)}, test '
                               f'seed {seed}')
        for m in metric_objs:
            # stored in the results file, read back by eval_search.py
            m.results_meta = model_settings(model)
            if out_files:
                m.results_file = out_files[i]
            elif id(m) in config_files:
                m.results_file = config_files[id(m)][i]
        try:
            runs.append(runner.test())
        except CheckpointMismatchError as e:
            raise SystemExit(str(e)) from None
        except NonFiniteCheckpointError as e:
            raise SystemExit(f'{type(e).__name__}: {e}') from None
        files.append(metric_objs[0].results_file if metric_objs else None)
        if seed is not None:
            _keep_mmengine_json(runner, seed)

    settings = metric_settings(metric_objs[0]) if metric_objs \
        else evaluation_settings(None, None)
    settings.update(model_settings(model, seeds))
    if seeds is None:
        summary = dict(runs[0])
    else:
        mean, std = mean_std(runs)
        summary = dict(mean)
        summary['std'] = std
        summary['per_seed'] = [
            dict(seed=s, results_file=f, metrics=dict(r))
            for s, f, r in zip(seeds, files, runs)
        ]
        lines = [f'mean +- std over test seeds {", ".join(map(str, seeds))}:']
        for k, v in mean.items():
            sd = 'n/a' if std[k] is None else f'{std[k]:.4f}'
            lines.append(f'  {k}: {v:.4f} +- {sd}')
        runner.logger.info('\n'.join(lines))
    summary[SETTINGS_KEY] = settings
    return summary


def write_json(summary: dict, path: str, force: bool = False) -> None:
    if not is_main_process():
        return
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w' if force else 'x') as f:
        json.dump(summary, f, indent=2)
    print(f'metrics and settings written to {path}')


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=False)

    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigKeyError as e:  # a typo: the message, not a traceback
        raise SystemExit(f'{args.config}: {e.args[0]}') from None
    cfg.launcher = args.launcher
    check_config(cfg, ('model', 'test_dataloader', 'test_cfg',
                       'test_evaluator'))

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint} ' + (
            'is a folder, not a checkpoint file' if osp.isdir(
                args.checkpoint) else 'does not exist'))
    cfg.load_from = args.checkpoint
    # a checkpoint of another model is an error, not a partly random model
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = dict()
    cfg.default_hooks['checkpoint_fit'] = dict(
        type='mmpsearch.CheckpointFitHook',
        allow_partial=args.allow_partial,
        allow_empty=args.allow_partial,  # opted in: even if nothing loads
        filename=args.checkpoint,
        hint='Pass --allow-partial to evaluate it anyway')

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    check_seeds(args)
    out_files = results_files(args)
    if out_files:
        set_results_file(cfg, out_files[0])
    check_json(args)

    setup_cpu_distributed(cfg, args.launcher)

    # one run at a time writes into the work dir and each output file:
    # locked for the life of this run, refused while another run holds one
    with hold_run_locks([(cfg.work_dir, 'work dir', True),
                         (args.json, '--json', False)] +
                        [(f, '--out', False) for f in out_files],
                        'tools/test.py', args.force, args.launcher):
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)
        summary = run_test(runner, args, out_files)
        if args.json is not None:
            write_json(summary, args.json, args.force)


if __name__ == '__main__':
    main()
