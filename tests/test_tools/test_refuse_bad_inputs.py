# Copyright (c) mmpsearch contributors. All rights reserved.
"""No wrong number printed as if it were right (docs/en/refusals.md):

- a checkpoint of another model is an error for tools/test.py and
  init_searcher (opt-in: --allow-partial / strict=False) and a loud warning
  for load_from; legit checkpoints of every model still load;
- a teacher embeddings file with a NaN row, another width or rows that are
  not the boxes of the training set is refused; training stops at the first
  non-finite loss, naming the term, without writing a checkpoint;
- score / IoU thresholds that are not numbers in [0, 1] are refused where
  they are read.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmpsearch.apis import index_gallery, init_searcher
from mmpsearch.datasets.teacher_cache import (TeacherEmbeddings,
                                              save_teacher_embeddings)
from mmpsearch.datasets.transforms import DualNoiseGenerator
from mmpsearch.engine.hooks import (FiniteLossHook, NonFiniteLossError,
                                    TeacherEmbeddingsCheckHook)
from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.metrics import PersonSearchMetric
from mmpsearch.registry import MODELS
from mmpsearch.testing import ToyRegressor
from mmpsearch.utils import register_all_modules
from mmpsearch.utils.checkpoint import (CheckpointMismatchError,
                                        check_checkpoint_fits)
from tests.test_evaluation.hand_cases import cuhk_case
from ..conftest import load_tool
from .conftest import (ORACLE, REPO, make_oracle_scenes, oracle_cfg,
                       oracle_test_args, run_tool)

NAN = float('nan')
PSDIFF = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')
DIFFPS = str(REPO / 'tests' / 'data' / 'configs' / 'diffps_sd21_synthetic.py')
BASELINE = str(REPO / 'configs' / 'baseline' /
               'faster_rcnn_r18_teacher_synthetic.py')
TEACHER = str(REPO / 'configs' / 'teacher' / 'teacher_synthetic.py')

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _other_checkpoint(path):
    """The weights of another model (the toy regressor)."""
    torch.save({'state_dict': ToyRegressor().state_dict(), 'meta': {}}, path)
    return str(path)


# ---------------------------------------------------------------------------
# 1. Checkpoints
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def oracle_scenes(tmp_path_factory):
    return make_oracle_scenes(tmp_path_factory.mktemp('oracle'))


def test_test_py_refuses_another_models_checkpoint(tmp_path, oracle_scenes):
    root, boxes_file = oracle_scenes
    ckpt = _other_checkpoint(tmp_path / 'toy.pth')
    proc = run_tool(
        ['tools/test.py', ORACLE, ckpt] +
        oracle_test_args(root, boxes_file, tmp_path / 'w1'),
        check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert f'checkpoint {ckpt} does not fit the model' in err
    assert "['dummy']" in err  # missing
    assert "['linear.bias', 'linear.weight']" in err  # unexpected
    assert '--allow-partial' in err
    assert 'search/mAP' not in proc.stdout + proc.stderr
    # opted in: it runs, with a loud warning
    proc = run_tool(['tools/test.py', ORACLE, ckpt, '--allow-partial'] +
                    oracle_test_args(root, boxes_file, tmp_path / 'w2'))
    log = proc.stdout + proc.stderr
    assert 'PARTIAL CHECKPOINT LOAD' in log
    assert '0 of the 1 weights of the model (OracleColourSearcher)' in log
    assert 'search/mAP' in log


def test_init_searcher_refuses_another_models_checkpoint(tmp_path):
    ckpt = _other_checkpoint(tmp_path / 'toy.pth')
    with pytest.raises(CheckpointMismatchError) as info:
        init_searcher(oracle_cfg(tmp_path), ckpt)
    msg = str(info.value)
    assert ckpt in msg and "['dummy']" in msg and 'linear.weight' in msg
    assert 'strict=False' in msg
    # opted in: loads what fits (nothing), the rest stays as built
    searcher = init_searcher(oracle_cfg(tmp_path), ckpt, strict=False)
    assert torch.equal(searcher.dummy, torch.zeros(1))
    # its own checkpoint loads, weights and all
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': {'dummy': torch.full((1, ), 3.0)}}, own)
    searcher = init_searcher(oracle_cfg(tmp_path), str(own))
    assert torch.equal(searcher.dummy, torch.full((1, ), 3.0))


def test_partial_checkpoints_name_the_keys():
    model = ToyRegressor()
    state = model.state_dict()
    missing = {'linear.weight': state['linear.weight']}
    with pytest.raises(
            CheckpointMismatchError, match=r"1 are missing.*"
            r"\['linear.bias'\]"):
        check_checkpoint_fits(model, {'state_dict': missing}, 'a.pth')
    extra = dict(state, **{'head.fc.weight': torch.zeros(2)})
    with pytest.raises(
            CheckpointMismatchError,
            match=r"not in the model: \['head.fc.weight'\]"):
        check_checkpoint_fits(model, extra, 'b.pth')
    shape = dict(state, **{'linear.weight': torch.zeros(1, 5)})
    with pytest.raises(
            CheckpointMismatchError,
            match=r'another shape.*linear.weight \(1, 5\) vs '
            r'\(1, 4\)'):
        check_checkpoint_fits(model, shape, 'c.pth')
    # a DDP prefix and the legitimately absent BN counter are fine
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    bn_state = {
        f'module.{k}': v
        for k, v in bn.state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    fit = check_checkpoint_fits(bn, {'state_dict': bn_state}, 'bn.pth')
    assert fit['missing'] == [] and fit['loaded'] == 4
    # many keys: the first five are named, then the count
    with pytest.raises(CheckpointMismatchError, match=r'\.\.\. \(2 more\)'):
        check_checkpoint_fits(
            model, dict(state, **{f'x{i}': torch.zeros(1)
                                  for i in range(7)}), 'd.pth')


def test_load_from_another_model_warns_loudly(tmp_path, toy_config):
    # one weight of two loads (one that loads none is refused:
    # test_clear_errors.py)
    ckpt = tmp_path / 'other.pth'
    torch.save(
        {
            'state_dict': {
                'backbone.conv.weight': torch.zeros(3),
                'linear.weight': torch.zeros(1, 4)
            }
        }, ckpt)
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', f'load_from={ckpt}',
        'train_cfg.max_iters=1'
    ])
    log = proc.stdout + proc.stderr
    assert 'PARTIAL CHECKPOINT LOAD' in log
    assert f'checkpoint {ckpt} does not fit the model: 1 of the 2 weights' \
        in log
    assert '1 are missing' in log and '1 keys of the checkpoint' in log


@pytest.fixture(scope='module')
def tiny_sd(tmp_path_factory):
    from mmpsearch.testing.tiny_sd import make_tiny_sd
    return make_tiny_sd(str(tmp_path_factory.mktemp('tiny_sd')))


@pytest.mark.parametrize('name', ['psdiff', 'diffps', 'two_step'])
def test_own_checkpoints_of_every_searcher_load_strictly(
        name, tmp_path, tiny_sd):
    """A checkpoint of the model itself fits: the frozen Stable Diffusion
    of DiffPS is not in its state dict, nor expected; the two-step model's
    ReID and detector are."""
    config, options = {
        'psdiff': (PSDIFF, {}),
        'diffps': (DIFFPS, {
            'model.backbone.sd_path': tiny_sd
        }),
        'two_step': (BASELINE, {
            'model.reid.checkpoint': None
        }),
    }[name]
    model = init_searcher(config, cfg_options=dict(options))
    state = model.state_dict()
    if name == 'diffps':
        assert not any(k.startswith('backbone.') for k in state)
    if name == 'two_step':
        assert any(k.startswith('reid.') for k in state)
    ckpt = tmp_path / 'own.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    loaded = init_searcher(config, str(ckpt), cfg_options=dict(options))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_teacher_checkpoint_fits_its_model():
    register_all_modules()
    model = MODELS.build(Config.fromfile(TEACHER).model)
    fit = check_checkpoint_fits(model, {'state_dict': model.state_dict()},
                                'teacher.pth')
    assert fit['loaded'] == fit['total'] > 0


# ---------------------------------------------------------------------------
# 2. Teacher embeddings and non-finite losses
# ---------------------------------------------------------------------------
BOXES = {
    'a.jpg': [[10, 10, 50, 90], [60, 5, 100, 95]],
    'b.jpg': [[0, 0, 20, 40]],
}
D = 8


def _teacher_file(tmp_path, nan_row=None, boxes=BOXES, dim=D):
    rng = np.random.default_rng(0)
    ids = list(boxes)
    embeds = [
        rng.normal(size=(len(boxes[i]), dim)).astype(np.float32) for i in ids
    ]
    if nan_row is not None:
        img, row = nan_row
        embeds[ids.index(img)][row, 3] = NAN
    path = str(tmp_path / 'teacher.npz')
    save_teacher_embeddings(path, ids,
                            [np.asarray(boxes[i], np.float32) for i in ids],
                            embeds)
    return path


def test_teacher_file_with_a_nan_row_is_refused_when_opened(tmp_path):
    path = _teacher_file(tmp_path, nan_row=('b.jpg', 0))
    with pytest.raises(
            ValueError, match=r"row 2, box 0 of image 'b.jpg'") as info:
        TeacherEmbeddings(path)
    assert path in str(info.value) and 'not finite' in str(info.value)
    # the transform opens it on first use: the same error, before any loss
    gen = DualNoiseGenerator(
        path, diffusion=dict(num_proposals=4, embed_dims=D))
    with pytest.raises(ValueError, match='not finite'):
        gen.teacher


def test_teacher_file_with_a_broken_layout_is_refused(tmp_path):
    path = _teacher_file(tmp_path)
    data = dict(np.load(path))
    data['offsets'] = np.array([0, 2, 5])  # 5 rows claimed, 3 stored
    np.savez(path, **data)
    with pytest.raises(ValueError, match='offsets must be 3'):
        TeacherEmbeddings(path)


class _Dataset:
    """The part of a BaseDataset the check reads."""

    def __init__(self, boxes):
        self.infos = [
            dict(img_id=k, instances=[dict(bbox=b) for b in v])
            for k, v in boxes.items()
        ]
        self.pipeline = None

    def __len__(self):
        return len(self.infos)

    def get_data_info(self, i):
        return self.infos[i]


def _runner(gen, dataset, embed_dims=D):
    dataset.pipeline = SimpleNamespace(transforms=[gen])
    return SimpleNamespace(
        model=SimpleNamespace(
            bbox_head=SimpleNamespace(embed_dims=embed_dims)),
        train_dataloader=SimpleNamespace(dataset=dataset),
        logger=SimpleNamespace(info=lambda msg: None))


def test_teacher_file_must_cover_every_training_box(tmp_path):
    path = _teacher_file(tmp_path)
    hook = TeacherEmbeddingsCheckHook()
    gen = DualNoiseGenerator(path, diffusion=dict(num_proposals=4))
    hook.before_train(_runner(gen, _Dataset(BOXES)))  # fits
    # an image the file does not have, an image with one box more
    other = dict(BOXES, **{'c.jpg': [[1, 1, 9, 9]]})
    other['b.jpg'] = other['b.jpg'] + [[30, 30, 60, 90]]
    with pytest.raises(ValueError) as info:
        hook.before_train(_runner(gen, _Dataset(other)))
    msg = str(info.value)
    assert f'{path} does not fit the training set: 2 of its 3 images' in msg
    assert "'c.jpg'" in msg and "'b.jpg'" in msg
    # the model's width, also when the transform was not told it
    with pytest.raises(ValueError, match=r'8-d .* embeds in 16 dimensions'):
        hook.before_train(_runner(gen, _Dataset(BOXES), embed_dims=16))


def test_training_stops_at_the_first_nan_loss(tmp_path, toy_config):
    work = tmp_path / 'work'
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(work), '--cfg-options',
        'train_dataloader.dataset.nan_targets=True',
        'default_hooks.checkpoint.interval=1'
    ],
                    check=False)
    assert proc.returncode != 0
    assert 'non-finite loss term loss=nan at training iteration 1' in \
        proc.stderr
    assert 'no checkpoint was written' in proc.stderr
    assert not list(work.glob('*.pth'))
    assert 'Iter(train) [2/6]' not in proc.stdout + proc.stderr


def test_finite_loss_hook_names_the_term():
    hook = FiniteLossHook()
    runner = SimpleNamespace(iter=41, work_dir='wd')
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(1.0)))
    outputs = dict(
        loss=torch.tensor(NAN),
        loss_cls=torch.tensor(0.5),
        loss_reid=torch.tensor(float('inf')),
        acc=torch.tensor(NAN))  # not a loss: not checked
    with pytest.raises(
            NonFiniteLossError,
            match=r'term loss_reid=inf at training iteration 42'):
        hook.after_train_iter(runner, 0, outputs=outputs)


def test_every_training_config_has_the_checks():
    register_all_modules()
    for path in sorted((REPO / 'configs').glob('*/*.py')):
        if path.parent.name == '_base_':
            continue
        cfg = Config.fromfile(str(path))
        if cfg.get('train_dataloader') is None:
            continue
        hooks = cfg.default_hooks
        for key, cls in (('finite_loss', 'FiniteLossHook'),
                         ('teacher_check', 'TeacherEmbeddingsCheckHook'),
                         ('checkpoint_fit', 'CheckpointFitHook')):
            assert cls in str(hooks.get(key, {}).get('type')), (path, key)


# ---------------------------------------------------------------------------
# 3. Thresholds
# ---------------------------------------------------------------------------
def test_evaluation_refuses_a_nan_or_out_of_range_score_thr():
    results, protocol = cuhk_case()
    assert evaluate_person_search(results, protocol, score_thr=0.5)['mAP'] > 0
    for bad in (NAN, 5, -0.1):
        with pytest.raises(
                ValueError,
                match=f'score_thr must be a number in '
                rf'\[0, 1\], got {bad}'):
            evaluate_person_search(results, protocol, score_thr=bad)
    with pytest.raises(ValueError, match='score_thr'):
        PersonSearchMetric(dataset_type='cuhk', data_root='x', score_thr=True)


@pytest.mark.parametrize('value', ['nan', '5'])
@pytest.mark.parametrize('tool, flag', [('eval_search', '--score-thr'),
                                        ('search_errors', '--score-thr'),
                                        ('score_calibration', '--thr')])
def test_analysis_tools_refuse_a_score_thr_option(tool, flag, value, tmp_path,
                                                  capsys):
    results = tmp_path / 'results.pkl'
    results.write_bytes(b'')
    main = load_tool(f'tools/analysis_tools/{tool}.py').main
    with pytest.raises(SystemExit) as info:
        main([
            str(results), '--dataset', 'cuhk', '--data-root',
            str(tmp_path), flag, value
        ])
    assert info.value.code == 2
    assert f"argument {flag}: must be a number in [0, 1], got " \
        f"'{value}'" in capsys.readouterr().err


def test_psdiff_refuses_a_nan_score_thr():
    with pytest.raises(
            ValueError,
            match=r'model.test_cfg.score_thr must be a number in '
            r'\[0, 1\], got nan'):
        init_searcher(PSDIFF, cfg_options={'model.test_cfg.score_thr': NAN})
    with pytest.raises(ValueError, match='model.test_cfg.nms.iou_threshold'):
        init_searcher(
            PSDIFF, cfg_options={'model.test_cfg.nms.iou_threshold': 2})
    # changed on a built model: refused where it is changed, and the
    # threshold in force stays
    searcher = init_searcher(PSDIFF)
    with pytest.raises(ValueError, match='model.test_cfg.score_thr'):
        searcher.test_cfg.score_thr = NAN
    assert searcher.test_cfg.score_thr == 0.5
    with pytest.raises(ValueError, match='index_gallery: score_thr'):
        index_gallery(searcher, ['nowhere.jpg'], score_thr=5)


def test_diffps_refuses_a_nan_rcnn_score_thr(tiny_sd):
    with pytest.raises(
            ValueError,
            match=r'model.test_cfg.rcnn.score_thr '
            r'must be a number in \[0, 1\], got nan'):
        init_searcher(
            DIFFPS,
            cfg_options={
                'model.backbone.sd_path': tiny_sd,
                'model.test_cfg.rcnn.score_thr': NAN
            })


def test_two_step_refuses_a_nan_rcnn_score_thr():
    with pytest.raises(
            ValueError,
            match=r'model.detector.test_cfg.rcnn.score_thr must be'
            r' a number in \[0, 1\], got 5'):
        init_searcher(
            BASELINE,
            cfg_options={
                'model.reid.checkpoint': None,
                'model.detector.test_cfg.rcnn.score_thr': 5
            })
    searcher = init_searcher(
        BASELINE, cfg_options={'model.reid.checkpoint': None})
    # changed on a built model, through the head or the detector's
    # test_cfg (one object, as mmdet shares it): refused where it is changed
    with pytest.raises(
            ValueError,
            match=r'model.detector.test_cfg.rcnn.score_thr must be'
            r' a number in \[0, 1\], got nan'):
        searcher.detector.roi_head.test_cfg.score_thr = NAN
    with pytest.raises(ValueError, match='rcnn.nms.iou_threshold'):
        searcher.detector.test_cfg.rcnn.nms.iou_threshold = 2
    assert searcher.detector.roi_head.test_cfg.score_thr == 0.05
    searcher.detector.test_cfg.rcnn.score_thr = 0.3
    assert searcher.detector.roi_head.test_cfg.score_thr == 0.3
    searcher.check_test_cfg()
