"""How search scales: exact search against the IVF an index gets past its size threshold.

For each size, generates unit vectors with clustered structure (``--clusters`` centres,
each row its centre plus noise, cosine about 0.7 to it; in chunks, so 4M x 512 takes its
8 GB once) and text-like queries (a random centre at cosine about 0.4, so that no stored
row is near-identical to a query). Measures, with one query at a time:

- exact search: :func:`~projects.tempme_deploy.search.top_k` (one matrix-vector product
  and a partial sort), p50 / p99 over ``--exact-queries`` queries;
- the IVF of :mod:`projects.tempme_deploy.search.ann` at its default settings
  (``nlist = 4 sqrt(N)``, ``nprobe`` calibrated for recall@10 >= 0.995 on queries made
  from stored rows): build time (k-means, assignment, 8-bit codes, calibration), the memory
  it adds to the float32 rows (its codes, ids and centroids, and the process's resident
  growth while building it), query latency p50 / p99 over ``--queries`` queries, and
  recall@10 against exact search on the same queries.

Example::

    python tools/analysis/search_speed.py --sizes 100000 1000000 4000000 \
        --out work_dirs/search_speed.json
"""
import argparse
import gc
import json
import os
import platform
import time
from typing import Dict, List, Sequence

import numpy as np

from projects.tempme_deploy.search import ann, top_k


def clustered_rows(n: int, dim: int, clusters: int, seed: int = 0,
                   chunk: int = 262_144) -> np.ndarray:
    """(n, dim) float32 unit rows around ``clusters`` random unit centres, made in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        part = np.random.default_rng([seed, lo]).standard_normal(
            (min(chunk, n - lo), dim), dtype=np.float32)
        part *= 1.0 / np.sqrt(dim)
        part += centres[rng.integers(0, clusters, len(part))]
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        rows[lo:lo + len(part)] = part
    return rows, centres


def text_like_queries(centres: np.ndarray, count: int, cosine: float = 0.4,
                      seed: int = 7) -> np.ndarray:
    """Queries at ``cosine`` to a random centre (a caption is near a topic, on no video)."""
    rng = np.random.default_rng(seed)
    picked = centres[rng.integers(0, len(centres), count)]
    noise = rng.standard_normal(picked.shape).astype(np.float32)
    noise -= (noise * picked).sum(1, keepdims=True) * picked
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = cosine * picked + np.sqrt(1 - cosine ** 2) * noise
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def _resident_bytes() -> int:
    with open('/proc/self/status') as f:
        line = next(line for line in f if line.startswith('VmRSS:'))
    return int(line.split()[1]) * 1024


def _latencies(fn, queries: np.ndarray) -> np.ndarray:
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def measure_size(n: int, dim: int = 512, k: int = 10, queries: int = 200,
                 exact_queries: int = 20, clusters: int = 0, seed: int = 0) -> Dict:
    clusters = clusters or max(64, n // 1000)
    start = time.perf_counter()
    rows, centres = clustered_rows(n, dim, clusters, seed)
    generate_s = time.perf_counter() - start
    asked = text_like_queries(centres, queries)
    top_k(rows, asked[0], k)  # warm-up
    exact_ms = _latencies(lambda q: top_k(rows, q, k), asked[:exact_queries])
    truth = ann.exact_top(rows, asked, k)

    before = _resident_bytes()
    start = time.perf_counter()
    centroids = ann.train_centroids(rows, seed=seed)
    trained_s = time.perf_counter() - start
    lists = ann.assign_lists(centroids, rows)
    assigned_s = time.perf_counter() - start
    ivf = ann.IvfIndex(centroids, lists, rows, nprobe=1)
    nprobe, calibration_recall = ann.calibrate_nprobe(ivf, rows)
    ivf.nprobe = nprobe
    build_s = time.perf_counter() - start
    grown = _resident_bytes() - before
    ivf.search(asked[0], k)  # warm-up
    ivf_ms = _latencies(lambda q: ivf.search(q, k), asked)
    found = np.stack([ivf.search(q, k)[0] for q in asked])
    recall = ann.recall_at(found, truth)
    ivf_bytes = n * (dim + ann.BYTES_PER_ROW_EXTRA) + centroids.nbytes
    result = dict(
        rows=n, dim=dim, clusters=clusters, generate_s=round(generate_s, 1),
        rows_gib=rows.nbytes / 2**30, exact_p50_ms=float(np.percentile(exact_ms, 50)),
        exact_p99_ms=float(np.percentile(exact_ms, 99)), nlist=len(centroids), nprobe=nprobe,
        kmeans_s=round(trained_s, 1), assign_s=round(assigned_s - trained_s, 1),
        build_s=round(build_s, 1), ivf_gib=ivf_bytes / 2**30, rss_growth_gib=grown / 2**30,
        ivf_p50_ms=float(np.percentile(ivf_ms, 50)), ivf_p99_ms=float(np.percentile(ivf_ms, 99)),
        recall_at_10=recall, calibration_recall=calibration_recall)
    result['speedup_p50'] = result['exact_p50_ms'] / result['ivf_p50_ms']
    rows = ivf = found = None  # freed before the next size
    gc.collect()
    return result


def table(results: Sequence[Dict]) -> str:
    lines = ['| rows (dim 512) | float32 rows | IVF adds | build (k-means + assign + codes) '
             '| nlist / nprobe | exact p50 / p99 | IVF p50 / p99 | speed-up (p50) | recall@10 |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in results:
        lines.append(
            f'| {r["rows"]:,} | {r["rows_gib"]:.2f} GiB | {r["ivf_gib"]:.2f} GiB '
            f'| {r["build_s"]:.0f} s ({r["kmeans_s"]:.0f} + {r["assign_s"]:.0f} + '
            f'{r["build_s"] - r["kmeans_s"] - r["assign_s"]:.0f}) | {r["nlist"]} / {r["nprobe"]} '
            f'| {r["exact_p50_ms"]:.1f} / {r["exact_p99_ms"]:.1f} ms '
            f'| {r["ivf_p50_ms"]:.2f} / {r["ivf_p99_ms"]:.2f} ms | {r["speedup_p50"]:.0f}x '
            f'| {r["recall_at_10"]:.3f} |')
    return '\n'.join(lines)


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--top-k', type=int, default=10)
    parser.add_argument('--queries', type=int, default=200, help='queries for the IVF')
    parser.add_argument('--exact-queries', type=int, default=20,
                        help='queries timed for exact search (all are used for recall)')
    parser.add_argument('--clusters', type=int, default=0,
                        help='cluster centres (default: one per 1000 rows, at least 64)')
    parser.add_argument('--out', help='also write the results as JSON')
    args = parser.parse_args(argv)
    machine = f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    try:
        with open('/proc/cpuinfo') as f:
            model = next(line for line in f if line.startswith('model name'))
        machine = f'{model.split(":", 1)[1].strip()}, {os.cpu_count()} cores'
    except (OSError, StopIteration):
        pass
    results = []
    for n in args.sizes:
        results.append(measure_size(n, args.dim, args.top_k, args.queries, args.exact_queries,
                                    args.clusters))
        print(json.dumps(results[-1]), flush=True)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(dict(machine=machine, results=results), f, indent=1)
    print(f'\n{machine}; one query at a time, k={args.top_k}\n')
    print(table(results))
    return results


if __name__ == '__main__':
    main()
