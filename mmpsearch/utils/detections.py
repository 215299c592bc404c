# Copyright (c) mmpsearch contributors. All rights reserved.
"""The checks every set of detections passes before it is searched or
scored: a :class:`~mmpsearch.apis.GalleryIndex` (its constructor and
``.npz`` files) and each image of a results file
(``mmpsearch.evaluation.results_io``) go through the same functions, so
that both refuse the same values with the same words
(``docs/en/refusals.md``).

Without them such values were scored, not refused: a box with ``x1 > x2``
has a negative area and an IoU of 0 with every person, scores above 1 or
below 0 move detections across the score threshold, and an all-zero query
embedding is as similar (0) to every detection, so its ranking is the order
of the file.
"""
from typing import Tuple

import numpy as np

#: The largest side an image can have: JPEG stores sizes in 16 bits, and
#: OpenCV (``mmcv.imread``) reads nothing larger.
MAX_IMAGE_SIDE = 65535
#: How far (pixels) a box may reach past the image. Detectors clip their
#: boxes to the image, or leave them a little outside it; a box thousands
#: of pixels outside (-10000, 3e38) is a bug of whatever wrote it.
BOX_MARGIN = 1000
#: The range box coordinates must lie in, without knowing the image size.
BOX_RANGE: Tuple[float, float] = (-BOX_MARGIN, MAX_IMAGE_SIDE + BOX_MARGIN)


def _first_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def check_detection_rows(bboxes: np.ndarray, scores: np.ndarray,
                         embeddings: np.ndarray, source: str) -> None:
    """Refuse detections no detector outputs; every error is a
    ``ValueError`` that starts with ``'{source}: {field} '`` and names the
    row and its value.

    Checked: finite values; ``x1 <= x2`` and ``y1 <= y2``; coordinates in
    :data:`BOX_RANGE`; scores in [0, 1]; an embedding width ``D >= 1``.

    Args:
        bboxes (np.ndarray): (N, 4) x1y1x2y2 pixels.
        scores (np.ndarray): (N,).
        embeddings (np.ndarray): (N, D).
        source (str): The file (and image), for messages.
    """
    n = len(bboxes)
    if n and (embeddings.ndim != 2 or embeddings.shape[1] == 0):
        raise ValueError(f'{source}: embeddings has shape '
                         f'{embeddings.shape}; expected D >= 1')
    for field, arr in (('bboxes', bboxes), ('scores', scores), ('embeddings',
                                                                embeddings)):
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1) if n \
            else np.zeros(0, bool)
        if bad.any():
            raise ValueError(
                f'{source}: {field} has NaN or infinite values in rows '
                f'{np.flatnonzero(bad)[:5].tolist()} (of {n}); expected '
                'finite numbers')
    if not n:
        return
    bad = (bboxes[:, 2] < bboxes[:, 0]) | (bboxes[:, 3] < bboxes[:, 1])
    if bad.any():
        i = _first_row(bad)
        raise ValueError(f'{source}: bboxes row {i} = {bboxes[i].tolist()} '
                         'has x2 < x1 or y2 < y1; expected [x1, y1, x2, y2]')
    lo, hi = BOX_RANGE
    bad = ((bboxes < lo) | (bboxes > hi)).any(axis=1)
    if bad.any():
        i = _first_row(bad)
        raise ValueError(
            f'{source}: bboxes row {i} = {bboxes[i].tolist()} is far outside '
            f'any image; expected pixel coordinates in [{lo}, {hi}] (at most '
            f'{BOX_MARGIN} px outside an image of at most {MAX_IMAGE_SIDE} '
            'px a side)')
    bad = (scores < 0) | (scores > 1)
    if bad.any():
        i = _first_row(bad)
        raise ValueError(f'{source}: scores row {i} = {float(scores[i])} is '
                         'outside [0, 1]; expected detection scores')


def check_query_embedding(embedding: np.ndarray, source: str) -> None:
    """Refuse a query embedding of width 0, with NaN / inf, or all zeros
    (a zero vector is equally similar to every detection: the ranking
    would be the order of the gallery)."""
    if embedding.size == 0:
        raise ValueError(f'{source}: embedding has width 0; expected D >= 1')
    if not np.isfinite(embedding).all():
        raise ValueError(f'{source}: embedding has NaN or infinite values; '
                         'expected finite numbers')
    if not np.any(embedding):
        raise ValueError(
            f'{source}: embedding is all zeros (norm 0); it is equally '
            'similar to every detection, so nothing can be ranked. Expected '
            'the (L2-normalised) embedding of the query person')
