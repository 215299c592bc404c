# Copyright (c) mmpsearch contributors. All rights reserved.
"""Benchmark the vector search of the on-disk index at scale, on synthetic
embeddings with identity structure.

    # the defaults: 1M x 2048 and 10M x 256
    python tools/analysis_tools/benchmark_index.py
    python tools/analysis_tools/benchmark_index.py --sizes 200000x256 \
        --crossover 10000 30000 100000 200000

For each size N x D it generates a gallery like ReID embeddings: N / 25
identities (25 detections each on average, a track's worth) around random
unit centres, each detection ``centre + noise`` (cosine ~0.8 to its
centre), written in chunks to a float32 memory map in --workdir (never all
in memory; --float16: a float16 one, as an index made with --float16).
Queries are new detections of gallery identities. It prints, for numpy
exact (a chunked matrix product: what person-search code does; also the
ground truth), faiss exact (IndexFlatIP) and the approximate index (IVF-PQ,
PCA first when D > 256, exact re-ranking from the stored embeddings; its
lists, nprobe and candidates follow N and k, nprobe calibrated at build for
--target-recall, see mmpsearch.apis.vector_search): build time, index
memory, p50 / p95 latency of a single query (top 10) and of a batch of 100
(top 100), recall@10 / @100 against exact; and numpy exact over
float16-stored embeddings (the recall cost of --float16). Then the
crossover: the smallest of the --crossover sizes at which the approximate
index answers a single query faster than the flat one.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from mmpsearch.utils.cli_args import add_json_args


def parse_size(text: str):
    try:
        n, d = text.lower().split('x')
        n, d = int(float(n)), int(d)
        assert n > 0 and d > 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(
            f'size {text!r}: expected NxD, e.g. 1000000x2048') from None
    return n, d


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark numpy exact, faiss flat and IVF-PQ search on '
        'clustered synthetic embeddings.')
    parser.add_argument(
        '--sizes',
        nargs='+',
        type=parse_size,
        default=[(1_000_000, 2048), (10_000_000, 256)],
        metavar='NxD',
        help='galleries to build')
    parser.add_argument(
        '--crossover',
        nargs='*',
        type=int,
        default=[10_000, 30_000, 100_000, 300_000, 1_000_000],
        metavar='N',
        help='gallery sizes (at the width of '
        '--crossover-dim) to find the crossover at; none '
        'to skip')
    parser.add_argument('--crossover-dim', type=int, default=256)
    parser.add_argument(
        '--per-id',
        type=float,
        default=25.0,
        help='mean detections per identity')
    parser.add_argument(
        '--noise',
        type=float,
        default=0.75,
        help='norm of the noise around a unit centre')
    parser.add_argument(
        '--queries',
        type=int,
        default=200,
        help='queries (for recall; latency: the first 50 '
        'alone, and batches of 100)')
    parser.add_argument(
        '--numpy-queries',
        type=int,
        default=5,
        help='single queries timed for numpy exact (slow)')
    parser.add_argument(
        '--nprobe',
        type=int,
        default=None,
        help='IVF lists visited per query, for every k '
        '(default: calibrated at build for '
        '--target-recall, times sqrt(k / 10))')
    parser.add_argument(
        '--nlist',
        type=int,
        default=None,
        help='IVF lists (default: ~4 sqrt(N), a power of '
        'two)')
    parser.add_argument(
        '--target-recall',
        type=float,
        default=None,
        help='recall@10 the build calibrates nprobe for '
        '(default: TARGET_RECALL, 0.97)')
    parser.add_argument(
        '--rerank',
        type=int,
        default=10,
        help='candidates per query, times k (>= 100)')
    parser.add_argument(
        '--float16',
        action='store_true',
        help='store the generated embeddings as float16 '
        '(half the disk and page cache; the index is '
        'built from, and re-ranks with, the rounded rows)')
    parser.add_argument(
        '--train-size',
        type=int,
        default=None,
        help='IVF-PQ training rows (default: 64 per list)')
    parser.add_argument(
        '--chunk',
        type=int,
        default=100_000,
        help='rows generated / added at a time')
    parser.add_argument(
        '--threads',
        type=int,
        default=0,
        help='faiss / BLAS threads (0: all cores)')
    parser.add_argument(
        '--workdir',
        default=None,
        help='where the memory maps go (default: a '
        'temporary folder, removed after)')
    add_json_args(
        parser,
        help='also write the figures to this file (new, unless --force)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.queries < 1 or args.chunk < 1 or args.per_id <= 0:
        parser.error('--queries, --chunk and --per-id must be > 0')
    if any(v is not None and v < 1 for v in (args.nprobe, args.nlist)) \
            or args.rerank < 1:
        parser.error('--nprobe, --nlist and --rerank must be >= 1')
    if args.target_recall is not None and \
            not 0 < args.target_recall <= 1:
        parser.error('--target-recall must be in (0, 1]')
    if args.workdir is not None and os.path.isfile(args.workdir):
        parser.error(f'--workdir {args.workdir} is a file')
    return args


def make_gallery(path, n, d, per_id, noise, chunk, seed, dtype='float32'):
    """The gallery memory map (unit rows, of ``dtype``) and a query
    maker."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n_ids = max(1, int(n / per_id))
    centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mm = np.lib.format.open_memmap(path, 'w+', np.dtype(dtype), (n, d))
    for s in range(0, n, chunk):
        r = np.random.default_rng((seed, s))
        m = min(chunk, n - s)
        ids = r.integers(0, n_ids, m)
        x = centres[ids] + r.standard_normal((m, d), dtype=np.float32) * (
            noise / np.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        mm[s:s + m] = x
    mm.flush()

    def queries(q):
        r = np.random.default_rng((seed, 2**31))
        ids = r.integers(0, n_ids, q)
        x = centres[ids] + r.standard_normal((q, d), dtype=np.float32) * (
            noise / np.sqrt(d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(
            np.float32)

    return np.load(path, mmap_mode='r'), queries


class Clock:
    """Wall and CPU (this process) seconds of a block. On a shared machine
    the CPU time is what the work costs; the wall time an upper bound."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def pct(values, p):
    """The ``p`` percentile of ``values`` (seconds), in ms; nan if none."""
    import numpy as np
    if not len(values):
        return float('nan')
    return float(np.percentile(np.asarray(values) * 1000, p))


def recall(found, truth, k):
    import numpy as np
    return float(
        np.mean([
            len(np.intersect1d(f[:k], t[:k])) / k
            for f, t in zip(found, truth)
        ]))


def chunks_of(mm, chunk):
    import numpy as np
    for s in range(0, len(mm), chunk):
        yield np.asarray(mm[s:s + chunk], np.float32)


def vi_kwargs(args):
    """The approximate index's options given on the command line."""
    kw = dict(
        nprobe=args.nprobe,
        nlist=args.nlist,
        rerank=args.rerank,
        train_size=args.train_size)
    if args.target_recall is not None:
        kw['target_recall'] = args.target_recall
    return kw


def bench_size(n, d, args, workdir, log):
    import numpy as np

    from mmpsearch.apis.vector_search import (VectorIndex, exact_topk_chunked,
                                              ivfpq_factory)
    path = os.path.join(workdir, f'gallery_{n}x{d}.npy')
    t = time.time()
    mm, make_queries = make_gallery(path, n, d, args.per_id, args.noise,
                                    args.chunk, args.seed,
                                    'float16' if args.float16 else 'float32')
    log(f'\n== {n:,} x {d} (raw float32 {n * d * 4 / 2**30:.2f} GiB'
        f'{", stored as float16" if args.float16 else ""}), generated in '
        f'{time.time() - t:.1f} s')
    queries = make_queries(args.queries)
    single = queries[:min(50, len(queries))]
    rows = []
    k100 = min(100, n)

    def fetch(ids):
        return np.asarray(mm[ids], np.float32)

    def chunks():
        return chunks_of(mm, args.chunk)

    # numpy exact: a chunked matrix product over the memory map; its top
    # 100 of every query (batches of 100) is also the ground truth
    def timings(lat1, latb):
        """Latency figures (ms) of single queries and batches, each a
        list of :class:`Clock`."""
        return dict(
            p50_ms=pct([c.wall for c in lat1], 50),
            p95_ms=pct([c.wall for c in lat1], 95),
            cpu_p50_ms=pct([c.cpu for c in lat1], 50),
            batch100_p50_ms=pct([c.wall for c in latb], 50),
            batch100_p95_ms=pct([c.wall for c in latb], 95),
            batch100_cpu_p50_ms=pct([c.cpu for c in latb], 50))

    lat1 = []
    for q in single[:args.numpy_queries]:
        with Clock() as c:
            exact_topk_chunked(chunks(), q, 10)
        lat1.append(c)
    latb, truth = [], []
    for s in range(0, len(queries), 100):
        with Clock() as c:
            truth.append(
                exact_topk_chunked(chunks(), queries[s:s + 100], k100)[1])
        latb.append(c)
    truth = np.concatenate(truth)
    rows.append(
        dict(
            method='numpy exact (chunked matrix product)',
            build_s=0.0,
            build_cpu_s=0.0,
            memory_mib=0.0,
            **timings(lat1, latb),
            recall10=1.0,
            recall100=1.0))

    def measure(method, vi, build, memory_mib, exact):
        """Single queries (top 10) and batches of 100 (top 100), timed;
        recall@10 of a top-10 search of every query (that of the top 100
        for an exact index), recall@100 of the top 100."""
        lat1 = []
        for q in single:
            with Clock() as c:
                vi.search(q[None], 10, fetch)
            lat1.append(c)
        latb, found = [], []
        for s in range(0, len(queries), 100):
            with Clock() as c:
                found.append(vi.search(queries[s:s + 100], k100, fetch)[1])
            latb.append(c)
        found = np.concatenate(found)
        found10 = found if exact else vi.search(queries, 10, fetch)[1]
        return dict(
            method=method,
            build_s=build.wall,
            build_cpu_s=build.cpu,
            memory_mib=memory_mib,
            **timings(lat1, latb),
            recall10=recall(found10, truth, 10),
            recall100=recall(found, truth, k100))

    # faiss exact
    with Clock() as build:
        flat = VectorIndex.build(chunks, n, d, kind='flat')
    rows.append(
        measure(
            'faiss flat (IndexFlatIP)',
            flat,
            build,
            n * d * 4 / 2**20,
            exact=True))
    del flat
    # the float16 storage of --float16: exact search over rounded rows
    if not args.float16:
        ids16 = exact_topk_chunked((c.astype(np.float16).astype(np.float32)
                                    for c in chunks()), queries, k100)[1]
        rows.append(
            dict(
                method='numpy exact, float16 storage',
                build_s=0.0,
                build_cpu_s=0.0,
                memory_mib=0.0,
                **timings([], []),
                recall10=recall(ids16, truth, 10),
                recall100=recall(ids16, truth, k100)))
    # approximate
    approx_info = None
    if n >= 39 * 16:
        with Clock() as build:
            approx = VectorIndex.build(
                chunks, n, d, kind='ivfpq', **vi_kwargs(args))
        spec = ivfpq_factory(n, d, approx.nlist)
        (p10, c10), (p100, c100) = (approx.search_params(10),
                                    approx.search_params(k100))
        rows.append(
            measure(
                f'faiss {spec} + re-rank',
                approx,
                build,
                approx.memory_bytes() / 2**20,
                exact=False))
        approx_info = dict(
            factory=spec,
            nlist=approx.nlist,
            nprobe10=p10,
            nprobe100=p100,
            candidates10=c10,
            candidates100=c100,
            calibration=approx.calibration,
            target_recall=approx.target_recall,
            build_times=approx.build_times)
        times = ', '.join(f'{k[:-2]} {v:.1f} s'
                          for k, v in approx.build_times.items())
        curve = ' '.join(f'{p}:{r:.3f}' for p, r in approx.calibration)
        curve = f' (calibrated, nprobe:recall@10 {curve})' if curve else ''
        log(f'{spec}: nprobe {p10} for a top 10{curve}, {p100} for a top '
            f'{k100}; {c10} / {c100} candidates re-ranked; {times}')
        del approx
    log('(wall time; "cpu": this process\'s CPU time, what the work costs '
        'on a shared machine)')
    header = (f'{"method":<44} {"build s":>7} {"cpu s":>7} {"mem MiB":>8} '
              f'{"p50 ms":>8} {"p95 ms":>8} {"cpu p50":>8} {"b100 p50":>9} '
              f'{"b100 p95":>9} {"b100 cpu":>9} {"R@10":>6} {"R@100":>6}')
    log(header)
    for r in rows:
        log(f'{r["method"]:<44} {r["build_s"]:7.1f} {r["build_cpu_s"]:7.1f} '
            f'{r["memory_mib"]:8.1f} {r["p50_ms"]:8.2f} {r["p95_ms"]:8.2f} '
            f'{r["cpu_p50_ms"]:8.2f} {r["batch100_p50_ms"]:9.1f} '
            f'{r["batch100_p95_ms"]:9.1f} {r["batch100_cpu_p50_ms"]:9.1f} '
            f'{r["recall10"]:6.3f} {r["recall100"]:6.3f}')
    if approx_info is not None:
        a, e = rows[-1], rows[0]
        raw = n * d * 4 / 2**20
        log(f'approximate vs numpy exact, wall (cpu): '
            f'{e["p50_ms"] / a["p50_ms"]:.0f}x '
            f'({e["cpu_p50_ms"] / a["cpu_p50_ms"]:.0f}x) faster a single '
            f'query (p50), {e["batch100_p50_ms"] / a["batch100_p50_ms"]:.1f}x '
            f'({e["batch100_cpu_p50_ms"] / a["batch100_cpu_p50_ms"]:.1f}x) a '
            f'batch of 100; memory {a["memory_mib"] / raw:.3f} of the raw '
            f'float32')
    os.remove(path)
    return dict(n=n, d=d, float16=args.float16, rows=rows, approx=approx_info)


def crossover(sizes, d, args, workdir, log):
    import numpy as np

    from mmpsearch.apis.vector_search import VectorIndex
    out = []
    log(f'\n== crossover at {d}-d (single query, p50 ms of CPU time; '
        'recall@10)')
    for n in sizes:
        path = os.path.join(workdir, f'cross_{n}x{d}.npy')
        mm, make_queries = make_gallery(
            path, n, d, args.per_id, args.noise, args.chunk, args.seed,
            'float16' if args.float16 else 'float32')
        queries = make_queries(50)

        def fetch(ids):
            return np.asarray(mm[ids], np.float32)

        res = {}
        truth = None
        for kind in ('flat', 'ivfpq'):
            if kind == 'ivfpq' and n < 39 * 16:
                continue
            vi = VectorIndex.build(
                lambda: chunks_of(mm, args.chunk),
                n,
                d,
                kind=kind,
                **vi_kwargs(args))
            lat, found = [], []
            for q in queries:
                with Clock() as c:
                    found.append(vi.search(q[None], 10, fetch)[1][0])
                lat.append(c.cpu)
            if truth is None:
                truth = found
            res[kind] = (pct(lat, 50), recall(found, truth, 10), vi.nlist,
                         vi.search_params(10)[0])
        os.remove(path)
        ivf = res.get('ivfpq', (float('nan'), float('nan'), None, None))
        row = dict(
            n=n,
            flat_p50_ms=res['flat'][0],
            ivfpq_p50_ms=ivf[0],
            ivfpq_recall10=ivf[1],
            nlist=ivf[2],
            nprobe10=ivf[3])
        out.append(row)
        log(f'{n:>10,}  flat {row["flat_p50_ms"]:8.3f}  ivfpq '
            f'{row["ivfpq_p50_ms"]:8.3f}  (recall@10 '
            f'{row["ivfpq_recall10"]:.3f}, nlist {ivf[2]}, nprobe {ivf[3]})')
    pays = [r['n'] for r in out if r['ivfpq_p50_ms'] < r['flat_p50_ms']]
    cross = min(pays) if pays else None
    log(f'crossover: the approximate index is faster from '
        f'{cross:,} rows on' if cross else
        'crossover: the flat index was faster at every size measured')
    return dict(d=d, rows=out, crossover=cross)


def main(argv=None) -> int:
    args = parse_args(argv)
    # after parsing: --help answers without the slow imports (torch)
    from mmpsearch.utils.cli import exit_on_refusal, refuse_existing_json
    with exit_on_refusal():
        refuse_existing_json(args)
    import faiss
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    workdir = args.workdir or tempfile.mkdtemp(prefix='bench_index_')
    os.makedirs(workdir, exist_ok=True)
    log = print
    log(f'faiss {faiss.__version__}, {faiss.omp_get_max_threads()} '
        f'threads, memory maps in {workdir}')
    report = dict(sizes=[], crossover=None)
    try:
        for n, d in args.sizes:
            report['sizes'].append(bench_size(n, d, args, workdir, log))
        if args.crossover:
            report['crossover'] = crossover(args.crossover, args.crossover_dim,
                                            args, workdir, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
