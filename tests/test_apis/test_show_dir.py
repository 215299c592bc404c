# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/test.py --show-dir draws gallery detections with their scores, and
--out writes the results file that eval_search.py re-scores."""
import json

import cv2
import numpy as np
import torch

from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
from mmpsearch.evaluation.results_io import load_search_results
from ..test_tools.conftest import REPO, run_tool


def test_test_py_show_dir_and_out(tmp_path):
    root = tmp_path / 'synthetic_cuhk'
    make_synthetic('cuhk', str(root), num_images=202, num_ids=10, seed=5)
    protocol = load_cuhk_protocol(str(root), 50)
    boxes = {n: g.boxes.tolist() for n, g in protocol.gallery.items()}
    boxes_file = tmp_path / 'boxes.json'
    boxes_file.write_text(json.dumps(boxes))
    ckpt = tmp_path / 'oracle.pth'
    torch.save({'state_dict': {'dummy': torch.zeros(1)}, 'meta': {}}, ckpt)
    show = tmp_path / 'show'
    out = tmp_path / 'results.pkl'
    run_tool([
        'tools/test.py',
        str(REPO / 'tests/data/configs/oracle_searcher.py'),
        str(ckpt), '--work-dir',
        str(tmp_path / 'work'), '--show-dir',
        str(show), '--out',
        str(out), '--cfg-options', f'model.boxes_file={boxes_file}',
        f'test_dataloader.dataset.datasets.0.data_root={root}',
        f'test_dataloader.dataset.datasets.1.data_root={root}',
        f'test_evaluator.data_root={root}', 'test_evaluator.gallery_size=50'
    ])
    pngs = sorted(show.rglob('*.jpg')) + sorted(show.rglob('*.png'))
    assert len(pngs) >= len(protocol.gallery)
    first = next(p for p in pngs if p.name == list(protocol.gallery)[0])
    drawn = cv2.imread(str(first))
    scene = cv2.imread(str(root / 'Image' / 'SSM' / first.name))
    # mmdet's hook draws ground truth (left) beside the detections (right)
    h, w = scene.shape[:2]
    assert drawn.shape == (h, 2 * w, 3)
    pred = drawn[:, w:].astype(int)
    assert (np.abs(pred - scene).sum(-1) > 60).mean() > 0.005
    cv2.imwrite(str(tmp_path / 'look.png'), drawn)
    results = load_search_results(str(out), protocol)
    assert set(results['gallery']) == set(protocol.gallery)
    assert len(results['query']) == len(protocol.queries)
