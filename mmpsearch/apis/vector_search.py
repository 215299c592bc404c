# Copyright (c) mmpsearch contributors. All rights reserved.
"""Nearest-neighbour search over person embeddings, with faiss.

Two kinds of index (both inner product over L2-normalised embeddings, i.e.
cosine similarity, as :func:`mmpsearch.apis.search`):

- ``'flat'``: ``faiss.IndexFlatIP``, exact. Up to :data:`FLAT_MAX_ROWS`
  detections it is also the fastest (measured, see
  ``tools/analysis_tools/benchmark_index.py``).
- ``'ivfpq'``: an inverted file over product-quantised codes (Jégou et al.,
  "Product quantization for nearest neighbor search", TPAMI 2011, as
  faiss's ``IndexIVFPQ``), behind a PCA rotation to 256 dimensions for the
  wide (1024-2048-d) embeddings of the R50 / DiffPS configs. It holds a few
  dozen bytes per detection instead of ``4 * D``.

Either way, the candidates it returns (``rerank`` times more than asked)
are re-ranked exactly, with the stored embeddings, so the final similarities
are exact and the order is that of an exact search (ties broken by
position) whenever the true top-k is among the candidates.

Nothing here imports torch: the benchmark and the index tools use it alone.
"""
import json
import math
import os
import os.path as osp
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

#: Up to this many detections ``kind='auto'`` builds an exact
#: ``IndexFlatIP``; beyond it an IVF-PQ index. Measured with
#: ``tools/analysis_tools/benchmark_index.py`` (256-d, one busy thread of a
#: 2-core CPU): IVF-PQ answers a single query faster from 10 k rows on, but
#: flat stays exact, needs no training and takes ~1 ms at 30 k and ~13 ms
#: at 100 k rows; 50 k keeps it under ~5 ms.
FLAT_MAX_ROWS = 50_000
#: Embeddings wider than this are rotated and cut to it by PCA before PQ.
PCA_DIM = 256
KINDS = ('auto', 'flat', 'ivfpq')


def _faiss():
    try:
        import faiss
    except ImportError:  # named: the hint says what to install
        raise ImportError(
            'the vector search needs faiss: pip install faiss-cpu (it is '
            'in requirements/runtime.txt)') from None
    return faiss


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as float32 unit vectors (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def exact_topk(embeddings: np.ndarray, queries: np.ndarray,
               k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` by inner product with numpy (what person-search code
    does today), ties broken by position. Returns ``(sims, ids)``, each
    (Q, k)."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    sims = queries @ np.asarray(embeddings, np.float32).T
    k = min(k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < \
        sims.shape[1] else np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    ids = np.empty_like(part)
    out = np.empty(part.shape, np.float32)
    for q in range(len(sims)):
        cand = part[q]
        order = np.lexsort((cand, -sims[q, cand]))
        ids[q] = cand[order]
        out[q] = sims[q, ids[q]]
    return out, ids


def exact_topk_chunked(chunks: Iterable[np.ndarray], queries: np.ndarray,
                       k: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk` over a gallery given as consecutive row chunks
    (e.g. of a memory map), keeping only the running top ``k``."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    start = 0
    for chunk in chunks:
        s, i = exact_topk(chunk, queries, k)
        s_all = np.concatenate([best_s, s], 1)
        i_all = np.concatenate([best_i, i + start], 1)
        order = np.lexsort((i_all, -s_all), axis=-1)[:, :k]
        best_s = np.take_along_axis(s_all, order, 1)
        best_i = np.take_along_axis(i_all, order, 1)
        start += len(chunk)
    return best_s, best_i


def auto_kind(n: int) -> str:
    """``'flat'`` up to :data:`FLAT_MAX_ROWS` rows, else ``'ivfpq'``."""
    return 'flat' if n <= FLAT_MAX_ROWS else 'ivfpq'


def ivfpq_factory(n: int, d: int) -> str:
    """The faiss factory string of the approximate index for ``n`` rows of
    width ``d``: about ``sqrt(n)`` inverted lists (a power of two, at most
    n / 39 so that k-means has its 39 points per centroid; 4096 at 10 M
    rows, whose k-means and assignment stay minutes on 2 cores), 8
    dimensions per PQ sub-quantiser of 8 bits, and a PCA to
    :data:`PCA_DIM` first when ``d`` is wider."""
    nlist = 2**int(round(math.log2(max(math.sqrt(max(n, 1)), 1))))
    nlist = int(max(1, min(nlist, 65536, n // 39)))
    pre, dd = '', d
    if d > PCA_DIM:
        pre, dd = f'PCAR{PCA_DIM},', PCA_DIM
    m = max(1, dd // 8)
    while dd % m:
        m -= 1
    # np: no polysemous training (15 s even for 8000 rows, and its Hamming
    # filter is not used here)
    return f'{pre}IVF{nlist},PQ{m}np'


class VectorIndex:
    """A faiss index over unit embeddings, with exact re-ranking.

    Args:
        kind (str): ``'flat'`` or ``'ivfpq'`` (``'auto'`` is resolved by
            :meth:`build`).
        index: The faiss index.
        nprobe (int): Inverted lists visited per query (IVF-PQ).
        rerank (int): Candidates fetched per query, as a multiple of the
            ``k`` asked (at least 100), before the exact re-ranking.
    """

    def __init__(self, kind: str, index, nprobe: int = 32,
                 rerank: int = 10) -> None:
        self.kind = kind
        self.index = index
        self.nprobe = nprobe
        self.rerank = rerank
        self._set_nprobe()

    def _set_nprobe(self) -> None:
        if self.kind == 'ivfpq':
            faiss = _faiss()
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = int(min(self.nprobe, ivf.nlist))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls,
              chunks: Callable[[], Iterable[np.ndarray]],
              n: int,
              d: int,
              kind: str = 'auto',
              train_size: Optional[int] = None,
              seed: int = 0,
              nprobe: int = 32,
              rerank: int = 10,
              factory: Optional[str] = None) -> 'VectorIndex':
        """Build over ``n`` rows of width ``d``.

        Args:
            chunks: Called (once, or twice for IVF-PQ: a training sample,
                then the rows) to give the rows in order, in chunks of unit
                float32/float16 vectors; the rows are never all in memory
                at once, beyond what the index itself holds.
            kind (str): ``'auto'`` (:func:`auto_kind`), ``'flat'``,
                ``'ivfpq'``.
            train_size (int, optional): Rows (evenly spaced) to train
                IVF-PQ on; None: 64 per inverted list, at least 20000.
            factory (str, optional): Another faiss factory string for
                ``'ivfpq'`` (e.g. ``'OPQ32,IVF4096,PQ32'``).
        """
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
        faiss = _faiss()
        kind = auto_kind(n) if kind == 'auto' else kind
        if kind == 'flat':
            index = faiss.IndexFlatIP(d)
        else:
            spec = factory or ivfpq_factory(n, d)
            index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
            if train_size is None:
                nlist = faiss.extract_index_ivf(index).nlist
                train_size = max(20_000, 64 * nlist)
            step = max(1, n // max(1, train_size))
            sample, pos = [], 0
            for chunk in chunks():
                take = np.arange((-pos) % step, len(chunk), step)
                sample.append(np.asarray(chunk[take], np.float32))
                pos += len(chunk)
            sample = np.concatenate(sample)[:train_size]
            if len(sample) < 39:
                raise ValueError(
                    f'an IVF-PQ index needs more rows to train on than the '
                    f'{len(sample)} there are; use kind="flat"')
            index.train(np.ascontiguousarray(sample))
        for chunk in chunks():
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
        if index.ntotal != n:
            raise ValueError(f'the index got {index.ntotal} rows, '
                             f'expected {n}')
        return cls(kind, index, nprobe=nprobe, rerank=rerank)

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Row ids (Q, k') of the top ``k'``: ``max(100, rerank * k)``
        for IVF-PQ, ``k`` and a margin for near ties for the exact flat
        index (-1 where there are fewer)."""
        if self.kind == 'flat':
            kk = k + max(10, k // 10)
        else:
            kk = max(100, self.rerank * k)
        kk = int(min(self.ntotal, kk))
        _, ids = self.index.search(
            np.ascontiguousarray(np.atleast_2d(queries), np.float32), kk)
        return ids

    def search(self, queries: np.ndarray, k: int,
               fetch: Callable[[np.ndarray], np.ndarray]
               ) -> Tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query, re-ranked exactly.

        Args:
            queries: (Q, D) unit vectors.
            fetch: Gives the stored embeddings (float32, unit) of sorted
                unique row ids.

        Returns:
            ``(sims, ids)``, each (Q, <=k), best first, ties by row id.
        """
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        cand = self.candidates(queries, k)
        uniq = np.unique(cand[cand >= 0])
        rows = fetch(uniq) if len(uniq) else np.zeros(
            (0, queries.shape[1]), np.float32)
        sims_out, ids_out = [], []
        for q, ids in enumerate(cand):
            ids = np.unique(ids[ids >= 0])
            s = rows[np.searchsorted(uniq, ids)] @ queries[q]
            order = np.lexsort((ids, -s))[:k]
            sims_out.append(s[order])
            ids_out.append(ids[order])
        kk = min((len(i) for i in ids_out), default=0)
        return (np.stack([s[:kk] for s in sims_out]),
                np.stack([i[:kk] for i in ids_out]))

    def memory_bytes(self) -> int:
        """Bytes of the serialised index (what it holds in memory)."""
        return int(_faiss().serialize_index(self.index).nbytes)

    def save(self, folder: str, meta: dict) -> None:
        """Write ``folder/vectors.faiss`` and ``folder/vectors.json``
        (``meta`` plus the kind and search settings), each atomically."""
        faiss = _faiss()
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, 'vectors.faiss')
        faiss.write_index(self.index, path + '.tmp')
        os.replace(path + '.tmp', path)
        info = dict(meta, kind=self.kind, nprobe=self.nprobe,
                    rerank=self.rerank, ntotal=self.ntotal)
        with open(osp.join(folder, 'vectors.json.tmp'), 'w') as f:
            json.dump(info, f, indent=1)
        os.replace(osp.join(folder, 'vectors.json.tmp'),
                   osp.join(folder, 'vectors.json'))

    @classmethod
    def load(cls, folder: str) -> Tuple['VectorIndex', dict]:
        """What :meth:`save` wrote, and its meta."""
        with open(osp.join(folder, 'vectors.json')) as f:
            info = json.load(f)
        index = _faiss().read_index(osp.join(folder, 'vectors.faiss'))
        return cls(info['kind'], index, info['nprobe'],
                   info['rerank']), info
