# Copyright (c) mmpsearch contributors. All rights reserved.
"""TwoStepPersonSearch (a detector, then a frozen ReID model on the crops of
its detections) on a tiny Faster R-CNN and a tiny synthetic ReID teacher:
training, frozen ReID, output format, the embedding against
tools/extract_teacher_embeddings.py, tools/test.py and benchmark.py."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from mmpsearch.apis import build_crop_dataset, extract_teacher_embeddings
from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
from mmpsearch.evaluation.results_io import load_search_results
from mmpsearch.models.detectors import TwoStepPersonSearch
from mmpsearch.registry import DATASETS, MODELS
from mmpsearch.testing import quiet_init_weights
from mmpsearch.utils import register_all_modules
from tests.test_tools.conftest import run_tool
from ...conftest import load_tool

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / 'configs' / 'baseline' /
             'faster_rcnn_r18_teacher_synthetic.py')
TEACHER_CONFIG = str(REPO / 'configs' / 'teacher' / 'teacher_synthetic.py')
PSDIFF_CONFIG = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')
IMAGE_SIZE = (160, 120)  # (w, h) of make_synthetic's scenes
WIDTH = 8  # first-stage channels of both ResNet-18s -> 64-d embeddings
EMBED_DIM = WIDTH * 8
CHANNELS = 16  # FPN width
DET_LOSSES = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'acc'}

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def teacher_options(root: str) -> dict:
    """Shrink teacher_synthetic.py: 8-channel ResNet-18, the tiny tree."""
    return {
        'model.backbone.stem_channels': WIDTH,
        'model.backbone.base_channels': WIDTH,
        'model.head.in_channels': EMBED_DIM,
        'model.head.num_classes': 4,
        'test_dataloader.dataset.dataset.data_root': root,
        'test_dataloader.dataset.num_classes': None,
    }


def baseline_options(root: str, ckpt, scale=IMAGE_SIZE) -> dict:
    """Shrink the synthetic baseline config to a test size, on ``root``."""
    opts = {
        'model.detector.backbone.base_channels': WIDTH,
        'model.detector.backbone.init_cfg.checkpoint': ckpt,
        'model.detector.neck.in_channels': [WIDTH * 2**k for k in range(4)],
        'model.detector.neck.out_channels': CHANNELS,
        'model.detector.rpn_head.in_channels': CHANNELS,
        'model.detector.rpn_head.feat_channels': CHANNELS,
        'model.detector.roi_head.bbox_roi_extractor.out_channels': CHANNELS,
        'model.detector.roi_head.bbox_head.in_channels': CHANNELS,
        'model.detector.roi_head.bbox_head.fc_out_channels': 32,
        'model.detector.train_cfg.rpn_proposal.max_per_img': 200,
        'model.detector.train_cfg.rcnn.sampler.num': 64,
        'model.detector.test_cfg.rpn.max_per_img': 100,
        'model.detector.test_cfg.rcnn.max_per_img': 10,
        'model.reid.model.backbone.stem_channels': WIDTH,
        'model.reid.model.backbone.base_channels': WIDTH,
        'model.reid.checkpoint': ckpt,
        'train_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.2.scale': tuple(scale),
        'val_evaluator.data_root': root,
        'test_evaluator.data_root': root,
    }
    for loader in ('val_dataloader', 'test_dataloader'):
        for k in range(2):  # gallery, query
            opts[f'{loader}.dataset.datasets.{k}.data_root'] = root
            opts[f'{loader}.dataset.datasets.{k}.pipeline.1.scale'] = \
                tuple(scale)
    return opts


def cli(opts: dict) -> list:
    """``--cfg-options`` of a dict (lists and tuples without spaces)."""

    def text(v):
        if isinstance(v, (list, tuple)):
            inner = ','.join(str(x) for x in v)
            return f'[{inner}]' if isinstance(v, list) else f'({inner})'
        return str(v)

    return ['--cfg-options'] + [f'{k}={text(v)}' for k, v in opts.items()]


def baseline_cfg(root: str, ckpt, scale=IMAGE_SIZE, **more) -> Config:
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({**baseline_options(root, ckpt, scale), **more})
    return cfg


def build(cfg: Config) -> TwoStepPersonSearch:
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    quiet_init_weights(model)
    return model


def split_dataset(cfg: Config, split: int, scale=None):
    """The test loader's gallery (0) or query (1) dataset."""
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset.datasets[split])
    if scale is not None:
        ds_cfg.pipeline[1].scale = tuple(scale)
    return DATASETS.build(ds_cfg)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, one_torch_thread):
    """The tiny CUHK-SYSU tree and a tiny ReID teacher checkpoint (random
    weights, random BN statistics so eval-mode BN is not the identity)."""
    register_all_modules(init_default_scope=False)
    base = tmp_path_factory.mktemp('two_step')
    root = str(base / 'cuhk')
    made = make_synthetic(
        'cuhk', root, num_images=202, num_ids=8, image_size=IMAGE_SIZE)
    teacher_cfg = Config.fromfile(TEACHER_CONFIG)
    teacher_cfg.merge_from_dict(teacher_options(root))
    torch.manual_seed(0)
    teacher = MODELS.build(teacher_cfg.model)
    quiet_init_weights(teacher)
    g = torch.Generator().manual_seed(0)
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    ckpt = str(base / 'teacher.pth')
    torch.save(dict(meta={}, state_dict=teacher.state_dict()), ckpt)
    return dict(
        base=base, root=root, made=made, ckpt=ckpt, teacher_cfg=teacher_cfg)


@pytest.fixture(scope='module')
def trained(tiny):
    """The tiny baseline after 10 training steps on two images (through
    ``train_step`` and the config's optimizer, at a higher rate), saved as
    a checkpoint of the whole model."""
    cfg = baseline_cfg(tiny['root'], tiny['ckpt'])
    model = build(cfg)
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    batch = pseudo_collate([train_set[0], train_set[1]])
    cfg.optim_wrapper.optimizer.lr = 1e-3
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    reid_before = {k: v.clone() for k, v in model.reid.state_dict().items()}
    det_before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    model.train()
    torch.manual_seed(0)
    history = []
    for _ in range(10):
        log_vars = model.train_step(copy.deepcopy(batch), optim_wrapper)
        history.append({
            k: float(torch.as_tensor(v).detach())
            for k, v in log_vars.items()
        })
    modes = dict(
        model=model.training,
        detector=model.detector.training,
        reid=model.reid.training,
        reid_modules=any(m.training for m in model.reid.modules()))
    ckpt = str(tiny['base'] / 'baseline.pth')
    torch.save(dict(meta={}, state_dict=model.state_dict()), ckpt)
    model.eval()
    return dict(
        cfg=cfg,
        model=model,
        history=history,
        modes=modes,
        reid_before=reid_before,
        det_before=det_before,
        optim_wrapper=optim_wrapper,
        ckpt=ckpt)


def _predict(model, samples, rescale=True):
    data = model.data_preprocessor(pseudo_collate(samples), False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'], rescale)
    return data, [s.pred_instances for s in out]


# ----------------------------------------------------------------- configs
def test_synthetic_config_builds_as_specified():
    cfg = Config.fromfile(CONFIG)
    model_cfg = cfg.model
    det = model_cfg.detector
    assert det.type.__name__ == 'FasterRCNN'
    assert det.roi_head.bbox_head.num_classes == 1
    # PSDiff-synthetic's slim backbone, strictly from the teacher
    assert (det.backbone.depth, det.backbone.base_channels) == (18, 32)
    assert det.backbone.init_cfg.type.__name__ == 'StrictPretrainedInit'
    assert det.backbone.init_cfg.prefix == 'backbone.'
    assert det.neck.in_channels == [32, 64, 128, 256]
    assert det.neck.out_channels == 64
    assert det.test_cfg.rcnn == dict(
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100)
    # one teacher checkpoint for the ReID and the backbone init
    assert cfg.teacher_ckpt == 'work_dirs/teacher_synthetic/iter_150.pth'
    assert model_cfg.reid.checkpoint == cfg.teacher_ckpt
    assert det.backbone.init_cfg.checkpoint == cfg.teacher_ckpt
    assert tuple(model_cfg.reid.crop_size) == (128, 64)
    teacher = Config.fromfile(TEACHER_CONFIG)
    assert model_cfg.reid.model.backbone == teacher.model.backbone
    assert model_cfg.reid.model.data_preprocessor == \
        teacher.model.data_preprocessor
    # the plain training pipeline, batch 4, 1500 iterations, AdamW 2e-4
    types = [t['type'].__name__ for t in cfg.train_dataloader.dataset.pipeline]
    assert 'DualNoiseGenerator' not in types
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.train_cfg.max_iters == 1500
    assert cfg.optim_wrapper.optimizer.type.__name__ == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.test_evaluator.score_thr == 0.5
    assert cfg.test_evaluator.type == 'PersonSearchMetric'

    register_all_modules(init_default_scope=False)
    cfg.model.reid.checkpoint = None
    model = MODELS.build(cfg.model)
    assert isinstance(model, TwoStepPersonSearch)
    assert model.reid.crop_size == (128, 64)
    # only backbone + neck are kept
    assert 'head' not in dict(model.reid.named_children())
    assert not any(p.requires_grad for p in model.reid.parameters())
    assert all(p.requires_grad for p in model.detector.parameters())
    # the detector's backbone has the teacher's shapes (the strict init)
    teacher_backbone = {
        k: v.shape
        for k, v in model.reid.backbone.state_dict().items()
    }
    assert {
        k: v.shape
        for k, v in model.detector.backbone.state_dict().items()
    } == teacher_backbone


@pytest.mark.parametrize('name,dataset,teacher', [
    ('faster_rcnn_r50_teacher_cuhk', 'cuhk', 'teacher_r50_cuhk'),
    ('faster_rcnn_r50_teacher_prw', 'prw', 'teacher_r50_prw'),
])
def test_r50_configs(name, dataset, teacher):
    cfg = Config.fromfile(str(REPO / 'configs' / 'baseline' / f'{name}.py'))
    det = cfg.model.detector
    assert det.backbone.depth == 50
    assert det.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='torchvision://resnet50')
    assert det.roi_head.bbox_head.num_classes == 1
    assert cfg.reid_checkpoint == f'work_dirs/{teacher}/epoch_60.pth'
    assert cfg.model.reid.checkpoint == cfg.reid_checkpoint
    assert tuple(cfg.model.reid.crop_size) == (256, 128)
    teacher_cfg = Config.fromfile(
        str(REPO / 'configs' / 'teacher' / f'{teacher}.py'))
    assert teacher_cfg.train_cfg.max_epochs == 60  # -> epoch_60.pth
    assert cfg.model.reid.model.backbone == teacher_cfg.model.backbone
    assert cfg.test_evaluator.dataset_type == dataset
    assert cfg.test_evaluator.score_thr == 0.5
    assert cfg.train_cfg.max_epochs == 12  # mmdet's 1x
    assert cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    if dataset == 'cuhk':
        register_all_modules(init_default_scope=False)
        cfg.model.reid.checkpoint = None
        model = MODELS.build(cfg.model)
        n_det = sum(p.numel() for p in model.detector.parameters())
        n_reid = sum(p.numel() for p in model.reid.parameters())
        assert 40e6 < n_det < 43e6, n_det  # Faster R-CNN R50-FPN, 2 classes
        assert 23e6 < n_reid < 24e6, n_reid  # ResNet-50 without fc


# ---------------------------------------------------------------- training
def test_loss_is_the_detectors_finite_and_falls(trained):
    history = trained['history']
    for step in history:
        assert set(step) == DET_LOSSES | {'loss'}, sorted(step)
        assert all(math.isfinite(v) for v in step.values()), step
    totals = [h['loss'] for h in history]
    print('\nbaseline training loss: ' + ' '.join(f'{t:.3f}' for t in totals))
    first, last = np.mean(totals[:3]), np.mean(totals[-3:])
    assert last < 0.8 * first, totals


def test_reid_is_frozen_and_stays_in_eval_mode(trained):
    model = trained['model']
    modes = trained['modes']
    assert modes['model'] and modes['detector']
    assert not modes['reid'] and not modes['reid_modules']
    # no weight and no BN statistic of the ReID moved in 10 steps
    after = model.reid.state_dict()
    assert set(after) == set(trained['reid_before'])
    for k, v in trained['reid_before'].items():
        assert torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.reid.parameters())
    assert not any(p.requires_grad for p in model.reid.parameters())
    # ... while the detector trained
    det = model.detector.state_dict()
    changed = [
        k for k, v in trained['det_before'].items()
        if not torch.equal(det[k], v)
    ]
    assert any('backbone.' in k for k in changed)
    assert any('roi_head.' in k for k in changed)
    # the optimizer holds no ReID parameter that could move
    reid_ids = {id(p) for p in model.reid.parameters()}
    for group in trained['optim_wrapper'].optimizer.param_groups:
        for p in group['params']:
            assert id(p) not in reid_ids or not p.requires_grad
    model.train()
    assert not model.reid.training and model.detector.training
    model.eval()


def test_checkpoint_is_self_contained(trained, tiny):
    state = torch.load(trained['ckpt'], weights_only=True)['state_dict']
    teacher = torch.load(tiny['ckpt'], weights_only=True)['state_dict']
    reid_keys = [k for k in state if k.startswith('reid.')]
    assert reid_keys and not any(k.startswith('reid.head.') for k in reid_keys)
    for k in reid_keys:
        assert torch.equal(state[k], teacher[k[len('reid.'):]]), k
    # a model built without the teacher's file gets the ReID from the
    # checkpoint of the whole model
    cfg = copy.deepcopy(trained['cfg'])
    cfg.model.reid.checkpoint = None
    fresh = build(cfg)
    assert not torch.equal(fresh.reid.backbone.conv1.weight,
                           teacher['backbone.conv1.weight'])
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.reid.backbone.conv1.weight,
                       teacher['backbone.conv1.weight'])


def test_reid_checkpoint_errors_name_the_path(tiny, tmp_path):
    missing = str(tmp_path / 'no_such_dir' / 'teacher.pth')
    with pytest.raises(FileNotFoundError, match='no_such_dir/teacher.pth'):
        MODELS.build(baseline_cfg(tiny['root'], missing).model)
    # a teacher of another width is refused, not loaded partially
    cfg = baseline_cfg(tiny['root'], tiny['ckpt'])
    cfg.model.reid.model.backbone.base_channels = 2 * WIDTH
    with pytest.raises(RuntimeError, match='teacher.pth does not fit'):
        MODELS.build(cfg.model)
    with pytest.raises(KeyError, match='crop_sizes'):
        MODELS.build(
            dict(cfg.model, reid=dict(cfg.model.reid, crop_sizes=(1, 1))))


# --------------------------------------------------------------- inference
def test_predict_gallery_and_query(trained):
    model = trained['model']
    cfg = trained['cfg']
    scale = (2 * IMAGE_SIZE[0], 2 * IMAGE_SIZE[1])  # the input is 2x
    gallery = split_dataset(cfg, 0, scale)
    query = split_dataset(cfg, 1, scale)
    samples = [gallery[0], query[0], gallery[1]]
    rcnn = model.detector.test_cfg.rcnn
    rcnn.score_thr = 0.0  # a 10-step detector: keep its 10 best boxes
    try:
        data, res = _predict(model, samples)
        _, unscaled = _predict(model, samples, rescale=False)
    finally:
        rcnn.score_thr = 0.05
    metas = [s.metainfo for s in data['data_samples']]
    assert [m['split'] for m in metas] == ['gallery', 'query', 'gallery']
    assert metas[0]['scale_factor'] == (2.0, 2.0)
    w, h = IMAGE_SIZE
    for i in (0, 2):
        r = res[i]
        n = len(r)
        assert n == 10
        assert r.bboxes.shape == (n, 4) and r.bboxes.dtype == torch.float32
        assert r.scores.shape == (n, ) and r.scores.dtype == torch.float32
        assert r.labels.shape == (n, ) and r.labels.dtype == torch.long
        assert (r.labels == 0).all()
        assert torch.all(r.scores[:-1] >= r.scores[1:])
        assert r.embeddings.shape == (n, EMBED_DIM)
        assert r.embeddings.dtype == torch.float32
        torch.testing.assert_close(r.embeddings.norm(dim=1), torch.ones(n))
        # original pixels: inside the 160x120 image, not the 320x240 input
        assert r.bboxes.min() >= 0
        assert r.bboxes[:, 0::2].max() <= w and r.bboxes[:, 1::2].max() <= h
        torch.testing.assert_close(unscaled[i].bboxes, 2 * r.bboxes)
        # each row is its box's embedding
        emb = model.embed_boxes(data['inputs'][i:i + 1], [r.bboxes],
                                [metas[i]])[0]
        torch.testing.assert_close(r.embeddings, emb)
    # the query: its given box in original pixels, score 1, label 0
    q = res[1]
    given = query[0]['data_samples'].gt_instances.bboxes.tensor
    assert len(q) == 1
    assert torch.equal(q.bboxes, given)
    assert q.scores.tolist() == [1.0] and q.labels.tolist() == [0]
    assert q.embeddings.shape == (1, EMBED_DIM)
    torch.testing.assert_close(q.embeddings.norm(dim=1), torch.ones(1))
    torch.testing.assert_close(unscaled[1].bboxes, 2 * given)
    # a query does not depend on its batch
    _, alone = _predict(model, [query[0]])
    torch.testing.assert_close(alone[0].embeddings, q.embeddings)
    # the box matters
    moved = copy.deepcopy(query[0])
    moved['data_samples'].gt_instances.bboxes = HorizontalBoxes(
        given + torch.tensor([[20., 0, 20, 0]]))
    _, other = _predict(model, [moved])
    assert not torch.allclose(other[0].embeddings, q.embeddings, atol=1e-3)


def test_query_without_exactly_one_box_is_an_error(trained):
    model = trained['model']
    query = split_dataset(trained['cfg'], 1)
    sample = copy.deepcopy(query[0])
    img_id = sample['data_samples'].metainfo['img_id']
    gt = sample['data_samples'].gt_instances
    sample['data_samples'].gt_instances = InstanceData(
        bboxes=HorizontalBoxes(gt.bboxes.tensor.repeat(2, 1)),
        labels=gt.labels.repeat(2))
    with pytest.raises(ValueError, match=f'query image {img_id}.* 2 boxes'):
        _predict(model, [sample])
    del sample['data_samples'].gt_instances
    with pytest.raises(ValueError, match=f'query image {img_id}.* 0 boxes'):
        _predict(model, [sample])


@pytest.fixture(scope='module')
def tool_reference(tiny):
    """tools/extract_teacher_embeddings.py's embedding of every gallery box
    (by image id), and the tool's ReID input of the first 8 boxes (its crop
    pipeline + the teacher's ClsDataPreprocessor), with the tiny teacher."""
    teacher_cfg = tiny['teacher_cfg']
    crop_set = build_crop_dataset(teacher_cfg, 'gallery')
    teacher = MODELS.build(teacher_cfg.model)
    state = torch.load(tiny['ckpt'], weights_only=True)['state_dict']
    teacher.load_state_dict(state, strict=True)
    tool = extract_teacher_embeddings(
        teacher, crop_set, batch_size=64, num_workers=0, show_progress=False)
    crops = {}
    for k in range(8):
        info = crop_set.get_data_info(k)
        x = teacher.data_preprocessor(pseudo_collate([crop_set[k]]),
                                      False)['inputs']
        crops[(info['img_id'], info['box_index'])] = x[0]
    return dict(
        by_id={
            s['img_id']: (s['bboxes'], e)
            for s, e in zip(crop_set.scenes, tool)
        },
        centre=np.concatenate(tool).mean(0),
        crops=crops)


@pytest.mark.parametrize('variant,scales', [('config', (1, 2)),
                                            ('bgr_detector', (1, ))])
def test_embedding_matches_the_extraction_tool(tiny, tool_reference, variant,
                                               scales):
    """The in-model embedding of a ground-truth box against
    tools/extract_teacher_embeddings.py's, with the same teacher weights.

    Measured: cosine min 0.9983 / mean 0.9996 with the scene at its own size
    (scale 1, as the synthetic data is used), min 0.9977 / mean 0.9994 with
    the scene upsampled 2x first. The crops differ only at their 1-pixel
    border (cv2 repeats the crop's edge, roi_align reads the neighbour just
    outside) and by cv2's 8-bit rounding. A random teacher maps any crop to
    nearly the same direction (0.965 between different boxes), so the
    crops themselves and the centred embeddings are checked too.
    ``bgr_detector``: a detector fed BGR (other mean / std order), so the
    channels must be swapped for the RGB teacher."""
    ref = tool_reference
    cfg = baseline_cfg(tiny['root'], tiny['ckpt'])
    if variant == 'bgr_detector':
        cfg.model.data_preprocessor.update(
            bgr_to_rgb=False,
            mean=[103.53, 116.28, 123.675],
            std=[57.375, 57.12, 58.395])
    model = MODELS.build(cfg.model).eval()
    seen = []
    hook = model.reid.backbone.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].detach().clone()))
    w, h = IMAGE_SIZE
    stats = {}
    crops_left = dict(ref['crops'])
    try:
        for scale in scales:
            gallery = split_dataset(cfg, 0, (scale * w, scale * h))
            cos, centred = [], []
            for start in range(0, 20, 5):
                samples = [gallery[i] for i in range(start, start + 5)]
                data = model.data_preprocessor(pseudo_collate(samples), False)
                metas = [s.metainfo for s in data['data_samples']]
                assert metas[0]['scale_factor'] == (scale, scale)
                boxes = [
                    torch.as_tensor(ref['by_id'][m['img_id']][0])
                    for m in metas
                ]
                seen.clear()
                embeds = model.embed_boxes(data['inputs'], boxes, metas)
                crops = seen[0].split([len(b) for b in boxes])
                for m, e, c in zip(metas, embeds, crops):
                    tool = ref['by_id'][m['img_id']][1]
                    e = e.numpy()
                    cos += list((e * tool).sum(1))
                    a, b = e - ref['centre'], tool - ref['centre']
                    centred += list(
                        (a * b).sum(1) / np.linalg.norm(a, axis=1) /
                        np.linalg.norm(b, axis=1))
                    for j in range(len(c)):
                        key = (m['img_id'], j)
                        if scale == 1 and key in crops_left:
                            diff = (c[j] - crops_left.pop(key)).abs()
                            # normalised units (1 grey level ~ 0.017)
                            assert diff.mean() < 0.03, (key, diff.mean())
                            assert diff[:, 2:-2, 2:-2].median() < 0.02, key
            stats[scale] = (min(cos), float(np.mean(cos)), min(centred),
                            float(np.mean(centred)), len(cos))
    finally:
        hook.remove()
    print(f'\nin-model vs tool embedding, {variant} (cos min, mean, centred '
          f'min, centred mean, boxes) per scale: {stats}')
    assert not crops_left, f'crops not compared: {sorted(crops_left)}'
    for scale, (cmin, cmean, zmin, zmean, n) in stats.items():
        assert n > 30
        assert cmin > 0.99 and cmean > 0.995, (scale, stats)
        assert zmin > 0.8 and zmean > 0.95, (scale, stats)


# ------------------------------------------------------------------- tools
def test_tools_test_py_scores_the_baseline(trained, tiny):
    """tools/test.py CONFIG CKPT on the tiny tree, with the ReID weights
    only in CKPT (model.reid.checkpoint=None)."""
    base = tiny['base']
    cwd = base / 'cwd'  # stays empty: no default path is used
    cwd.mkdir()
    work_dir = base / 'test'
    results = base / 'results.pkl'
    opts = baseline_options(tiny['root'], tiny['ckpt'])
    opts['model.reid.checkpoint'] = None
    proc = run_tool(
        [
            'tools/test.py', CONFIG, trained['ckpt'], '--work-dir',
            str(work_dir), '--out',
            str(results)
        ] + cli(opts),
        cwd=cwd)
    log = proc.stdout + proc.stderr
    assert 'person search' in log and 'gallery 100' in log
    saved = sorted(work_dir.glob('*/*.json'))
    assert len(saved) == 1, saved
    metrics = json.loads(saved[0].read_text())
    for key in ('mAP', 'top1', 'top5', 'top10', 'det_ap', 'det_recall'):
        value = metrics[f'search/{key}']
        assert isinstance(value, float) and 0.0 <= value <= 1.0, key
    assert not any(cwd.iterdir())

    protocol = load_cuhk_protocol(tiny['root'], 100)
    out = load_search_results(str(results), protocol)
    assert len(out['gallery']) == tiny['made']['num_gallery_images']
    assert len(out['query']) == tiny['made']['num_queries']
    for det in out['gallery'].values():
        assert det['embeddings'].shape == (len(det['bboxes']), EMBED_DIM)
    # the query embeddings are the in-process model's: the ReID weights
    # came from the checkpoint
    query = split_dataset(trained['cfg'], 1)
    _, res = _predict(trained['model'], [query[i] for i in range(2)])
    for i in range(2):
        np.testing.assert_allclose(
            out['query'][i]['embedding'],
            res[i].embeddings[0].numpy(),
            atol=1e-5)
        np.testing.assert_allclose(out['query'][i]['bbox'],
                                   res[i].bboxes[0].numpy())


def test_benchmark_times_the_baseline(tmp_path, capsys):
    bench = load_tool('tools/analysis_tools/benchmark.py')
    out = tmp_path / 'speed.json'
    res = bench.main([
        PSDIFF_CONFIG, '--steps', '1', '2', '--shape', '64', '96',
        '--num-images', '1', '--warmup', '0', '--baseline', CONFIG,
        '--baseline-boxes', '3', '--json',
        str(out)
    ])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    # the PSDiff keys are all still there, and the new ones beside them
    for key in ('rows', 'feat_times_s', 'head_times_s', 'config', 'shape',
                'num_proposals', 'params_M', 'baseline'):
        assert key in saved, key
    base = saved['baseline']
    assert base['reid_boxes'] == 3 and base['config'] == CONFIG
    assert base['detector_ms'] > 0 and base['reid_ms'] > 0
    assert base['images_per_s'] == pytest.approx(
        1e3 / (base['detector_ms'] + base['reid_ms']))
    for r in saved['rows']:
        assert r['speed_vs_baseline'] == pytest.approx(r['images_per_s'] /
                                                       base['images_per_s'])
    assert res['baseline']['reid_boxes'] == 3
    assert 'x baseline' in printed
    assert '2-step' in printed and 'ReID of 3 fixed boxes' in printed
    # the ReID's time is that of the fixed boxes, whatever was detected
    model = bench.build_baseline(CONFIG, None, None, 'cpu')
    boxes = bench.fixed_boxes(3, (64, 96), 'cpu')
    assert boxes.shape == (3, 4)
    assert (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes[:, 3] > boxes[:, 1]).all()
    assert isinstance(model, TwoStepPersonSearch)
    with pytest.raises(SystemExit, match='not a two-step baseline'):
        bench.build_baseline(PSDIFF_CONFIG, None, None, 'cpu')


def test_init_searcher_takes_everything_from_the_checkpoint(trained, tiny):
    # the API loads the whole model from its checkpoint: the config's
    # teacher file (gone here) is not needed and its weights come back
    from mmpsearch.apis import init_searcher
    cfg = copy.deepcopy(trained['cfg'])
    cfg.model.reid.checkpoint = str(tiny['base'] / 'no_such_teacher.pth')
    searcher = init_searcher(cfg, trained['ckpt'])
    teacher = torch.load(tiny['ckpt'], weights_only=True)['state_dict']
    assert torch.equal(searcher.reid.backbone.conv1.weight,
                       teacher['backbone.conv1.weight'])
    assert not searcher.training
