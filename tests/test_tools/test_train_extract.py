# Copyright (c) mmpsearch contributors. All rights reserved.
"""Train a tiny teacher with mmengine's Runner from configs/teacher/
teacher_synthetic.py, extract its embeddings with
tools/extract_teacher_embeddings.py and check the file and what it holds."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmcv.transforms import Resize
from mmengine.config import Config
from mmengine.runner import Runner

from mmpsearch.apis import build_crop_dataset, extract_teacher_embeddings
from mmpsearch.datasets.cuhk_sysu import CUHKSYSUDataset
from mmpsearch.datasets.teacher_cache import TeacherEmbeddings
from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / 'configs' / 'teacher' / 'teacher_synthetic.py')
ITERS = 30
WIDTH = 8  # ResNet-18 with 8 channels in its first stage -> 64-d embedding


def tiny_overrides(data_root: str, num_classes: int) -> dict:
    """--cfg-options that shrink teacher_synthetic.py to a test size."""
    opts = {
        'model.backbone.stem_channels': WIDTH,
        'model.backbone.base_channels': WIDTH,
        'model.head.in_channels': WIDTH * 8,
        'model.head.num_classes': num_classes,
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.update({
            f'{loader}.dataset.dataset.data_root': data_root,
            f'{loader}.dataset.num_classes': num_classes,
            f'{loader}.batch_size': 16,
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
        })
    return opts


def shrink_crops(cfg: Config) -> None:
    """64x32 crops instead of 128x64."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for t in cfg[loader]['dataset']['pipeline']:
            if t['type'] is Resize:
                t['scale'] = (32, 64)


def cli_options(opts: dict) -> list:
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def labeled_identity_count(root: str) -> int:
    ds = CUHKSYSUDataset(data_root=root, split='train')
    return len({
        inst['person_id']
        for i in range(len(ds))
        for inst in ds.get_data_info(i)['instances'] if inst['person_id'] >= 0
    })


def separation(embeds: np.ndarray, pids: np.ndarray) -> dict:
    """Mean cosine of same-id and of different-id pairs of labeled boxes, and
    nearest-neighbour (rank-1) accuracy among them."""
    lab = pids >= 0
    e, p = embeds[lab], pids[lab]
    sim = e @ e.T
    same = p[:, None] == p[None]
    np.fill_diagonal(same, False)
    diff = p[:, None] != p[None]
    np.fill_diagonal(sim, -np.inf)
    rank1 = float(np.mean(p[np.argmax(sim, axis=1)] == p))
    np.fill_diagonal(sim, 1.0)
    return dict(
        same=float(sim[same].mean()),
        diff=float(sim[diff].mean()),
        rank1=rank1)


@pytest.fixture(scope='module')
def trained(tiny_cuhk, tmp_path_factory):
    """Train the tiny teacher for ITERS iterations; returns the work dir,
    the checkpoint, the overrides and the validation metrics."""
    register_all_modules(init_default_scope=False)
    work_dir = tmp_path_factory.mktemp('teacher_work')
    num_classes = labeled_identity_count(tiny_cuhk)
    opts = tiny_overrides(tiny_cuhk, num_classes)
    opts.update({
        'train_cfg.max_iters': ITERS,
        'train_cfg.val_interval': ITERS,
        'param_scheduler.0.end': 5,
        'param_scheduler.1.begin': 5,
        'param_scheduler.1.end': ITERS,
        'default_hooks.checkpoint.interval': ITERS,
        'default_hooks.logger.interval': 10,
        # a higher rate than the config's, for so few iterations
        'optim_wrapper.optimizer.lr': 1e-2,
    })
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(opts)
    shrink_crops(cfg)
    cfg.work_dir = str(work_dir)
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    ckpt = work_dir / f'iter_{ITERS}.pth'
    assert ckpt.is_file()
    return dict(
        cfg=cfg,
        ckpt=str(ckpt),
        opts=tiny_overrides(tiny_cuhk, num_classes),
        metrics=metrics,
        work_dir=work_dir)


def test_runner_builds_and_validates(trained, tiny_cuhk):
    # the evaluator is mmpretrain's Accuracy on held-out crops of the
    # training identities; after training it is far above chance
    num_classes = labeled_identity_count(tiny_cuhk)
    assert trained['metrics']['accuracy/top1'] > 3 * 100.0 / num_classes


def test_extract_writes_one_normalised_row_per_box(trained, tiny_cuhk,
                                                   extract_tool, tmp_path):
    out = str(tmp_path / 'teacher_train.npz')
    argv = [
        CONFIG, trained['ckpt'], '--out', out, '--device', 'cpu',
        '--batch-size', '32', '--num-workers', '0'
    ]
    # the test pipeline must make the crops the model was trained on
    crop_opt = {'test_dataloader.dataset.pipeline.2.scale': '(32,64)'}
    argv += cli_options({**trained['opts'], **crop_opt})
    extract_tool.main(argv)

    scenes = CUHKSYSUDataset(data_root=tiny_cuhk, split='train')
    cache = TeacherEmbeddings(out)
    assert cache.dim == WIDTH * 8
    n_rows, n_labeled, embeds, pids, all_boxes = 0, 0, [], [], []
    for i in range(len(scenes)):
        info = scenes.get_data_info(i)
        boxes = np.array([inst['bbox'] for inst in info['instances']],
                         np.float32).reshape(-1, 4)
        # get() checks that the stored boxes are the dataset's boxes
        rows = cache.get(info['img_id'], boxes)
        assert rows.shape == (len(boxes), WIDTH * 8)
        np.testing.assert_allclose(
            np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        all_boxes.append(boxes)
        n_rows += len(rows)
        n_labeled += sum(inst['person_id'] >= 0 for inst in info['instances'])
        embeds.append(rows)
        pids += [inst['person_id'] for inst in info['instances']]
    assert len(cache.embeddings) == n_rows
    # rows in the order of the data infos' instances, boxes exactly theirs
    np.testing.assert_allclose(
        cache.boxes, np.concatenate(all_boxes), atol=1e-4)
    assert n_rows > n_labeled  # unlabeled persons got embeddings too

    # Trained on crops for ITERS iterations, the teacher must separate the
    # identities: same-id boxes closer than different-id ones, clearly more
    # than a randomly initialised network of the same shape does.
    embeds, pids = np.concatenate(embeds), np.asarray(pids)
    got = separation(embeds, pids)
    n_ids = len(set(pids[pids >= 0].tolist()))
    assert got['same'] - got['diff'] > 0.2, got
    assert got['rank1'] > 3.0 / n_ids, got

    cfg = copy.deepcopy(trained['cfg'])
    torch.manual_seed(0)
    untrained = MODELS.build(cfg.model)
    untrained.init_weights()
    ds = build_crop_dataset(cfg, 'train')
    ds_embeds = extract_teacher_embeddings(
        untrained, ds, batch_size=64, show_progress=False)
    base = separation(np.concatenate(ds_embeds), pids)
    assert got['same'] - got['diff'] > (base['same'] - base['diff']) + 0.15, (
        got, base)
    assert got['rank1'] > base['rank1'] + 0.3, (got, base)


def test_extract_refuses_to_overwrite(trained, extract_tool, tmp_path):
    out = tmp_path / 'exists.npz'
    out.write_bytes(b'not embeddings')
    argv = [CONFIG, trained['ckpt'], '--out', str(out), '--device', 'cpu']
    argv += cli_options(trained['opts'])
    with pytest.raises(
            SystemExit, match='already exists; refusing to overwrite'):
        extract_tool.main(argv)
    assert out.read_bytes() == b'not embeddings'
    with pytest.raises(SystemExit, match='must end with .npz'):
        extract_tool.main(
            [CONFIG, trained['ckpt'], '--out',
             str(tmp_path / 'e.npy')])
    # the library function refuses too, before it reads anything
    from mmpsearch.apis import write_teacher_embeddings
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_teacher_embeddings('no/such/config.py', 'no.pth', str(out))
    assert out.read_bytes() == b'not embeddings'


def test_extract_rejects_checkpoint_of_other_model(trained, extract_tool,
                                                   tmp_path):
    # a checkpoint whose head has another width must not load partially
    opts = dict(trained['opts'])
    opts['model.head.num_classes'] = opts['model.head.num_classes'] + 1
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.pop(f'{loader}.dataset.num_classes')
    argv = [
        CONFIG, trained['ckpt'], '--out',
        str(tmp_path / 'x.npz'), '--device', 'cpu', '--num-workers', '0'
    ] + cli_options(opts)
    with pytest.raises(RuntimeError, match='size mismatch'):
        extract_tool.main(argv)
    assert not (tmp_path / 'x.npz').exists()
