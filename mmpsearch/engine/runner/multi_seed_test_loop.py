# Copyright (c) mmpsearch contributors. All rights reserved.
"""The test set once per seed of a model's test-time randomness."""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

from mmengine.dist import is_main_process
from mmengine.evaluator import Evaluator
from mmengine.runner import TestLoop
from torch.utils.data import DataLoader

from mmpsearch.evaluation import PersonSearchMetric
from mmpsearch.evaluation.run_settings import (SETTINGS_KEY,
                                               evaluation_settings, mean_std,
                                               metric_settings, model_settings,
                                               seed_keys, seed_path, set_seed,
                                               unwrap_model)
from mmpsearch.registry import LOOPS
from mmpsearch.utils.overwrite import refuse_existing_file


class SeedsError(ValueError):
    """Seeds that cannot be run: repeated, or a model whose results do not
    depend on a seed."""


def check_seeds(seeds: Optional[Sequence[int]]) -> Optional[List[int]]:
    """``seeds`` as a list of distinct ints (None: one plain run)."""
    if seeds is None:
        return None
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SeedsError(f'--seeds {seeds}: seeds repeat' if seeds else
                         'seeds: give at least one seed, or None')
    return seeds


def seed_results_files(path: str,
                       seeds: Sequence[int],
                       what: str = 'results file',
                       overwrite: bool = False) -> List[str]:
    """The results file of each seed: ``path`` with ``_seed{S}`` before its
    extension. None may exist yet unless ``overwrite`` (the metric's)."""
    files = [seed_path(path, s) for s in seeds]
    for f in files:
        refuse_existing_file(f, what, overwrite, flag=None)
    return files


def results_files(path: Optional[str],
                  seeds: Optional[Sequence[int]] = None,
                  what: str = '--out') -> List[str]:
    """The results file of each run: ``path`` itself, or with ``seeds`` one
    ``FILE_seed{S}.pkl`` per seed; none may exist yet (results files are
    never overwritten)."""
    if path is None:
        return []
    if not path.endswith(('.pkl', '.pickle')):
        raise SeedsError(f'{what} {path}: the results file must be a .pkl '
                         'file')
    if seeds is None:
        refuse_existing_file(path, what, flag=None)
        return [path]
    return seed_results_files(path, seeds,
                              f'{what} {path} --seeds: results file')


def use_multi_seed_test_loop(cfg,
                             seeds: Optional[Sequence[int]] = None,
                             results_file: Optional[str] = None) -> None:
    """Make ``cfg``'s test a :class:`MultiSeedTestLoop` with ``seeds`` (its
    ``TestLoop`` replaced), its PersonSearchMetric(s) writing
    ``results_file``: what ``tools/test.py --seeds --out`` set."""
    evaluators = cfg.test_evaluator
    found = [
        e
        for e in ([evaluators] if isinstance(evaluators, dict) else evaluators)
        if getattr(e.get('type'), '__name__', e.get('type')) ==
        'PersonSearchMetric'
    ]
    if results_file is not None and not found:
        raise SeedsError('--out needs a PersonSearchMetric in '
                         f'test_evaluator of {cfg.filename}')
    for evaluator in found if results_file is not None else []:
        evaluator['results_file'] = results_file
    loop = dict(cfg.get('test_cfg') or {})
    name = getattr(loop.get('type'), '__name__', loop.get('type'))
    if name not in (None, 'TestLoop', 'MultiSeedTestLoop'):
        if seeds is not None:
            raise SeedsError('--seeds needs a MultiSeedTestLoop, but '
                             f'test_cfg of {cfg.filename} is a {name}')
        return
    cfg.test_cfg = dict(loop, type='mmpsearch.MultiSeedTestLoop')
    if seeds is not None:
        cfg.test_cfg['seeds'] = list(seeds)


@LOOPS.register_module()
class MultiSeedTestLoop(TestLoop):
    """mmengine's ``TestLoop``, once per seed of the model's test-time
    randomness, on one Runner (one model build, one checkpoint load).

    ``test_cfg=dict(type='MultiSeedTestLoop', seeds=[0, 1, 2])`` (what
    ``tools/test.py --seeds 0 1 2`` sets) seeds the model before each run
    (``BasePersonSearcher.set_test_seed``: PSDiff's ``test_cfg.seed``, a
    Stable Diffusion backbone's ``noise_seed``), writes each run's results
    file as ``FILE_seed{S}.pkl`` (``FILE.pkl``: a ``PersonSearchMetric``'s
    ``results_file``) and mmengine's metrics JSON of each run as
    ``{timestamp}_seed{S}.json``, and returns the mean of every metric with
    ``std`` (sample, ddof=1; None for one seed) and ``per_seed`` (seed,
    results file, metrics). ``seeds=None`` is mmengine's one plain run. A
    model without test-time randomness is refused with seeds: its numbers
    do not depend on a seed.

    Every run stores the model's test settings in its results file's
    ``"meta"``, and the returned dict holds, under ``"settings"``, the
    protocol and model settings the numbers were measured with
    (``docs/en/results_format.md``).

    Args:
        runner, dataloader, evaluator, fp16: As mmengine's ``TestLoop``.
        seeds (list[int], optional): Distinct seeds; None: one plain run.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List],
                 fp16: bool = False,
                 seeds: Optional[Sequence[int]] = None) -> None:
        self.seeds = check_seeds(seeds)
        model = unwrap_model(runner.model)
        if self.seeds is not None and not seed_keys(model):
            raise SeedsError(
                f'--seeds: {type(model).__name__} has no seeded test-time '
                'randomness (no test_cfg.seed, no backbone noise_seed), so '
                'its numbers do not depend on a seed; run it once without '
                '--seeds')
        super().__init__(runner, dataloader, evaluator, fp16)
        self.search_metrics = [
            m for m in self.evaluator.metrics
            if isinstance(m, PersonSearchMetric)
        ]
        # a results_file per seed (checked before anything runs)
        self.results_files: Dict[int, List[str]] = {}
        if self.seeds is not None:
            for m in self.search_metrics:
                if m.results_file is not None:
                    self.results_files[id(m)] = seed_results_files(
                        m.results_file, self.seeds, 'seeds: the results file',
                        m.overwrite)

    def run(self) -> dict:
        """The test set once, or once per seed; see the class docstring."""
        model = unwrap_model(self.runner.model)
        seeds = self.seeds
        runs, files = [], []
        for i, seed in enumerate(seeds if seeds is not None else [None]):
            if seed is not None:
                set_seed(model, seed)
                self.runner.logger.info(f'--seeds: run {i + 1}/{len(seeds)}, '
                                        f'test seed {seed}')
            for m in self.search_metrics:
                # stored in the results file, read back by eval_search.py
                m.results_meta = model_settings(model)
                if id(m) in self.results_files:
                    m.results_file = self.results_files[id(m)][i]
            runs.append(super().run())
            files.append(self.search_metrics[0].results_file if self.
                         search_metrics else None)
            if seed is not None:
                self._keep_mmengine_json(seed)

        settings = metric_settings(self.search_metrics[0]) \
            if self.search_metrics else evaluation_settings(None, None)
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
            lines = [
                f'mean +- std over test seeds {", ".join(map(str, seeds))}:'
            ]
            for k, v in mean.items():
                sd = 'n/a' if std[k] is None else f'{std[k]:.4f}'
                lines.append(f'  {k}: {v:.4f} +- {sd}')
            self.runner.logger.info('\n'.join(lines))
        summary[SETTINGS_KEY] = settings
        return summary

    def _keep_mmengine_json(self, seed: int) -> None:
        """mmengine's LoggerHook writes each run's metrics to
        ``{log_dir}/{timestamp}.json``; keep each seed's as
        ``{timestamp}_seed{S}.json`` instead of the next run's replacing
        it."""
        if not is_main_process():
            return
        path = osp.join(self.runner.log_dir, f'{self.runner.timestamp}.json')
        if osp.isfile(path):
            os.replace(path, seed_path(path, seed))
