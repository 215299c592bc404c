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

The IVF-PQ search parameters follow the index and the ``k`` asked
(:func:`ivf_params`): about ``4 * sqrt(N)`` inverted lists; ``nprobe``
(lists visited) chosen at build time for recall, by
:meth:`VectorIndex.calibrate`: the smallest that finds
:data:`TARGET_RECALL` of the exact top 10 of gallery rows used as queries,
and, for a larger ``k``, that times ``sqrt(k / 10)`` (at most
:data:`MAX_K_FACTOR` times); ``max(100, rerank * k)`` candidates re-ranked.
Each can be set instead (``nlist``, ``nprobe``, ``rerank``).

Nothing here imports torch: the benchmark and the index tools use it alone.
"""
import json
import math
import os
import os.path as osp
import time
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

#: Up to this many detections ``kind='auto'`` builds an exact
#: ``IndexFlatIP``; beyond it an IVF-PQ index. Measured with
#: ``tools/analysis_tools/benchmark_index.py`` (256-d, one busy thread of a
#: 2-core CPU): IVF-PQ answers a single query faster from 10 k rows on, but
#: flat stays exact, needs no training and takes ~1.3 ms of CPU at 30 k and
#: ~9 ms at 100 k rows; 50 k keeps it at ~2 ms.
FLAT_MAX_ROWS = 50_000
#: Embeddings wider than this are rotated and cut to it by PCA before PQ.
PCA_DIM = 256
KINDS = ('auto', 'flat', 'ivfpq')
#: IVF-PQ has about this many times ``sqrt(N)`` inverted lists.
NLIST_PER_SQRT_N = 4
#: The recall@10 against exact that the build calibrates ``nprobe`` for, on
#: :data:`CALIB_QUERIES` gallery rows (not training rows) used as queries:
#: above the 0.95 goal by several times the sampling error of that many
#: queries (the recall of new detections measured ~0.015 below it).
TARGET_RECALL = 0.97
CALIB_QUERIES = 500
#: ``nprobe`` grows with the ``k`` asked as ``sqrt(k / 10)``, at most this
#: many times (the 1000 candidates of a video search would visit ~10 times
#: the lists otherwise).
MAX_K_FACTOR = 4.0
#: At least this many candidates are re-ranked exactly.
MIN_CANDIDATES = 100
#: Version of ``search/vectors.json``. 1 (no ``format`` key, before the
#: parameters followed the index): a fixed ``nprobe`` (32); such an index
#: still loads, and :meth:`ShardedIndex.build_search_index` calibrates it.
FORMAT = 2


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


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` rows: the power of two nearest
    ``NLIST_PER_SQRT_N * sqrt(n)`` (1024 at 50 k rows, 2048 at 200 k, 4096
    at 1 M, 16384 at 10 M), at most ``n // 39`` (k-means wants 39 training
    points a centroid) and 65536."""
    nlist = 2**int(
        round(math.log2(max(NLIST_PER_SQRT_N * math.sqrt(max(n, 1)), 1))))
    return int(max(1, min(nlist, 65536, n // 39)))


def default_nprobe(nlist: int) -> int:
    """``nprobe`` for ``k <= 10`` where there was no calibration (and where
    it starts from): ``nlist / 16``, at least 8, at most ``nlist``."""
    return int(max(1, min(nlist, max(8, nlist // 16))))


def k_factor(k: int) -> float:
    """How many times the ``nprobe`` of a top 10 a top ``k`` visits:
    ``sqrt(k / 10)``, between 1 and :data:`MAX_K_FACTOR`."""
    return float(min(MAX_K_FACTOR, max(1.0, math.sqrt(max(k, 1) / 10))))


def search_params(nprobe: int,
                  nlist: int,
                  k: int,
                  rerank: int,
                  ntotal: int,
                  scale: bool = True) -> Tuple[int, int]:
    """``(nprobe, candidates)`` of an IVF search for the top ``k``:
    ``max(100, rerank * k)`` candidates (at most ``ntotal``); ``nprobe``
    (the top-10 one) times :func:`k_factor`, and at least the lists that
    hold twice the candidates on average (unless ``scale`` is off: a
    user's ``nprobe``), at most ``nlist``."""
    cand = int(max(1, min(ntotal, max(MIN_CANDIDATES, rerank * k))))
    probe = nprobe
    if scale:
        probe = max(
            math.ceil(nprobe * k_factor(k)),
            math.ceil(2 * cand * nlist / max(ntotal, 1)))
    probe = int(max(1, min(nlist, probe)))
    return probe, cand


def ivf_params(n: int,
               d: int,
               k: int = 10,
               nlist: Optional[int] = None,
               nprobe: Optional[int] = None,
               rerank: int = 10) -> dict:
    """The rule, before calibration: ``nlist`` (:func:`ivf_nlist`), the
    faiss ``factory`` string, and the ``nprobe`` and ``candidates`` of a
    top ``k`` (:func:`default_nprobe`, :func:`search_params`). A given
    ``nlist`` or ``nprobe`` (used for every ``k``) overrides the rule."""
    nlist = ivf_nlist(n) if nlist is None else int(nlist)
    base = default_nprobe(nlist) if nprobe is None else int(nprobe)
    probe, cand = search_params(
        base, nlist, k, rerank, n, scale=nprobe is None)
    return dict(
        nlist=nlist,
        factory=ivfpq_factory(n, d, nlist),
        nprobe=probe,
        candidates=cand)


def ivfpq_factory(n: int, d: int, nlist: Optional[int] = None) -> str:
    """The faiss factory string of the approximate index for ``n`` rows of
    width ``d``: ``nlist`` inverted lists (None: :func:`ivf_nlist`), 8
    dimensions per PQ sub-quantiser of 8 bits (fewer below 9984 rows:
    k-means wants 39 rows for each of its ``2**bits`` centroids; faiss
    refuses fewer rows than centroids), and a PCA to :data:`PCA_DIM` first
    when ``d`` is wider."""
    nlist = ivf_nlist(n) if nlist is None else int(nlist)
    if nlist < 1:
        raise ValueError(f'nlist must be >= 1, got {nlist}')
    pre, dd = '', d
    if d > PCA_DIM:
        pre, dd = f'PCAR{PCA_DIM},', PCA_DIM
    m = max(1, dd // 8)
    while dd % m:
        m -= 1
    bits = int(min(8, max(1, math.floor(math.log2(max(n, 2) / 39)))))
    pq = f'PQ{m}' if bits == 8 else f'PQ{m}x{bits}'
    # np: no polysemous training (15 s even for 8000 rows, and its Hamming
    # filter is not used here)
    return f'{pre}IVF{nlist},{pq}np'


class VectorIndex:
    """A faiss index over unit embeddings, with exact re-ranking.

    Args:
        kind (str): ``'flat'`` or ``'ivfpq'`` (``'auto'`` is resolved by
            :meth:`build`).
        index: The faiss index.
        nprobe (int, optional): Inverted lists visited per query (IVF-PQ)
            for a top 10 or less; more for a larger ``k`` when
            ``scale_nprobe`` (:func:`search_params`). None:
            :func:`default_nprobe` (:meth:`calibrate` chooses it for
            recall).
        rerank (int): Candidates fetched per query, as a multiple of the
            ``k`` asked (at least 100), before the exact re-ranking.
        scale_nprobe (bool): False for a ``nprobe`` a user set: used as it
            is for every ``k``.
        calibration (list, optional): ``[nprobe, recall@10]`` pairs that
            :meth:`calibrate` measured.
        target_recall (float, optional): What it calibrated for.
    """

    def __init__(self,
                 kind: str,
                 index,
                 nprobe: Optional[int] = None,
                 rerank: int = 10,
                 scale_nprobe: bool = True,
                 calibration: Optional[list] = None,
                 target_recall: Optional[float] = None) -> None:
        self.kind = kind
        self.index = index
        ivf = self._ivf()
        self.nlist = None if ivf is None else int(ivf.nlist)
        self.nprobe = None if ivf is None else int(
            default_nprobe(self.nlist) if nprobe is None else nprobe)
        if rerank < 1 or (self.nprobe is not None and self.nprobe < 1):
            raise ValueError(f'nprobe and rerank must be >= 1, got '
                             f'{nprobe} and {rerank}')
        self.rerank = int(rerank)
        self.scale_nprobe = bool(scale_nprobe)
        self.calibration = [list(c) for c in calibration or []]
        self.target_recall = target_recall
        #: seconds of the train, add and calibrate steps of :meth:`build`
        self.build_times = {}

    def _ivf(self):
        """The inverted file inside the index, or None (flat)."""
        if self.kind == 'flat':
            return None
        try:
            return _faiss().extract_index_ivf(self.index)
        except RuntimeError:  # a factory without IVF (e.g. HNSW)
            return None

    def set_nprobe(self, nprobe: int) -> None:
        """A user's ``nprobe``: visited for every ``k``, as it is."""
        if self.nlist is not None:
            if int(nprobe) < 1:
                raise ValueError(f'nprobe must be >= 1, got {nprobe}')
            self.nprobe, self.scale_nprobe = int(nprobe), False

    @property
    def needs_calibration(self) -> bool:
        """An IVF index whose ``nprobe`` was neither calibrated nor set
        (e.g. one of format 1)."""
        return self.nlist is not None and self.scale_nprobe and \
            not self.calibration

    def search_params(self, k: int) -> Tuple[Optional[int], int]:
        """``(nprobe, candidates)`` of a search for the top ``k``
        (:func:`search_params`; the flat index: no ``nprobe``, ``k`` and a
        margin for near ties)."""
        if self.nlist is None:
            return None, int(min(self.ntotal, k + max(10, k // 10)))
        return search_params(self.nprobe, self.nlist, k, self.rerank,
                             self.ntotal, self.scale_nprobe)

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
              nprobe: Optional[int] = None,
              rerank: int = 10,
              factory: Optional[str] = None,
              nlist: Optional[int] = None,
              target_recall: float = TARGET_RECALL,
              calib_queries: int = CALIB_QUERIES) -> 'VectorIndex':
        """Build over ``n`` rows of width ``d``.

        Args:
            chunks: Called (once; three times for IVF-PQ: a training
                sample, the rows, the calibration) to give the rows in
                order, in chunks of unit float32/float16 vectors; the rows
                are never all in memory at once, beyond what the index
                itself holds.
            kind (str): ``'auto'`` (:func:`auto_kind`), ``'flat'``,
                ``'ivfpq'``.
            train_size (int, optional): Rows (evenly spaced) to train
                IVF-PQ on; None: 64 per inverted list, at least 20000.
            nprobe (int, optional): Lists visited per query, for every
                ``k``; None: calibrated for ``target_recall``
                (:meth:`calibrate`) and scaled with ``k``.
            rerank (int): Candidates re-ranked, times ``k`` (>= 100).
            factory (str, optional): Another faiss factory string for
                ``'ivfpq'`` (e.g. ``'OPQ32,IVF4096,PQ32'``).
            nlist (int, optional): Inverted lists; None:
                :func:`ivf_nlist`.
            target_recall (float): Recall@10 that ``nprobe`` is
                calibrated for.
            calib_queries (int): Gallery rows (evenly spaced, between the
                training rows) used as queries by the calibration.
        """
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
        faiss = _faiss()
        kind = auto_kind(n) if kind == 'auto' else kind
        sample = calib = calib_ids = None
        times, t0 = {}, time.perf_counter()
        if kind == 'flat':
            index = faiss.IndexFlatIP(d)
        else:
            spec = factory or ivfpq_factory(n, d, nlist)
            index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
            if train_size is None:
                lists = faiss.extract_index_ivf(index).nlist
                train_size = max(20_000, 64 * lists)
            step = max(1, n // max(1, train_size))
            # the calibration's queries: rows half-way between training
            # rows (training rows only where every row trains)
            grid = np.arange(0, n, step)[:train_size]
            pick = np.linspace(0, len(grid) - 1, min(calib_queries, len(grid)))
            calib_ids = np.unique(
                np.minimum(grid[pick.round().astype(np.int64)] + step // 2,
                           n - 1))
            sample, calib, pos = [], [], 0
            for chunk in chunks():
                take = np.arange((-pos) % step, len(chunk), step)
                sample.append(np.asarray(chunk[take], np.float32))
                sel = calib_ids[(calib_ids >= pos)
                                & (calib_ids < pos + len(chunk))] - pos
                calib.append(np.asarray(chunk[sel], np.float32))
                pos += len(chunk)
            sample = np.concatenate(sample)[:train_size]
            calib = np.concatenate(calib)
            if len(sample) < 39:
                raise ValueError(
                    f'an IVF-PQ index needs more rows to train on than the '
                    f'{len(sample)} there are; use kind="flat"')
            index.train(np.ascontiguousarray(sample))
            times['train_s'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for chunk in chunks():
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
        if index.ntotal != n:
            raise ValueError(f'the index got {index.ntotal} rows, '
                             f'expected {n}')
        times['add_s'] = time.perf_counter() - t0
        vi = cls(
            kind,
            index,
            nprobe=nprobe,
            rerank=rerank,
            scale_nprobe=nprobe is None)
        if vi.nlist is not None and nprobe is None:
            t0 = time.perf_counter()
            vi.calibrate(calib, calib_ids, chunks, target_recall)
            times['calibrate_s'] = time.perf_counter() - t0
        vi.build_times = times
        return vi

    def calibrate(self,
                  queries: np.ndarray,
                  query_ids: np.ndarray,
                  chunks: Callable[[], Iterable[np.ndarray]],
                  target_recall: float = TARGET_RECALL,
                  k: int = 10) -> None:
        """Choose ``nprobe`` for recall: the smallest of 1, 2, 3, 4, 6,
        8, 12, ... (at most ``nlist``) whose candidates hold
        ``target_recall`` of the exact top ``k`` of ``queries``, rows of
        the gallery (``query_ids``; each one itself left out). The exact
        re-ranking keeps every true top-k row among the candidates, so
        this is the recall@k of the search. Records the curve in
        :attr:`calibration`.

        Args:
            queries: (Q, D) unit rows of the gallery.
            query_ids: (Q,) their row ids.
            chunks: As for :meth:`build` (called once here).
        """
        ivf = self._ivf()
        if ivf is None or not len(queries):
            return
        if not 0 < target_recall <= 1:
            raise ValueError(f'target_recall must be in (0, 1], got '
                             f'{target_recall}')
        queries = np.ascontiguousarray(queries, np.float32)
        query_ids = np.asarray(query_ids, np.int64)
        _, truth = exact_topk_chunked(chunks(), queries, k + 1)
        truth = [t[t != i][:k] for t, i in zip(truth, query_ids)]
        want = sum(len(t) for t in truth)
        if not want:
            return
        _, cand = search_params(1, 1, k, self.rerank, self.ntotal)
        cand = int(min(self.ntotal, cand + 1))  # the query itself
        ladder, p = [], 1
        while p < self.nlist:
            ladder += [p, p * 3 // 2] if p > 1 else [p]
            p *= 2
        ladder = sorted({min(x, self.nlist) for x in ladder + [self.nlist]})
        curve = []
        for probe in ladder:
            ivf.nprobe = probe
            _, ids = self.index.search(queries, cand)
            got = sum(len(np.intersect1d(t, c)) for t, c in zip(truth, ids))
            curve.append([probe, round(got / want, 4)])
            if got / want >= target_recall:
                break
        self.nprobe, self.scale_nprobe = curve[-1][0], True
        self.calibration, self.target_recall = curve, float(target_recall)

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Row ids (Q, k') of the top ``k'`` (:meth:`search_params`:
        ``max(100, rerank * k)`` for IVF-PQ, ``k`` and a margin for near
        ties for the exact flat index; -1 where there are fewer)."""
        probe, kk = self.search_params(k)
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if probe is None:
            return self.index.search(queries, kk)[1]
        ivf = self._ivf()
        ivf.nprobe = probe
        ids = self.index.search(queries, kk)[1]
        # a query whose lists held fewer than k rows: more lists, doubling
        need = min(k, self.ntotal)
        short = np.flatnonzero((ids >= 0).sum(1) < need)
        while len(short) and probe < self.nlist:
            probe = min(self.nlist, probe * 2)
            ivf.nprobe = probe
            ids[short] = self.index.search(queries[short], kk)[1]
            short = short[(ids[short] >= 0).sum(1) < need]
        return ids

    def search(
        self, queries: np.ndarray, k: int, fetch: Callable[[np.ndarray],
                                                           np.ndarray]
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
        info = dict(
            meta,
            format=FORMAT,
            kind=self.kind,
            nlist=self.nlist,
            nprobe=self.nprobe,
            scale_nprobe=self.scale_nprobe,
            rerank=self.rerank,
            target_recall=self.target_recall,
            calibration=self.calibration,
            ntotal=self.ntotal)
        with open(osp.join(folder, 'vectors.json.tmp'), 'w') as f:
            json.dump(info, f, indent=1)
        os.replace(
            osp.join(folder, 'vectors.json.tmp'),
            osp.join(folder, 'vectors.json'))

    @classmethod
    def load(cls, folder: str) -> Tuple['VectorIndex', dict]:
        """What :meth:`save` wrote, and its meta. One of format 1 (a fixed
        ``nprobe``) loads with that ``nprobe`` for a top 10, scaled with
        ``k``, and :attr:`needs_calibration`; a newer format is refused."""
        with open(osp.join(folder, 'vectors.json')) as f:
            info = json.load(f)
        fmt = info.get('format', 1)
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise ValueError(
                f'{osp.join(folder, "vectors.json")} is of format {fmt!r}, '
                f'this mmpsearch reads up to {FORMAT}: rebuild the search '
                f'index (ShardedIndex.build_search_index(rebuild=True)), or '
                f'delete {folder}')
        index = _faiss().read_index(osp.join(folder, 'vectors.faiss'))
        vi = cls(
            info['kind'],
            index,
            info.get('nprobe'),
            info['rerank'],
            scale_nprobe=info.get('scale_nprobe', True),
            calibration=info.get('calibration'),
            target_recall=info.get('target_recall'))
        if info.get('nlist') not in (None, vi.nlist):
            raise ValueError(
                f'{folder}: vectors.json says {info["nlist"]} inverted '
                f'lists, vectors.faiss has {vi.nlist}: rebuild the search '
                f'index (ShardedIndex.build_search_index(rebuild=True))')
        return vi, info
