"""Splitting the windows to encode among processes, by duration rather than by file count.

One long video is many windows; a folder of clips is one window each. Counting files
would give one rank the long video and leave the others idle, so the ordered list of
windows (the files' windows one after the other) is cut into contiguous pieces of about
equal total duration. A file may then be shared by two ranks, each of which decodes only
its own part of it, once.
"""
from typing import List, Sequence, Tuple

import numpy as np


def shard_by_duration(durations: Sequence[float], parts: int) -> List[Tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of ``durations`` (one per window, in order), one per
    part, each holding about ``total / parts`` seconds: piece ``r`` takes the windows whose
    midpoint in the cumulative duration falls in ``[r, r + 1) * total / parts``."""
    if parts < 1:
        raise ValueError(f'parts must be >= 1, got {parts}')
    weights = np.asarray(durations, dtype=np.float64)
    if weights.ndim != 1 or (weights.size and not (np.isfinite(weights).all()
                                                   and (weights >= 0).all())):
        raise ValueError('durations must be finite, non-negative seconds')
    if not weights.size:
        return [(0, 0)] * parts
    # a window of no duration still costs a forward pass: give it a small weight
    weights = np.maximum(weights, 1e-3 * max(float(weights.max()), 1e-9))
    ends = np.cumsum(weights)
    middles = ends - weights / 2
    owner = np.minimum((middles / ends[-1] * parts).astype(np.int64), parts - 1)
    bounds = np.searchsorted(owner, np.arange(parts + 1), side='left')
    return [(int(bounds[r]), int(bounds[r + 1])) for r in range(parts)]
