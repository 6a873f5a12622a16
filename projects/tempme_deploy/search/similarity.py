"""Exact nearest-neighbour search over stored embeddings: one matrix product."""
from typing import Tuple

import numpy as np


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (zero rows stay zero) as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def top_k(embeddings: np.ndarray, query: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of ``embeddings`` most similar to ``query`` by cosine, best first.

    ``embeddings`` (N, D) are expected L2-normalised (the index stores them so); the
    query is normalised here. Equal scores keep row order, so results are
    deterministic. Cost: one (N, D) x (D,) product plus a partial sort.

    Returns:
        (rows, scores): int64 (k',) and float32 (k',), ``k' = min(k, N)``.
    """
    if embeddings.ndim != 2:
        raise ValueError(f'embeddings must be (N, D), got shape {embeddings.shape}')
    query = normalize_rows(np.asarray(query).reshape(1, -1))[0]
    if embeddings.shape[0] and query.shape[0] != embeddings.shape[1]:
        raise ValueError(f'query has {query.shape[0]} dimensions, the index '
                         f'{embeddings.shape[1]}')
    if not embeddings.shape[0]:
        return select_top_k(np.zeros(0, np.float32), k)
    return select_top_k(embeddings @ query, k)


def select_top_k(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of a (N,) score vector, best first, ties in row order."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if k < scores.shape[0]:
        # the k-th best score, then every row at least that good (ties included)
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        candidates = np.flatnonzero(scores >= threshold)
    else:
        candidates = np.arange(scores.shape[0])
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    rows = candidates[order]
    return rows.astype(np.int64), scores[rows].astype(np.float32)
