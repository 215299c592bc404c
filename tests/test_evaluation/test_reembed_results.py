# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/reembed_results.py: ground-truth boxes, embedders,
and the output refusal."""
import copy

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from mmpsearch.evaluation.functional import evaluate_person_search
from ..conftest import REPO, load_tool
from ..test_tools.conftest import ORACLE
from .ps_eval_synthetic import make_case


def _tool():
    return load_tool('tools/analysis_tools/reembed_results.py')


def _box_embedder(calls):
    """(img_id, boxes) -> a vector made from each box's numbers; records
    every call."""

    def embed(img_id, boxes):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        calls.append((img_id, boxes.copy()))
        return np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1)

    return embed


@pytest.mark.parametrize('kind', ['cuhk', 'prw'])
def test_gt_boxes_are_embedded_by_the_embedder(kind):
    results, protocol = make_case(0, kind)
    before = copy.deepcopy(results)
    calls = []
    out = _tool().reembed(results, protocol, 'gt', _box_embedder(calls))
    # every annotated person of every gallery image, score 1, embedded by
    # the embedder; every query's box too
    assert list(out['gallery']) == list(protocol.gallery)
    for img_id, g in protocol.gallery.items():
        boxes = np.asarray(g.boxes, np.float32).reshape(-1, 4)
        det = out['gallery'][img_id]
        np.testing.assert_array_equal(det['bboxes'], boxes)
        assert (det['scores'] == 1).all()
        if len(boxes):
            np.testing.assert_array_equal(det['embeddings'][:, :4], boxes)
    for q_in, q_out in zip(results['query'], out['query']):
        np.testing.assert_array_equal(q_out['embedding'][:4],
                                      np.asarray(q_in['bbox']).reshape(4))
        assert q_out['img_id'] == q_in['img_id']
    assert len(calls) == len(protocol.gallery) + len(results['query'])
    # the input is left as it was
    for img_id, det in before['gallery'].items():
        np.testing.assert_array_equal(results['gallery'][img_id]['bboxes'],
                                      det['bboxes'])
    # and the new file scores
    assert 0 <= evaluate_person_search(out, protocol)['mAP'] <= 1


def test_detections_without_embedder_are_a_copy():
    results, protocol = make_case(0, 'prw')
    out = _tool().reembed(results, protocol, 'detections', None)
    ref = evaluate_person_search(results, protocol)
    assert evaluate_person_search(out, protocol) == ref
    with pytest.raises(ValueError, match='needs an embedder'):
        _tool().reembed(results, protocol, 'gt', None)


def test_searcher_embeds_as_a_query(tmp_path):
    from mmpsearch.apis import embed_query, init_searcher
    root = tmp_path / 'cuhk'
    (root / 'Image' / 'SSM').mkdir(parents=True)
    img = np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8)
    cv2.imwrite(str(root / 'Image' / 'SSM' / 'a.jpg'), img)
    (tmp_path / 'boxes.json').write_text('{}')
    cfg = Config.fromfile(ORACLE)
    cfg.model.boxes_file = str(tmp_path / 'boxes.json')
    embed = _tool().searcher_embedder(cfg, None, 'cuhk', str(root))
    boxes = np.array([[5, 5, 30, 50], [40, 10, 70, 55]], np.float32)
    out = embed('a.jpg', boxes)
    path = str(root / 'Image' / 'SSM' / 'a.jpg')
    ref = [embed_query(init_searcher(cfg), path, b) for b in boxes]
    np.testing.assert_allclose(out, np.stack(ref), atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_searcher_config_takes_cfg_options(tmp_path):
    """--cfg-options reach the searcher's config (here the oracle's boxes
    file, which the config file itself leaves unset), and go only with
    --searcher."""
    root = tmp_path / 'cuhk'
    (root / 'Image' / 'SSM').mkdir(parents=True)
    img = np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8)
    cv2.imwrite(str(root / 'Image' / 'SSM' / 'a.jpg'), img)
    (tmp_path / 'boxes.json').write_text('{}')
    tool = _tool()
    args = tool.parse_args([
        'r.pkl', '--dataset', 'cuhk', '--data-root',
        str(root), '--out', 'o.pkl', '--searcher', ORACLE, 'none',
        '--cfg-options', f'model.boxes_file={tmp_path / "boxes.json"}'
    ])
    assert args.cfg_options == {
        'model.boxes_file': str(tmp_path / 'boxes.json')
    }
    embed = tool.searcher_embedder(ORACLE, None, 'cuhk', str(root),
                                   args.cfg_options)
    cfg = Config.fromfile(ORACLE)
    cfg.model.boxes_file = str(tmp_path / 'boxes.json')
    ref = _tool().searcher_embedder(cfg, None, 'cuhk', str(root))
    box = np.array([[5, 5, 30, 50]], np.float32)
    np.testing.assert_allclose(embed('a.jpg', box), ref('a.jpg', box))
    with pytest.raises(SystemExit):
        tool.parse_args([
            'r.pkl', '--dataset', 'cuhk', '--data-root', 'x', '--out', 'o',
            '--cfg-options', 'a=1'
        ])


def test_existing_out_refused_before_any_work(tmp_path):
    out = tmp_path / 'earlier.pkl'
    out.write_bytes(b'earlier')
    with pytest.raises(SystemExit, match='already exists'):
        _tool().main([
            'no_such.pkl', '--dataset', 'cuhk', '--data-root', 'nowhere',
            '--out',
            str(out)
        ])
    assert out.read_bytes() == b'earlier'
    with pytest.raises(SystemExit, match='needs an embedder'):
        _tool().main([
            str(out), '--dataset', 'cuhk', '--data-root', 'nowhere', '--out',
            str(tmp_path / 'new.pkl'), '--boxes', 'gt'
        ])


def test_reid_embeds_crops(tmp_path):
    root = tmp_path / 'cuhk'
    (root / 'Image' / 'SSM').mkdir(parents=True)
    img = np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8)
    cv2.imwrite(str(root / 'Image' / 'SSM' / 'a.jpg'), img)
    teacher = str(REPO / 'configs' / 'teacher' / 'teacher_synthetic.py')
    # random weights: the wiring, not the quality
    embed = _tool().reid_embedder(teacher, None, 'cuhk', str(root))
    boxes = np.array([[5, 5, 30, 50], [40, 10, 70, 55], [5, 5, 30, 50]],
                     np.float32)
    out = embed('a.jpg', boxes)
    assert out.shape == (3, 256)  # the synthetic teacher's width
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert not np.allclose(out[0], out[1])
    with pytest.raises(FileNotFoundError, match='b.jpg cannot be read'):
        embed('b.jpg', boxes)
