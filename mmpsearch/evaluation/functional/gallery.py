# Copyright (c) mmpsearch contributors. All rights reserved.
"""Kept gallery detections, packed into flat arrays once per evaluation."""
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np


class PlainKeyError(KeyError):
    """A ``KeyError`` whose message prints as written (``KeyError`` shows
    the repr of its message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """L2-normalise the rows of ``x`` (a zero row stays zero, as with
    ``torch.nn.functional.normalize``); float32 out, norms in float64."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


@dataclass
class GalleryDetections:
    """The kept detections of all gallery images, concatenated.

    Detections of image ``i`` are ``offsets[i]:offsets[i + 1]``, in the
    order of the results file.

    Attributes:
        img_ids (list[str]): Gallery images, in protocol order.
        offsets (np.ndarray): int64 (n_img + 1,).
        img_index (np.ndarray): int64 (n,) image of each detection.
        bboxes (np.ndarray): float32 (n, 4) x1y1x2y2.
        scores (np.ndarray): float32 (n,).
        embeddings (np.ndarray): float32 (u, D), the L2-normalised distinct
            embeddings; detection ``j`` has ``embeddings[embed_index[j]]``.
        embed_index (np.ndarray): int64 (n,).

    Identical embeddings are stored once so that they get bit-identical
    similarities: BLAS may round the same dot product differently in
    different rows of one matrix product, which would split exact ties.
    """
    img_ids: List[str]
    offsets: np.ndarray
    img_index: np.ndarray
    bboxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    embed_index: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.img_ids)

    @property
    def all_distinct(self) -> bool:
        """Whether every detection has its own embedding row (then
        ``embed_index`` is the identity)."""
        return self.embeddings.shape[0] == self.embed_index.shape[0]

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def pack_gallery_detections(gallery: Dict[str, dict],
                            img_ids: Sequence[str],
                            score_thr: float = 0.5,
                            embed_dim: int = -1) -> GalleryDetections:
    """Keep the detections with ``score >= score_thr`` of the images
    ``img_ids`` and concatenate them.

    Args:
        gallery (dict): ``results['gallery']`` of the results format
            (validated beforehand, see ``mmpsearch.evaluation.results_io``).
        img_ids (Sequence[str]): The protocol's gallery images, in order.
        score_thr (float): Detections scoring below it are dropped.
        embed_dim (int): D, used when no detection is kept at all.

    Returns:
        GalleryDetections: The kept detections, embeddings normalised.
    """
    img_ids = list(img_ids)
    boxes, scores, embeds, counts = [], [], [], []
    for img_id in img_ids:
        if img_id not in gallery:
            raise PlainKeyError(
                f'results lack gallery image {img_id!r} of the '
                'protocol')
        item = gallery[img_id]
        keep = np.asarray(item['scores']) >= score_thr
        boxes.append(np.asarray(item['bboxes'])[keep])
        scores.append(np.asarray(item['scores'])[keep])
        embeds.append(np.asarray(item['embeddings'])[keep])
        counts.append(int(keep.sum()))
    dims = {e.shape[1] for e in embeds if e.shape[0] > 0}
    if len(dims) > 1:
        raise ValueError(f'gallery embeddings have several widths {dims}')
    dim = dims.pop() if dims else max(embed_dim, 0)
    counts_arr = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(img_ids) + 1, dtype=np.int64)
    np.cumsum(counts_arr, out=offsets[1:])
    n = int(offsets[-1])
    if n > 0:
        bboxes = np.concatenate(boxes).astype(np.float32).reshape(n, 4)
        score_arr = np.concatenate(scores).astype(np.float32).reshape(n)
        emb, embed_index = unique_rows(
            np.concatenate([e.reshape(-1, dim) for e in embeds]))
        emb = l2_normalize(emb)
    else:
        bboxes = np.zeros((0, 4), np.float32)
        score_arr = np.zeros((0, ), np.float32)
        emb = np.zeros((0, dim), np.float32)
        embed_index = np.zeros((0, ), np.int64)
    img_index = np.repeat(np.arange(len(img_ids), dtype=np.int64), counts_arr)
    return GalleryDetections(
        img_ids=img_ids,
        offsets=offsets,
        img_index=img_index,
        bboxes=bboxes,
        scores=score_arr,
        embeddings=emb,
        embed_index=embed_index)


def unique_rows(x: np.ndarray):
    """Bitwise-distinct rows of a float32 matrix and, per row, the index of
    its distinct row (``np.unique(axis=0)`` is several times slower: it
    sorts whole rows; here rows are hashed and the hash groups verified).

    Returns:
        tuple: ``(distinct (u, D), inverse int64 (n,))``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return x, np.zeros(0, np.int64)
    bits = x.view(np.uint32)
    # Wrapping uint32 products summed in uint64: fast, and every collision
    # of different rows is caught by the check below.
    coef = np.random.default_rng(0).integers(
        1, 2**31, size=x.shape[1], dtype=np.uint32) | np.uint32(1)
    h = (bits * coef).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(
            x.view(np.uint32), x[first[inverse]].view(np.uint32)):
        # A hash collision of different rows: sort whole rows instead.
        rows = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
        _, first, inverse = np.unique(
            rows.reshape(-1), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    # Keep the distinct rows in order of first appearance, so that all-
    # distinct input maps to itself.
    order = np.argsort(first, kind='stable')
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return x[first[order]], rank[inverse].astype(np.int64)


def expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(starts[i], starts[i] + lengths[i])`` for all i,
    without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_first = np.cumsum(lengths) - lengths
    return np.repeat(starts - seg_first, lengths) + np.arange(
        total, dtype=np.int64)
