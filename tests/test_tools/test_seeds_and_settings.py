# Copyright (c) mmpsearch contributors. All rights reserved.
"""``tools/test.py --seeds`` and the ``"settings"`` of the metrics JSONs,
through the tools a user runs, on a tiny PSDiff (random weights, class bias
lifted so that detections pass the protocol's 0.5) and the smallest
CUHK-SYSU-format tree:

    tools/test.py CFG CKPT --out plain.pkl --json plain.json
    tools/test.py CFG CKPT --seeds 0 1 2 --out seeds.pkl --json seeds.json
    tools/test.py CFG CKPT --seeds 0 --out one.pkl --json one.json
    tools/analysis_tools/eval_search.py seeds_seed{S}.pkl --json ...
"""
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmpsearch.engine.runner import (MultiSeedTestLoop, SeedsError,
                                     check_seeds, results_files)
from mmpsearch.evaluation.results_io import safe_load_pickle
from mmpsearch.evaluation.run_settings import seed_keys, seed_path
from mmpsearch.models.detectors import BasePersonSearcher
from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules
from ..conftest import load_tool
from .conftest import REPO, run_tool
# the slim PSDiff of the chain test (its ResNet-18 widths, 64-d embeddings),
# its tree and its --cfg-options
from .test_psdiff_chain import (EMBED_DIM, IMAGE_SIZE, WIDTH, data_options,
                                options, psdiff_model_options, tool_workspace)

PSDIFF_CONFIG = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')
BASELINE_CONFIG = str(REPO / 'configs' / 'baseline' /
                      'faster_rcnn_r18_teacher_synthetic.py')
STEPS = 2  # != the config's 8: must come from --cfg-options
PROPOSALS = 64  # != the config's 128
SEEDS = (0, 1, 2)
KEYS = ('mAP', 'top1', 'top5', 'top10', 'det_ap', 'det_recall',
        'labeled_det_ap', 'labeled_det_recall')
_RESCORED = itertools.count()


def tool_options(root: Path) -> list:
    scale = f'({IMAGE_SIZE[0]},{IMAGE_SIZE[1]})'
    opts = {
        **psdiff_model_options(),
        'model.test_cfg.sampling_steps': STEPS,
        'model.test_cfg.num_proposals': PROPOSALS,
        # one CDL pass per step keeps these tool runs as cheap as the
        # seeding they test needs (passes are tested in test_psdiff.py)
        'model.test_cfg.num_passes': 1,
        'test_evaluator.data_root': root,
        **data_options('test_dataloader', root, scale),  # gallery, query
    }
    return options(opts)


def make_checkpoint(path: Path) -> None:
    """Random tiny PSDiff weights; the class bias lifted from the prior
    (0.01) to sigmoid(1) = 0.73, so the 0.5 threshold keeps detections."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(PSDIFF_CONFIG)
    cfg.merge_from_dict({
        'model.backbone.base_channels':
        WIDTH,
        'model.neck.in_channels': [WIDTH * 2**k for k in range(4)],
        'model.bbox_head.diffusion.embed_dims':
        EMBED_DIM,
    })
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    with torch.no_grad():
        model.bbox_head.denoiser.cls_out.bias.fill_(1.0)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, str(path))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, one_torch_thread):
    base, cwd, root, made = tool_workspace(tmp_path_factory, 'seeds')
    ckpt = base / 'psdiff.pth'
    make_checkpoint(ckpt)

    def test_py(name: str, *flags: str):
        argv = [
            'tools/test.py', PSDIFF_CONFIG,
            str(ckpt), '--work-dir',
            str(base / name), '--out',
            str(base / f'{name}.pkl'), '--json',
            str(base / f'{name}.json'), *flags
        ]
        proc = run_tool(argv + tool_options(root), cwd=cwd)
        return proc.stdout + proc.stderr

    logs = dict(
        plain=test_py('plain'),
        seeds=test_py('seeds', '--seeds', *map(str, SEEDS)),
        one=test_py('one', '--seeds', '0'))
    jsons = {
        name: json.loads((base / f'{name}.json').read_text())
        for name in logs
    }
    return dict(
        base=base, cwd=cwd, root=root, made=made, logs=logs, jsons=jsons)


def _results(path: Path) -> dict:
    return safe_load_pickle(str(path))


def assert_same_results(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    assert a.get('meta') == b.get('meta')
    assert list(a['gallery']) == list(b['gallery'])
    for img_id, det in a['gallery'].items():
        for key in ('bboxes', 'scores', 'embeddings'):
            np.testing.assert_array_equal(det[key], b['gallery'][img_id][key])
    assert len(a['query']) == len(b['query'])
    for qa, qb in zip(a['query'], b['query']):
        assert qa['img_id'] == qb['img_id']
        np.testing.assert_array_equal(qa['bbox'], qb['bbox'])
        np.testing.assert_array_equal(qa['embedding'], qb['embedding'])


def rescore(runs, seed: int, *flags: str) -> dict:
    """eval_search.py on the per-seed results file of the --seeds run."""
    pkl = seed_path(str(runs['base'] / 'seeds.pkl'), seed)
    out = runs['base'] / f'rescored_seed{seed}_{next(_RESCORED)}.json'
    summary = load_tool('tools/analysis_tools/eval_search.py').main([
        pkl, '--dataset', 'cuhk', '--data-root',
        str(runs['root']), '--json',
        str(out), *flags
    ])
    written = json.loads(out.read_text())
    assert written == summary
    return written


def test_seeds_mean_is_the_mean_of_the_per_seed_files(runs):
    reported = runs['jsons']['seeds']
    per_seed = [rescore(runs, s) for s in SEEDS]
    for key in KEYS:
        values = [r[key] for r in per_seed]
        assert reported[f'search/{key}'] == pytest.approx(
            np.mean(values), abs=1e-12), key
        assert reported['std'][f'search/{key}'] == pytest.approx(
            np.std(values, ddof=1), abs=1e-12), key
        for r, entry in zip(per_seed, reported['per_seed']):
            assert entry['metrics'][f'search/{key}'] == pytest.approx(
                r[key], abs=1e-12), key
    assert [e['seed'] for e in reported['per_seed']] == list(SEEDS)
    assert [e['results_file'] for e in reported['per_seed']] == [
        seed_path(str(runs['base'] / 'seeds.pkl'), s) for s in SEEDS
    ]
    # the seeds did change the run: not three copies of one result
    assert len({r['det_recall'] for r in per_seed}) > 1
    assert any(v > 0 for v in reported['std'].values())
    e0 = _results(seed_path(str(runs['base'] / 'seeds.pkl'), 0))
    e1 = _results(seed_path(str(runs['base'] / 'seeds.pkl'), 1))
    assert not np.array_equal(e0['query'][0]['embedding'],
                              e1['query'][0]['embedding'])
    log = runs['logs']['seeds']
    assert 'mean +- std over test seeds 0, 1, 2' in log
    assert log.count('Load checkpoint from') == 1  # one Runner, one load
    # no file without the seed in its name, nothing in the working dir
    assert not (runs['base'] / 'seeds.pkl').exists()
    assert not any(runs['cwd'].iterdir())


def test_one_seed_is_the_plain_run(runs):
    base = runs['base']
    plain = _results(base / 'plain.pkl')
    assert plain['meta']['seeds'] == [0]  # the config's test seed
    assert_same_results(_results(base / 'one_seed0.pkl'), plain)
    assert_same_results(_results(base / 'seeds_seed0.pkl'), plain)
    one, plain_json = runs['jsons']['one'], runs['jsons']['plain']
    for key in KEYS:
        assert one[f'search/{key}'] == plain_json[f'search/{key}'], key
        assert one['std'][f'search/{key}'] is None  # one seed: no spread
    # and another seed is not the plain run
    other = _results(base / 'seeds_seed1.pkl')
    assert not np.array_equal(other['query'][0]['embedding'],
                              plain['query'][0]['embedding'])


def test_mmengine_json_kept_per_seed(runs):
    per_seed = runs['jsons']['seeds']['per_seed']
    (log_dir, ) = [p for p in (runs['base'] / 'seeds').iterdir() if p.is_dir()]
    stamp = log_dir.name
    assert not (log_dir / f'{stamp}.json').exists()
    for entry in per_seed:
        saved = json.loads(
            (log_dir / f'{stamp}_seed{entry["seed"]}.json').read_text())
        for key, value in entry['metrics'].items():
            assert saved[key] == pytest.approx(value, abs=1e-12), key
    # a plain run keeps mmengine's one file
    (plain_dir, ) = [
        p for p in (runs['base'] / 'plain').iterdir() if p.is_dir()
    ]
    assert sorted(p.name for p in plain_dir.glob('*.json')) == [
        f'{plain_dir.name}.json'
    ]


def _expected_settings(seeds) -> dict:
    return dict(
        dataset='cuhk',
        score_thr=0.5,
        gallery_sizes=[100],
        camera=None,
        cbgm=False,
        cbgm_k1=None,
        cbgm_k2=None,
        subset=None,
        model='PSDiff',
        sampling_steps=STEPS,
        num_passes=1,  # tool_options' test_cfg.num_passes
        num_proposals=PROPOSALS,
        sampler='DDIMSampler',
        use_ensemble=True,  # the shipped test settings
        box_renewal=True,
        model_score_thr=0.5,
        seeds=list(seeds),
        seed_keys=['model.test_cfg.seed'])


def test_settings_in_both_jsons(runs):
    jsons = runs['jsons']
    for name, seeds in (('plain', [0]), ('one', [0]), ('seeds', SEEDS)):
        settings = jsons[name]['settings']
        # an unknown key (a new option) is fine, a wrong value is not
        for key, value in _expected_settings(seeds).items():
            assert settings[key] == value, (name, key, settings[key])
        for key in KEYS:  # the metrics are beside the settings
            assert math.isfinite(jsons[name][f'search/{key}'])
    for seed in (0, 2):
        rescored = rescore(runs, seed)
        for key, value in _expected_settings([seed]).items():
            assert rescored['settings'][key] == value, (seed, key)
    # eval_search's own options, and several gallery sizes
    several = rescore(runs, 1, '--gallery-size', '50', '100', '--score-thr',
                      '0.3')
    assert set(several) == {'50', '100', 'settings'}
    assert several['settings']['gallery_sizes'] == [50, 100]
    assert several['settings']['score_thr'] == 0.3
    assert several['settings']['seeds'] == [1]
    assert several['settings']['sampling_steps'] == STEPS


def test_existing_seed_file_is_refused_first(runs, tmp_path):
    out = str(runs['base'] / 'seeds.pkl')  # its _seed{S} files exist
    with pytest.raises(FileExistsError, match='seeds_seed1.pkl already exist'):
        results_files(out, [3, 1])
    fresh = str(tmp_path / 'r.pkl')
    assert results_files(fresh, [3, 1]) == [
        str(tmp_path / 'r_seed3.pkl'),
        str(tmp_path / 'r_seed1.pkl')
    ]
    assert results_files(fresh) == [fresh]
    with pytest.raises(SeedsError, match='seeds repeat'):
        check_seeds([0, 0])


def test_model_without_test_seed_is_refused():
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(BASELINE_CONFIG)
    cfg.merge_from_dict({'model.reid.checkpoint': None})
    model = MODELS.build(cfg.model)
    assert seed_keys(model) == [] and model.test_seed_keys() == []
    runner = SimpleNamespace(model=model)  # refused before anything runs
    with pytest.raises(
            SeedsError, match='TwoStepPersonSearch has no seeded test-time'):
        MultiSeedTestLoop(runner, None, None, seeds=[0, 1])
    # DiffPS-like: a Stable Diffusion backbone that samples / adds noise
    sd = SimpleNamespace(
        test_cfg={},
        backbone=SimpleNamespace(
            noise_seed=0, latent='sample', add_noise=True))
    assert BasePersonSearcher.test_seed_keys(sd) == ['backbone.noise_seed']
    sd.backbone.latent, sd.backbone.add_noise = 'mean', False
    assert BasePersonSearcher.test_seed_keys(sd) == []
