"""How long exact search takes as an index grows: one text query against N embeddings.

Times :func:`projects.tempme_deploy.search.top_k` (a matrix-vector product plus a partial
sort) on random L2-normalised float32 embeddings, and loading the embeddings file from
disk (warm page cache). The model that encodes the query is not included.

Example::

    python tools/analysis/search_speed.py --sizes 10000 100000 1000000 --dim 512
"""
import argparse
import os
import statistics
import tempfile
import time
from typing import Dict, List, Sequence

import numpy as np

from projects.tempme_deploy.search import normalize_rows, top_k


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(sizes: Sequence[int], dim: int = 512, k: int = 10, repeats: int = 5,
            seed: int = 0) -> List[Dict[str, float]]:
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(dim).astype(np.float32)
    rows = []
    for n in sizes:
        emb = normalize_rows(rng.standard_normal((n, dim), dtype=np.float32))
        top_k(emb, query, k)  # warm-up
        search = _median_seconds(lambda: top_k(emb, query, k), repeats)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'embeddings.npy')
            np.save(path, emb, allow_pickle=False)
            load = _median_seconds(lambda: np.load(path, allow_pickle=False), 3)
        rows.append(dict(n=n, dim=dim, mib=emb.nbytes / 2**20, search_ms=search * 1e3,
                         load_ms=load * 1e3))
    return rows


def main(argv=None) -> List[Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--top-k', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    rows = measure(args.sizes, args.dim, args.top_k, args.repeats)
    print(f'| stored videos | embeddings (float32, dim {args.dim}) | one query, top-{args.top_k} '
          '| load from disk |')
    print('|---:|---:|---:|---:|')
    for r in rows:
        print(f'| {r["n"]:,} | {r["mib"]:,.0f} MiB | {r["search_ms"]:.2f} ms '
              f'| {r["load_ms"]:.0f} ms |')
    return rows


if __name__ == '__main__':
    main()
