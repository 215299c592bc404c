# Copyright (c) mmpsearch contributors. All rights reserved.
"""Pictures of search results: the query crop beside its top hits."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
from mmdet.visualization import DetLocalVisualizer

from mmpsearch.registry import VISUALIZERS

GREEN = (60, 200, 60)  # BGR
RED = (40, 40, 230)
YELLOW = (0, 220, 255)


def _fit(img: np.ndarray, height: int) -> np.ndarray:
    scale = height / img.shape[0]
    width = max(1, int(round(img.shape[1] * scale)))
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def _label(img: np.ndarray, text: str, color=(255, 255, 255)) -> np.ndarray:
    """Put ``text`` in a dark band on top of ``img`` (a copy)."""
    band = np.zeros((22, img.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                cv2.LINE_AA)
    return np.concatenate([band, img], axis=0)


def _box(img: np.ndarray, box: Sequence[float], color, thickness=2) -> None:
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness)


def _grid(tiles: List[np.ndarray], per_row: int, gap: int = 6) -> np.ndarray:
    """Lay tiles of equal height out in rows on a white canvas."""
    rows = []
    for i in range(0, len(tiles), per_row):
        parts = []
        for j, tile in enumerate(tiles[i:i + per_row]):
            if j:
                parts.append(np.full((tile.shape[0], gap, 3), 255, np.uint8))
            parts.append(tile)
        rows.append(np.concatenate(parts, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(
            r, ((0, gap), (0, width - r.shape[1]), (0, 0)),
            constant_values=255) for r in rows
    ]
    return np.concatenate(rows, axis=0)[:-gap]


def draw_search_result(query_img: np.ndarray,
                       query_box: Sequence[float],
                       hits: List[Tuple[np.ndarray, Sequence[float], float,
                                        float, Optional[bool]]],
                       row_height: int = 240,
                       per_row: int = 5) -> np.ndarray:
    """Compose one BGR picture: the query crop, then the hits on their
    scenes, each with its rank, similarity and detection score.

    Args:
        query_img: BGR image holding the query.
        query_box: [x1, y1, x2, y2] of the query.
        hits: ``(scene_bgr, box, similarity, score, correct)`` per hit, best
            first; ``correct`` (True / False / None when unknown) colours the
            box green / red / yellow.
        row_height (int): Height of each scene in pixels.
        per_row (int): Scenes per row.
    """
    x1, y1, x2, y2 = [int(round(v)) for v in query_box]
    crop = query_img[max(y1, 0):y2, max(x1, 0):x2]
    if crop.size == 0:
        raise ValueError(f'query box {list(query_box)} is empty in the query '
                         'image '
                         f'({query_img.shape[1]} x {query_img.shape[0]})')
    tiles = [_label(_fit(crop, row_height), 'query', YELLOW)]
    for rank, (scene, box, sim, score, correct) in enumerate(hits, 1):
        scene = scene.copy()
        color = YELLOW if correct is None else (GREEN if correct else RED)
        _box(scene, box, color, thickness=max(2, scene.shape[0] // 120))
        tiles.append(
            _label(
                _fit(scene, row_height),
                f'#{rank} sim {sim:.3f} det {score:.2f}', color))
    return _grid(tiles, per_row)


def draw_denoising_steps(img: np.ndarray,
                         steps: List[Tuple[np.ndarray, np.ndarray]],
                         score_thr: float = 0.5,
                         row_height: int = 240,
                         per_row: int = 4) -> np.ndarray:
    """How boxes and scores change over the sampling steps (PSDiff Fig. 6).

    Args:
        img: BGR image.
        steps: Per step ``(boxes (N, 4) pixels, scores (N,))``.
        score_thr (float): Boxes scoring below are drawn thin and grey.
    """
    tiles = []
    for k, (boxes, scores) in enumerate(steps, 1):
        canvas = img.copy()
        order = np.argsort(scores)  # strong boxes drawn last, on top
        for j in order:
            if scores[j] >= score_thr:
                _box(canvas, boxes[j], GREEN, 2)
                x1, y1 = int(boxes[j][0]), int(boxes[j][1])
                cv2.putText(canvas, f'{scores[j]:.2f}',
                            (x1 + 2, max(y1 - 3, 10)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4, GREEN, 1,
                            cv2.LINE_AA)
            elif scores[j] >= 0.05:
                _box(canvas, boxes[j], (150, 150, 150), 1)
        n_kept = int((scores >= score_thr).sum())
        tiles.append(
            _label(
                _fit(canvas, row_height),
                f'step {k}: {n_kept} boxes >= {score_thr}'))
    return _grid(tiles, per_row)


def write_png(image: np.ndarray, out_file: str) -> None:
    """Write atomically: a failed run leaves no partial picture behind."""
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    tmp = out_file + '.tmp.png'
    mmcv.imwrite(image, tmp)
    os.replace(tmp, out_file)


@VISUALIZERS.register_module()
class PersonSearchVisualizer(DetLocalVisualizer):
    """mmdet's detection visualizer (used by ``tools/test.py --show-dir``
    to draw gallery detections with scores) plus the search pictures of
    :func:`draw_search_result` and :func:`draw_denoising_steps`."""

    draw_search_result = staticmethod(draw_search_result)
    draw_denoising_steps = staticmethod(draw_denoising_steps)
