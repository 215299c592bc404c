# Copyright (c) mmpsearch contributors. All rights reserved.
"""The Python API, demo/search_demo.py and the two plotting tools."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from mmpsearch.apis import (GalleryIndex, denoising_steps, index_gallery,
                            init_searcher, search)
from mmpsearch.datasets import load_cuhk_protocol, make_synthetic
from mmpsearch.evaluation.functional import evaluate_person_search
from mmpsearch.evaluation.results_io import save_search_results
from mmpsearch.visualization import draw_denoising_steps

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (union - w * h)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp('api') / 'synthetic_cuhk'
    make_synthetic('cuhk', str(root), num_images=202, num_ids=20, seed=3)
    protocol = load_cuhk_protocol(str(root), 50)
    boxes = {name: g.boxes.tolist() for name, g in protocol.gallery.items()}
    boxes_file = root.parent / 'boxes.json'
    boxes_file.write_text(json.dumps(boxes))
    cfg = Config.fromfile(
        str(REPO / 'tests' / 'data' / 'configs' / 'oracle_searcher.py'))
    cfg.model.boxes_file = str(boxes_file)
    searcher = init_searcher(cfg)
    return root, protocol, searcher


def _img(root, name):
    return str(root / 'Image' / 'SSM' / name)


def test_search_ranks_own_identity_first(scenes):
    root, protocol, searcher = scenes
    checked = 0
    for query in protocol.queries[:6]:
        gallery = [_img(root, name) for name, _ in query.gallery]
        truth = {_img(root, n): b for n, b in query.gallery if b is not None}
        hits = search(
            searcher, _img(root, query.img_id), query.box, gallery, topk=5)
        assert len(hits) == 5
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        sims = [h.similarity for h in hits]
        assert sims == sorted(sims, reverse=True)
        # one hit per image by default
        assert len({h.img_path for h in hits}) == 5
        top = hits[0]
        assert top.img_path in truth, f'query {query.img_id}: wrong image'
        assert _iou(top.bbox, truth[top.img_path]) >= 0.5
        checked += 1
    assert checked == 6


def test_index_save_and_load_give_the_same_results(scenes, tmp_path):
    root, protocol, searcher = scenes
    query = protocol.queries[1]
    gallery = [_img(root, name) for name, _ in query.gallery]
    index = index_gallery(searcher, gallery)
    assert len(index) > len(gallery)  # several persons per scene
    path = str(tmp_path / 'index.npz')
    index.save(path)
    with pytest.raises(FileExistsError, match='exists'):
        index.save(path)
    loaded = GalleryIndex.load(path)
    hits, again = (
        search(
            searcher,
            _img(root, query.img_id),
            query.box,
            searched,
            topk=8,
            one_per_image=False) for searched in (index, loaded))
    assert [(h.img_path, h.similarity) for h in hits] == \
        [(h.img_path, h.similarity) for h in again]
    for a, b in zip(hits, again):
        np.testing.assert_array_equal(a.bbox, b.bbox)


def test_index_keeps_the_model_output_unless_a_threshold_is_given(scenes):
    root, protocol, searcher = scenes
    gallery = [_img(root, name) for name, _ in protocol.queries[1].gallery]
    everything = index_gallery(searcher, gallery)
    # the oracle scores its persons 0.99 down to 0.9 in each image
    assert float(everything.scores.min()) < 0.95
    high = index_gallery(searcher, gallery, score_thr=0.95)
    assert 0 < len(high) < len(everything)
    assert float(high.scores.min()) >= 0.95


def test_bad_input_errors(scenes, tmp_path, monkeypatch):
    root, protocol, searcher = scenes
    query = protocol.queries[0]
    qimg = _img(root, query.img_id)
    with pytest.raises(ValueError, match=r'not inside .*320 x 240'):
        search(searcher, qimg, [300, 10, 400, 100], [qimg])
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not a jpeg at all')
    with pytest.raises(ValueError, match='cannot read image .*broken.jpg'):
        index_gallery(searcher, [qimg, str(bad)])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='holds no image'):
        index_gallery(searcher, str(empty))
    # the demo writes nothing when the gallery fails
    import demo.search_demo as demo
    monkeypatch.setattr(demo, 'init_searcher', lambda *a, **k: searcher)
    out = tmp_path / 'out.png'
    with pytest.raises(ValueError, match='holds no image'):
        demo.main([
            'cfg', 'ckpt', '--query-img', qimg, '--query-box',
            *map(str, query.box), '--gallery',
            str(empty), '--out',
            str(out)
        ])
    assert not out.exists()


def test_search_demo_writes_picture(scenes, tmp_path, monkeypatch):
    root, protocol, searcher = scenes
    import demo.search_demo as demo
    monkeypatch.setattr(demo, 'init_searcher', lambda *a, **k: searcher)
    out = tmp_path / 'search.png'
    assert demo.main([
        'cfg', 'ckpt', '--dataset-query',
        str(root), '--topk', '4', '--out',
        str(out)
    ]) == 0
    img = cv2.imread(str(out))
    assert img is not None
    # query tile + 4 hits in one row, each 240 px scenes + a 22 px label band
    assert img.shape[0] == 240 + 22
    assert img.shape[1] > 4 * 320 * (240 / 240)
    # a correct top hit is drawn with the green box colour
    green = np.all(img == np.array([60, 200, 60], np.uint8), axis=-1)
    assert green.sum() > 100
    assert img.std() > 20  # real content, not a blank canvas
    # an existing picture is never overwritten
    with pytest.raises(SystemExit, match='exists'):
        demo.main(
            ['cfg', 'ckpt', '--dataset-query',
             str(root), '--out',
             str(out)])


def test_denoising_steps_picture():
    """--show-steps on a real (random-weight, tiny) PSDiff model."""
    cfg = Config.fromfile(
        str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py'))
    cfg.model.test_cfg.sampling_steps = 3
    searcher = init_searcher(cfg)
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)
    steps = denoising_steps(searcher, img)
    assert len(steps) == 3
    n = searcher.test_cfg.num_proposals  # N_test = N_train
    for boxes, scores in steps:
        assert boxes.shape == (n, 4) and scores.shape == (n, )
        assert ((scores >= 0) & (scores <= 1)).all()
    picture = draw_denoising_steps(img, steps, row_height=120, per_row=3)
    assert picture.shape[0] == 120 + 22
    assert picture.shape[1] == 3 * 160 + 2 * 6


def _results(root, protocol, searcher):
    from mmpsearch.apis.inference import embed_query
    names = list(protocol.gallery)
    index = index_gallery(
        searcher, [_img(root, n) for n in names], score_thr=0.0)
    gallery = {}
    for i, name in enumerate(names):
        keep = index.image_inds == i
        gallery[name] = dict(
            bboxes=index.bboxes[keep],
            scores=index.scores[keep],
            embeddings=index.embeddings[keep])
    query = [
        dict(
            img_id=q.img_id,
            bbox=np.asarray(q.box, np.float32),
            embedding=embed_query(searcher, _img(root, q.img_id), q.box))
        for q in protocol.queries
    ]
    return dict(gallery=gallery, query=query)


def test_plot_gallery_size_and_steps(scenes, tmp_path):
    root, protocol, searcher = scenes
    results = _results(root, protocol, searcher)
    pkl = str(tmp_path / 'results.pkl')
    save_search_results(results, pkl)
    expected = evaluate_person_search(results, [protocol])

    sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
    import plot_gallery_size
    import plot_steps
    png = tmp_path / 'gallery.png'
    curve = plot_gallery_size.main(
        [pkl, '--data-root', str(root), '--out',
         str(png)])
    assert sorted(curve) == [50, 100]
    assert curve[50]['mAP'] == pytest.approx(expected['mAP'], abs=1e-9)
    assert curve[50]['mAP'] > 0.8  # the oracle's colours find the person
    img = cv2.imread(str(png))
    assert img.shape == (480, 660, 3)  # 5.5 x 4 in at 120 dpi
    assert (img < 128).any(axis=-1).mean() > 0.01  # lines and text drawn

    metrics = []
    for k, m in ((1, 0.5), (2, 0.7), (4, 0.8)):
        path = tmp_path / f'm{k}.json'
        path.write_text(json.dumps(dict(mAP=m, top1=m, det_ap=m)))
        metrics.append(f'{k}={path}')
    bench = tmp_path / 'bench.json'
    bench.write_text(
        json.dumps(
            dict(rows=[
                dict(steps=k, total_ms=100.0 + 10 * k) for k in (1, 2, 4)
            ])))
    steps_png = tmp_path / 'steps.png'
    plot_steps.main([
        '--metrics', *metrics, '--benchmark',
        str(bench), '--out',
        str(steps_png)
    ])
    img = cv2.imread(str(steps_png))
    assert img.shape == (480, 660, 3)
    assert (img < 128).any(axis=-1).mean() > 0.01
    with pytest.raises(SystemExit, match='exists'):
        plot_steps.main(['--metrics', *metrics, '--out', str(steps_png)])
    with pytest.raises(SystemExit, match='STEPS=JSON'):
        plot_steps.main(
            ['--metrics', 'oops', '--out',
             str(tmp_path / 'x.png')])
