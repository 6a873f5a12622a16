"""Approximate search for large indexes: an inverted file (IVF) over the stored rows.

Why IVF with 8-bit codes and exact re-ranking (faiss ``IndexIVFScalarQuantizer``):

- IVF builds in minutes on a CPU (k-means on a sample, then one pass assigning rows to
  their nearest centroid); HNSW graphs of millions of rows take far longer to build, and
  an index update adds rows by assigning them, with no graph to repair.
- The index keeps its float32 rows anyway (they are the index); the IVF adds one byte per
  dimension per row (8-bit codes), not a second float32 copy. Its scores only choose
  candidates: the best ``2 m`` are re-scored exactly against the float32 rows.
- ``nlist = 4 sqrt(N)`` lists (see :func:`default_nlist`), trained by two-level k-means
  past 256 lists, to keep the build in minutes on a 2-core CPU at 4M rows; ``nprobe``
  (lists scanned per query) is calibrated when the lists are trained: the smallest power
  of two giving recall@10 >= ``target`` on queries made from stored rows, measured
  against exact search.

What is saved (in the index folder, with the rows): the centroids (a ``.npy``) and each
row's list (a column of the rows table). The faiss object is rebuilt from them at load,
so no faiss file is ever parsed: a crafted index folder can only hand over arrays, which
are checked for dtype, shape and range like every other index file.
"""
import math
from typing import Optional, Tuple

import numpy as np

#: Bytes of the IVF per row on top of the float32 rows (codes + the id faiss keeps).
BYTES_PER_ROW_EXTRA = 8


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is in the deploy extra
        raise ImportError('approximate search needs faiss: pip install faiss-cpu') from err
    return faiss


def default_nlist(rows: int) -> int:
    """``4 sqrt(N)`` lists (faiss's usual lower bound), at least one and at most one per 39
    rows (faiss's minimum of training points per centroid). Fewer lists than the data has
    clusters make lists that mix several clusters, whose centroids point at none of them:
    with ``sqrt(N)`` lists, 1M rows around 4,000 centres reached recall@10 0.88 only by
    scanning 128 of 1,000 lists. The assignment (N x nlist dot products, in BLAS) takes
    about 4 minutes at 4M rows and 8,000 lists on a 2-core CPU."""
    return int(max(1, min(round(4 * math.sqrt(rows)), rows // 39)))


def _kmeans(points: np.ndarray, k: int, seed: int, iterations: int) -> np.ndarray:
    faiss = _faiss()
    kmeans = faiss.Kmeans(points.shape[1], k, niter=iterations, spherical=True, seed=seed,
                          verbose=False, max_points_per_centroid=256,
                          min_points_per_centroid=1)  # small fine clusters are expected
    kmeans.train(np.ascontiguousarray(points, dtype=np.float32))
    return kmeans.centroids


def train_centroids(embeddings: np.ndarray, nlist: Optional[int] = None, seed: int = 0,
                    points_per_list: int = 40, iterations: int = 10) -> np.ndarray:
    """Spherical k-means centroids (``nlist`` x D) of a sample of the rows.

    Past 256 lists, two levels: ``sqrt(nlist)`` coarse clusters, then each split into lists
    in proportion to its share of the sample. One level costs sample x nlist per
    iteration (hours for 4M rows on a small CPU), two cost sample x 2 sqrt(nlist).
    """
    rows = len(embeddings)
    nlist = nlist or default_nlist(rows)
    rng = np.random.default_rng(seed)
    take = min(rows, nlist * points_per_list)
    sample = np.asarray(embeddings[np.sort(rng.choice(rows, take, replace=False))]
                        if take < rows else embeddings, dtype=np.float32)
    if nlist <= 256:
        return np.ascontiguousarray(_kmeans(sample, nlist, seed, iterations))
    coarse = _kmeans(sample, int(round(math.sqrt(nlist))), seed, iterations)
    owner = assign_lists(coarse, sample)
    sizes = np.bincount(owner, minlength=len(coarse))
    # lists per coarse cluster: proportional to its points, at least one, nlist in all
    shares = np.maximum(1, np.floor(sizes / len(sample) * nlist).astype(int)) * (sizes > 0)
    for c in np.argsort(-(sizes / len(sample) * nlist - shares))[:max(0, nlist - shares.sum())]:
        shares[c] += 1
    parts = []
    for c in np.flatnonzero(shares):
        points = sample[owner == c]
        k = int(min(shares[c], len(points)))
        parts.append(points[:k] if k == len(points) else _kmeans(points, k, seed, iterations))
    centroids = np.concatenate(parts)
    return np.ascontiguousarray(centroids / np.linalg.norm(centroids, axis=1, keepdims=True),
                                dtype=np.float32)


def assign_lists(centroids: np.ndarray, embeddings: np.ndarray,
                 chunk: int = 16_384) -> np.ndarray:
    """The nearest centroid (by inner product) of each row, int32: one matrix product (BLAS)
    and an argmax per chunk of rows. faiss's ``IndexFlatIP.search`` gives the same lists
    but was measured 5x slower on a 2-core CPU (131k rows: 10.6 s vs 2.1 s against 2,000
    centroids, 37.9 s vs 7.0 s against 8,000), and an HNSW graph over the centroids slower
    still."""
    table = np.ascontiguousarray(centroids, dtype=np.float32).T
    out = np.empty(len(embeddings), np.int32)
    for lo in range(0, len(embeddings), chunk):
        part = np.asarray(embeddings[lo:lo + chunk], dtype=np.float32)
        out[lo:lo + len(part)] = (part @ table).argmax(axis=1)
    return out


class IvfIndex:
    """Candidates from the IVF, re-scored exactly against the stored rows.

    Args:
        centroids: (nlist, D) float32.
        lists: (N,) int32, each row's list.
        embeddings: (N, D) the stored unit rows (kept by reference, not copied).
        nprobe: lists scanned per query.
    """

    def __init__(self, centroids: np.ndarray, lists: np.ndarray, embeddings: np.ndarray,
                 nprobe: int) -> None:
        faiss = _faiss()
        nlist, dim = centroids.shape
        self.embeddings, self.nlist = embeddings, nlist
        self.nprobe = int(min(max(1, nprobe), nlist))
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        # the 8-bit ranges come from a fixed sample of the rows: the same on every load
        step = max(1, len(embeddings) // 65_536)
        index.train(np.ascontiguousarray(embeddings[::step], dtype=np.float32))
        for lo in range(0, len(embeddings), 262_144):
            part = np.ascontiguousarray(embeddings[lo:lo + 262_144], dtype=np.float32)
            ids = np.arange(lo, lo + len(part), dtype=np.int64)
            assigned = np.ascontiguousarray(lists[lo:lo + 262_144], dtype=np.int64)
            index.add_core(len(part), faiss.swig_ptr(part), faiss.swig_ptr(ids),
                           faiss.swig_ptr(assigned))
        self._quantizer, self._index = quantizer, index  # the index refers to the quantizer

    def search_batch(self, queries: np.ndarray, m: int,
                     nprobe: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(B, m) rows and exact scores of the ``m`` best candidates per query (fewer rows
        than ``m`` reachable: padded with -1 and -inf), best first, ties by row."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = int(min(m, len(self.embeddings)))
        params = _faiss().SearchParametersIVF(nprobe=int(nprobe or self.nprobe))
        _, candidates = self._index.search(queries, min(2 * m, len(self.embeddings)),
                                           params=params)
        rows = np.full((len(queries), m), -1, np.int64)
        scores = np.full((len(queries), m), -np.inf, np.float32)
        for b, found in enumerate(candidates):
            found = found[found >= 0]
            exact = self.embeddings[found] @ queries[b]
            order = np.lexsort((found, -exact))[:m]
            rows[b, :len(order)], scores[b, :len(order)] = found[order], exact[order]
        return rows, scores

    def search(self, query: np.ndarray, m: int,
               nprobe: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        rows, scores = self.search_batch(query.reshape(1, -1), m, nprobe)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]


def calibration_queries(embeddings: np.ndarray, count: int = 200, cosine: float = 0.5,
                        seed: int = 1) -> np.ndarray:
    """Queries near stored rows but not on them, as a text query is to its video: a random
    row mixed with a random direction to ``cosine`` similarity with it."""
    rng = np.random.default_rng(seed)
    rows = embeddings[rng.choice(len(embeddings), min(count, len(embeddings)), replace=False)]
    noise = rng.standard_normal(rows.shape).astype(np.float32)
    noise -= (noise * rows).sum(1, keepdims=True) * rows
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = cosine * rows + math.sqrt(1 - cosine ** 2) * noise
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top(embeddings: np.ndarray, queries: np.ndarray, k: int,
              chunk: int = 262_144) -> np.ndarray:
    """(B, k) rows of exact top-k by inner product, in chunks of rows (bounded memory)."""
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for lo in range(0, len(embeddings), chunk):
        scores = queries @ np.asarray(embeddings[lo:lo + chunk]).T
        rows = np.broadcast_to(np.arange(lo, lo + scores.shape[1]), scores.shape)
        scores = np.concatenate([best_scores, scores], 1)
        rows = np.concatenate([best_rows, rows], 1)
        keep = np.argsort(-scores, axis=1, kind='stable')[:, :k]
        best_scores = np.take_along_axis(scores, keep, 1)
        best_rows = np.take_along_axis(rows, keep, 1)
    return best_rows


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k rows among its found rows."""
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t)
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0


def calibrate_nprobe(index: IvfIndex, embeddings: np.ndarray, target: float = 0.995,
                     k: int = 10) -> Tuple[int, float]:
    """The smallest power-of-two ``nprobe`` whose recall@k reaches ``target`` on
    :func:`calibration_queries` (all lists if none does); returns it and its recall."""
    queries = calibration_queries(embeddings)
    truth = exact_top(embeddings, queries, k)
    nprobe = 1
    while True:
        recall = recall_at(index.search_batch(queries, k, nprobe)[0], truth)
        if recall >= target or nprobe >= index.nlist:
            return min(nprobe, index.nlist), recall
        nprobe *= 2
