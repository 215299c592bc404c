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
in memory). Queries are new detections of gallery identities. It prints,
for numpy exact (a chunked matrix product: what person-search code does),
faiss exact (IndexFlatIP) and the approximate index (IVF-PQ, PCA first
when D > 256, exact re-ranking from the stored embeddings): build time,
index memory, p50 / p95 latency of a single query and of a batch of 100,
recall@10 / @100 against exact; and numpy exact over float16-stored
embeddings (the recall cost of --float16). Then the crossover: the
smallest of the --crossover sizes at which the approximate index answers a
single query faster than the flat one.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time


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
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(1_000_000, 2048), (10_000_000, 256)],
                        metavar='NxD', help='galleries to build')
    parser.add_argument('--crossover', nargs='*', type=int,
                        default=[10_000, 30_000, 100_000, 300_000,
                                 1_000_000],
                        metavar='N', help='gallery sizes (at the width of '
                        '--crossover-dim) to find the crossover at; none '
                        'to skip')
    parser.add_argument('--crossover-dim', type=int, default=256)
    parser.add_argument('--per-id', type=float, default=25.0,
                        help='mean detections per identity')
    parser.add_argument('--noise', type=float, default=0.75,
                        help='norm of the noise around a unit centre')
    parser.add_argument('--queries', type=int, default=200,
                        help='queries (for recall; latency: the first 50 '
                        'alone, and batches of 100)')
    parser.add_argument('--numpy-queries', type=int, default=5,
                        help='single queries timed for numpy exact (slow)')
    parser.add_argument('--nprobe', type=int, default=32)
    parser.add_argument('--rerank', type=int, default=10,
                        help='candidates per query, times k (>= 100)')
    parser.add_argument('--train-size', type=int, default=None,
                        help='IVF-PQ training rows (default: 64 per list)')
    parser.add_argument('--chunk', type=int, default=100_000,
                        help='rows generated / added at a time')
    parser.add_argument('--threads', type=int, default=0,
                        help='faiss / BLAS threads (0: all cores)')
    parser.add_argument('--workdir', default=None,
                        help='where the memory maps go (default: a '
                        'temporary folder, removed after)')
    parser.add_argument('--json', default=None,
                        help='also write the figures to this file (new, '
                        'unless --force)')
    parser.add_argument('--force', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.queries < 1 or args.chunk < 1 or args.per_id <= 0:
        parser.error('--queries, --chunk and --per-id must be > 0')
    if args.workdir is not None and os.path.isfile(args.workdir):
        parser.error(f'--workdir {args.workdir} is a file')
    return args


def make_gallery(path, n, d, per_id, noise, chunk, seed):
    """The gallery memory map (float32, unit rows) and a query maker."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n_ids = max(1, int(n / per_id))
    centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mm = np.lib.format.open_memmap(path, 'w+', np.float32, (n, d))
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


def pct(values, p):
    import numpy as np
    return float(np.percentile(np.asarray(values) * 1000, p))


def recall(found, truth, k):
    import numpy as np
    return float(np.mean([
        len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth)
    ]))


def chunks_of(mm, chunk):
    import numpy as np
    for s in range(0, len(mm), chunk):
        yield np.asarray(mm[s:s + chunk], np.float32)


def bench_size(n, d, args, workdir, log):
    import faiss
    import numpy as np

    from mmpsearch.apis.vector_search import (VectorIndex, exact_topk_chunked,
                                              ivfpq_factory)
    path = os.path.join(workdir, f'gallery_{n}x{d}.npy')
    t = time.time()
    mm, make_queries = make_gallery(path, n, d, args.per_id, args.noise,
                                    args.chunk, args.seed)
    log(f'\n== {n:,} x {d} (raw float32 {n * d * 4 / 2**30:.2f} GiB), '
        f'generated in {time.time() - t:.1f} s')
    queries = make_queries(args.queries)
    single = queries[:min(50, len(queries))]
    rows = []
    k100 = min(100, n)

    def fetch(ids):
        return np.asarray(mm[ids], np.float32)

    # faiss exact, also the ground truth
    t = time.time()
    flat = VectorIndex.build(lambda: chunks_of(mm, args.chunk), n, d,
                             kind='flat')
    build = time.time() - t
    truth = flat.index.search(queries, k100)[1]
    lat1 = []
    for q in single:
        t = time.time()
        flat.search(q[None], 10, fetch)
        lat1.append(time.time() - t)
    latb, found = [], []
    for s in range(0, len(queries), 100):
        t = time.time()
        found.append(flat.search(queries[s:s + 100], k100, fetch)[1])
        latb.append(time.time() - t)
    found = np.concatenate(found)
    rows.append(dict(method='faiss flat (IndexFlatIP)', build_s=build,
                     memory_mib=n * d * 4 / 2**20, p50_ms=pct(lat1, 50),
                     p95_ms=pct(lat1, 95), batch100_p50_ms=pct(latb, 50),
                     batch100_p95_ms=pct(latb, 95),
                     recall10=recall(found, truth, 10),
                     recall100=recall(found, truth, k100)))
    del flat
    # numpy exact: a chunked matrix product over the memory map
    lat1, res = [], []
    for q in single[:args.numpy_queries]:
        t = time.time()
        res.append(exact_topk_chunked(chunks_of(mm, args.chunk), q, k100)[1])
        lat1.append(time.time() - t)
    t = time.time()
    ids = exact_topk_chunked(chunks_of(mm, args.chunk), queries[:100],
                             k100)[1]
    latb = [time.time() - t]
    rows.append(dict(method='numpy exact', build_s=0.0, memory_mib=0.0,
                     p50_ms=pct(lat1, 50), p95_ms=pct(lat1, 95),
                     batch100_p50_ms=pct(latb, 50),
                     batch100_p95_ms=pct(latb, 95),
                     recall10=recall(ids, truth, 10),
                     recall100=recall(ids, truth[:100], k100)))
    # the float16 storage of --float16: exact search over rounded rows
    ids16 = exact_topk_chunked(
        (c.astype(np.float16).astype(np.float32)
         for c in chunks_of(mm, args.chunk)), queries, k100)[1]
    rows.append(dict(method='numpy exact, float16 storage', build_s=0.0,
                     memory_mib=0.0, p50_ms=float('nan'),
                     p95_ms=float('nan'), batch100_p50_ms=float('nan'),
                     batch100_p95_ms=float('nan'),
                     recall10=recall(ids16, truth, 10),
                     recall100=recall(ids16, truth, k100)))
    # approximate
    if n >= 39 * 16:
        spec = ivfpq_factory(n, d)
        t = time.time()
        approx = VectorIndex.build(lambda: chunks_of(mm, args.chunk), n, d,
                                   kind='ivfpq', nprobe=args.nprobe,
                                   rerank=args.rerank,
                                   train_size=args.train_size)
        build = time.time() - t
        lat1 = []
        for q in single:
            t = time.time()
            approx.search(q[None], 10, fetch)
            lat1.append(time.time() - t)
        latb, found = [], []
        for s in range(0, len(queries), 100):
            t = time.time()
            found.append(approx.search(queries[s:s + 100], k100, fetch)[1])
            latb.append(time.time() - t)
        found = np.concatenate(found)
        rows.append(dict(
            method=f'faiss {spec} + re-rank (nprobe {args.nprobe})',
            build_s=build, memory_mib=approx.memory_bytes() / 2**20,
            p50_ms=pct(lat1, 50), p95_ms=pct(lat1, 95),
            batch100_p50_ms=pct(latb, 50), batch100_p95_ms=pct(latb, 95),
            recall10=recall(found, truth, 10),
            recall100=recall(found, truth, k100)))
        del approx
    del faiss
    header = (f'{"method":<48} {"build s":>8} {"mem MiB":>9} {"p50 ms":>8} '
              f'{"p95 ms":>8} {"b100 p50":>9} {"b100 p95":>9} {"R@10":>6} '
              f'{"R@100":>6}')
    log(header)
    for r in rows:
        log(f'{r["method"]:<48} {r["build_s"]:8.1f} {r["memory_mib"]:9.1f} '
            f'{r["p50_ms"]:8.2f} {r["p95_ms"]:8.2f} '
            f'{r["batch100_p50_ms"]:9.1f} {r["batch100_p95_ms"]:9.1f} '
            f'{r["recall10"]:6.3f} {r["recall100"]:6.3f}')
    os.remove(path)
    return dict(n=n, d=d, rows=rows)


def crossover(sizes, d, args, workdir, log):
    import numpy as np

    from mmpsearch.apis.vector_search import VectorIndex
    out = []
    log(f'\n== crossover at {d}-d (single query, p50 ms; recall@10)')
    for n in sizes:
        path = os.path.join(workdir, f'cross_{n}x{d}.npy')
        mm, make_queries = make_gallery(path, n, d, args.per_id, args.noise,
                                        args.chunk, args.seed)
        queries = make_queries(50)

        def fetch(ids):
            return np.asarray(mm[ids], np.float32)

        res = {}
        truth = None
        for kind in ('flat', 'ivfpq'):
            if kind == 'ivfpq' and n < 39 * 16:
                continue
            vi = VectorIndex.build(lambda: chunks_of(mm, args.chunk), n, d,
                                   kind=kind, nprobe=args.nprobe,
                                   rerank=args.rerank,
                                   train_size=args.train_size)
            lat, found = [], []
            for q in queries:
                t = time.time()
                found.append(vi.search(q[None], 10, fetch)[1][0])
                lat.append(time.time() - t)
            if truth is None:
                truth = found
            res[kind] = (pct(lat, 50), recall(found, truth, 10))
        os.remove(path)
        row = dict(n=n, flat_p50_ms=res['flat'][0],
                   ivfpq_p50_ms=res.get('ivfpq', (float('nan'), ))[0],
                   ivfpq_recall10=res.get('ivfpq', (0, float('nan')))[1])
        out.append(row)
        log(f'{n:>10,}  flat {row["flat_p50_ms"]:8.3f}  ivfpq '
            f'{row["ivfpq_p50_ms"]:8.3f}  (recall@10 '
            f'{row["ivfpq_recall10"]:.3f})')
    pays = [r['n'] for r in out
            if r['ivfpq_p50_ms'] < r['flat_p50_ms']]
    cross = min(pays) if pays else None
    log(f'crossover: the approximate index is faster from '
        f'{cross:,} rows on' if cross else
        'crossover: the flat index was faster at every size measured')
    return dict(d=d, rows=out, crossover=cross)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.json:
        # after parsing: --help answers without the slow imports (torch)
        from mmpsearch.utils.overwrite import refuse_existing_file
        refuse_existing_file(args.json, '--json', args.force)
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
            report['crossover'] = crossover(args.crossover,
                                            args.crossover_dim, args,
                                            workdir, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
