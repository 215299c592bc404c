# Copyright (c) mmpsearch contributors. All rights reserved.
"""The real-dataset path of PSDiff end to end, through the tools a user runs,
on a tree in the released CUHK-SYSU format:

    tools/train.py configs/teacher/teacher_synthetic.py        (ReID teacher)
    tools/extract_teacher_embeddings.py ... --out emb.npz      (e_0 per box)
    tools/train.py configs/psdiff/psdiff_r18_synthetic.py      (PSDiff)
    tools/test.py ... --out results.pkl                        (search metric)
    tools/analysis_tools/eval_search.py results.pkl            (re-score)

each in its own process, shrunk with ``--cfg-options`` only. The tools run
with an empty folder as working directory, so a path the overrides missed
(the configs' ``data/...`` and ``work_dirs/...`` defaults) fails instead of
silently reading or writing the user's files.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from scipy.io import loadmat

from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
from mmpsearch.datasets.teacher_cache import TeacherEmbeddings
from mmpsearch.evaluation.results_io import load_search_results
from mmpsearch.testing.files import tree_digest
from mmpsearch.utils import safe_torch_load
from .conftest import REPO, run_tool

TEACHER_CONFIG = str(REPO / 'configs' / 'teacher' / 'teacher_synthetic.py')
PSDIFF_CONFIG = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')
IMAGE_SIZE = (96, 64)  # (w, h): make_synthetic's scenes, used unscaled
WIDTH = 8  # first-stage channels of both ResNet-18s -> 64-d embeddings
EMBED_DIM = WIDTH * 8
TEACHER_ITERS = 10
PSDIFF_ITERS = 4
SEARCH_KEYS = ('mAP', 'top1', 'top5', 'top10')
DET_KEYS = ('det_ap', 'det_recall', 'labeled_det_ap', 'labeled_det_recall')


def options(opts: dict) -> list:
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def train_boxes_from_mat(root: Path) -> dict:
    """img name -> x1y1x2y2 boxes of every annotated box of the training
    images, read straight from the released files (Images.mat minus
    pool.mat; boxes with w or h <= 0 dropped, as released)."""
    anno = root / 'annotation'
    pool = set(
        np.atleast_1d(
            loadmat(str(anno / 'pool.mat'), squeeze_me=True)['pool']).tolist())
    imgs = loadmat(
        str(anno / 'Images.mat'), squeeze_me=True,
        struct_as_record=False)['Img']
    out = {}
    for img in np.atleast_1d(imgs):
        if img.imname in pool:
            continue
        boxes = []
        for box in np.atleast_1d(img.box):
            x, y, w, h = np.asarray(box.idlocate, np.float64).ravel()
            if w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
        out[img.imname] = np.asarray(boxes, np.float32).reshape(-1, 4)
    return out


def data_options(loader: str, root: Path, scale: tuple) -> dict:
    """A PSDiff val/test loader (gallery + query splits) on ``root``."""
    opts = {}
    for k in range(2):
        opts[f'{loader}.dataset.datasets.{k}.data_root'] = root
        opts[f'{loader}.dataset.datasets.{k}.pipeline.1.scale'] = scale
    return opts


def psdiff_model_options() -> dict:
    return {
        'model.backbone.base_channels': WIDTH,
        'model.neck.in_channels': f'[{WIDTH},{2 * WIDTH},{4 * WIDTH},'
        f'{8 * WIDTH}]',
        'model.bbox_head.diffusion.embed_dims': EMBED_DIM,
    }


def tool_workspace(tmp_path_factory, name: str) -> tuple:
    """A new folder ``base`` (named ``name``) holding ``cwd``, the tools'
    working directory (it stays empty), and ``root``, the smallest tree the
    CUHK-SYSU format allows (101 gallery images for TestG100), 4 training
    and 4 test identities; and make_synthetic's summary of the tree."""
    base = tmp_path_factory.mktemp(name)
    cwd = base / 'cwd'
    cwd.mkdir()
    root = base / 'cuhk'
    made = make_synthetic(
        'cuhk', str(root), num_images=202, num_ids=8, image_size=IMAGE_SIZE)
    return base, cwd, root, made


@pytest.fixture(scope='module')
def chain(tmp_path_factory, one_torch_thread):
    times = {}
    scale = f'({IMAGE_SIZE[0]},{IMAGE_SIZE[1]})'

    # 1. The tools' working directory and the smallest CUHK-SYSU tree.
    t0 = time.time()
    base, cwd, root, made = tool_workspace(tmp_path_factory, 'psdiff_chain')
    times['make_synthetic'] = time.time() - t0

    # 2. The ReID teacher, through tools/train.py.
    t0 = time.time()
    teacher_dir = base / 'teacher'
    crop = '(32,64)'  # (w, h) instead of (64, 128)
    teacher_opts = {
        'model.backbone.stem_channels': WIDTH,
        'model.backbone.base_channels': WIDTH,
        'model.head.in_channels': EMBED_DIM,
        'model.head.num_classes': made['num_train_ids'],
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        teacher_opts.update({
            f'{loader}.dataset.dataset.data_root':
            root,
            f'{loader}.dataset.num_classes':
            made['num_train_ids'],
            f'{loader}.dataset.pipeline.2.scale':
            crop,
            f'{loader}.batch_size':
            16,
            f'{loader}.num_workers':
            0,
            f'{loader}.persistent_workers':
            False,
        })
    argv = ['tools/train.py', TEACHER_CONFIG, '--work-dir', str(teacher_dir)]
    run_tool(
        argv + options({
            **teacher_opts,
            'train_cfg.max_iters': TEACHER_ITERS,
            'train_cfg.val_begin': TEACHER_ITERS + 1,  # no validation
            'param_scheduler.0.end': 2,
            'param_scheduler.1.begin': 2,
            'param_scheduler.1.end': TEACHER_ITERS,
            'default_hooks.checkpoint.interval': TEACHER_ITERS,
        }),
        cwd=cwd)
    teacher_ckpt = Path((teacher_dir / 'last_checkpoint').read_text().strip())
    assert teacher_ckpt == teacher_dir / f'iter_{TEACHER_ITERS}.pth'
    assert teacher_ckpt.is_file()
    times['train teacher'] = time.time() - t0

    # 3. One teacher embedding per annotated training box.
    t0 = time.time()
    embeds = base / 'teacher_embeddings.npz'
    extract_opts = {
        k: v
        for k, v in teacher_opts.items()
        if k.startswith(('model.', 'test_dataloader.dataset.'))
    }
    argv = [
        'tools/extract_teacher_embeddings.py', TEACHER_CONFIG,
        str(teacher_ckpt), '--out',
        str(embeds), '--device', 'cpu', '--num-workers', '0'
    ]
    proc = run_tool(argv + options(extract_opts), cwd=cwd)
    times['extract embeddings'] = time.time() - t0
    before_psdiff = tree_digest(base)

    # 4. PSDiff, through tools/train.py on the committed synthetic config.
    t0 = time.time()
    psdiff_dir = base / 'psdiff'
    psdiff_opts = {
        **psdiff_model_options(),
        'train_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.2.scale': scale,
        'train_dataloader.dataset.pipeline.4.teacher_embeds': embeds,
        'train_dataloader.dataset.pipeline.4.diffusion.embed_dims': EMBED_DIM,
        # the Runner builds the validation loader even when it never runs
        **data_options('val_dataloader', root, scale),
        'val_evaluator.data_root': root,
        'train_cfg.max_iters': PSDIFF_ITERS,
        'train_cfg.val_begin': PSDIFF_ITERS + 1,
        'default_hooks.checkpoint.interval': PSDIFF_ITERS,
        'default_hooks.logger.interval': 1,
        'randomness.seed': 0,
    }
    init_cfg = Config.fromfile(PSDIFF_CONFIG).model.backbone.get('init_cfg')
    backbone_from_teacher = bool(init_cfg) and 'checkpoint' in init_cfg
    if backbone_from_teacher:
        psdiff_opts['model.backbone.init_cfg.checkpoint'] = teacher_ckpt
    argv = ['tools/train.py', PSDIFF_CONFIG, '--work-dir', str(psdiff_dir)]
    train_proc = run_tool(argv + options(psdiff_opts), cwd=cwd)
    psdiff_ckpt = psdiff_dir / f'iter_{PSDIFF_ITERS}.pth'
    assert psdiff_ckpt.is_file()
    times['train psdiff'] = time.time() - t0

    # 5. tools/test.py on the gallery + query splits, 2 DDIM steps. Every
    # detection is kept (score_thr 0: a 4-iteration model scores below
    # the config's 0.3), so the results are not empty.
    t0 = time.time()
    test_dir = base / 'test'
    results = base / 'results.pkl'
    argv = [
        'tools/test.py', PSDIFF_CONFIG,
        str(psdiff_ckpt), '--work-dir',
        str(test_dir), '--out',
        str(results)
    ]
    test_proc = run_tool(
        argv + options({
            **psdiff_model_options(),
            **data_options('test_dataloader', root, scale),
            'test_evaluator.data_root':
            root,
            'test_evaluator.score_thr':
            0.0,
            'model.test_cfg.score_thr':
            0.0,
            'model.test_cfg.sampling_steps':
            2,
        }),
        cwd=cwd)
    times['test'] = time.time() - t0

    # 6. Re-score the results file offline.
    t0 = time.time()
    rescored = base / 'rescored.json'
    argv = [
        'tools/analysis_tools/eval_search.py',
        str(results), '--dataset', 'cuhk', '--data-root',
        str(root), '--gallery-size', '100', '--score-thr', '0.0', '--json',
        str(rescored)
    ]
    eval_proc = run_tool(argv, cwd=cwd)
    times['eval_search'] = time.time() - t0
    print('\nchain step times (s): ' + ', '.join(f'{k} {v:.1f}'
                                                 for k, v in times.items()))
    return dict(
        base=base,
        cwd=cwd,
        root=root,
        made=made,
        teacher_ckpt=teacher_ckpt,
        embeds=embeds,
        extract_log=proc.stdout + proc.stderr,
        before_psdiff=before_psdiff,
        backbone_from_teacher=backbone_from_teacher,
        train_log=train_proc.stdout + train_proc.stderr,
        psdiff_ckpt=psdiff_ckpt,
        test_dir=test_dir,
        test_log=test_proc.stdout + test_proc.stderr,
        results=results,
        rescored=rescored,
        eval_log=eval_proc.stdout + eval_proc.stderr)


def test_one_teacher_embedding_per_train_box(chain):
    boxes = train_boxes_from_mat(chain['root'])
    n_boxes = sum(len(b) for b in boxes.values())
    assert len(boxes) == chain['made']['num_train_images']
    assert n_boxes > len(boxes)  # several persons per scene
    cache = TeacherEmbeddings(str(chain['embeds']))
    assert cache.dim == EMBED_DIM
    assert len(cache.embeddings) == n_boxes
    assert len(cache.boxes) == n_boxes
    for name, b in boxes.items():
        # get() also checks the stored boxes are these (within 0.5 px)
        rows = cache.get(name, b)
        assert rows.shape == (len(b), EMBED_DIM)
        assert np.isfinite(rows).all()
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)
    assert f'wrote {n_boxes} embeddings (dim {EMBED_DIM}) of {len(boxes)} ' \
        'images' in chain['extract_log']


def test_psdiff_trained_on_the_teacher(chain):
    log = chain['train_log']
    assert f'Iter(train) [{PSDIFF_ITERS}/{PSDIFF_ITERS}]' in log
    assert 'loss_reid' in log
    assert 'size mismatch' not in log
    if not chain['backbone_from_teacher']:
        return  # the config trains its backbone from scratch
    assert f'load backbone. in model from: {chain["teacher_ckpt"]}' in log
    # The backbone started from the teacher's: a few warm-up steps (lr
    # ~1e-5) later its weights are still the teacher's, to far less than
    # the spread of a random initialisation.
    teacher = safe_torch_load(str(chain['teacher_ckpt']))['state_dict']
    psdiff = safe_torch_load(str(chain['psdiff_ckpt']))['state_dict']
    keys = [
        k for k in teacher
        if k.startswith('backbone.') and k.endswith(('weight', 'bias'))
    ]
    assert len(keys) > 20
    for k in keys:
        assert psdiff[k].shape == teacher[k].shape, k
        assert (psdiff[k] - teacher[k]).abs().max() < 1e-3, k


def test_test_py_reports_the_search_metric(chain):
    log = chain['test_log']
    assert 'person-search results saved to' in log
    assert 'person search' in log and 'gallery 100' in log  # the table
    assert 'search/mAP:' in log
    # mmengine's LoggerHook saves the test metrics beside the log
    saved = sorted(chain['test_dir'].glob('*/*.json'))
    assert len(saved) == 1, saved
    metrics = json.loads(saved[0].read_text())
    for key in SEARCH_KEYS + DET_KEYS:
        value = metrics[f'search/{key}']
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        assert 0.0 <= value <= 1.0, (key, value)


def test_results_file_rescores_to_the_same_metric(chain):
    protocol = load_cuhk_protocol(str(chain['root']), 100)
    results = load_search_results(str(chain['results']), protocol)
    assert set(results['gallery']) == set(protocol.gallery)
    assert len(results['gallery']) == chain['made']['num_gallery_images']
    assert len(results['query']) == chain['made']['num_queries']
    for det in results['gallery'].values():
        n = len(det['bboxes'])
        assert n >= 1  # score_thr 0 keeps detections in every image
        assert det['embeddings'].shape == (n, EMBED_DIM)
    for q in results['query']:
        assert q['embedding'].shape == (EMBED_DIM, )

    reported = json.loads(
        sorted(chain['test_dir'].glob('*/*.json'))[0].read_text())
    rescored = json.loads(chain['rescored'].read_text())
    for key in SEARCH_KEYS + DET_KEYS:
        assert abs(rescored[key] - reported[f'search/{key}']) <= 1e-6, (
            key, rescored[key], reported[f'search/{key}'])
    assert 'gallery 100' in chain['eval_log']


def test_no_file_is_overwritten_or_written_elsewhere(chain):
    after = tree_digest(chain['base'])
    changed = [
        p for p, digest in chain['before_psdiff'].items()
        if after.get(p) != digest
    ]
    assert not changed, changed
    # the teacher checkpoint, its embeddings and the tree are all still there
    for path in (chain['teacher_ckpt'], chain['embeds'],
                 chain['root'] / 'annotation' / 'Images.mat'):
        assert str(path.relative_to(chain['base'])) in after
    # nothing went to a default relative path (data/..., work_dirs/...)
    assert not any(chain['cwd'].iterdir())
