"""Moments of long videos: cutting a video into windows, and one hit per moment.

An index row is a window of one video, ``[start, end)`` in seconds. Windows are laid on
the model's frame grid (one position every ``round(fps / frame_rate)`` frames, as the
reference loader's), ``window`` positions long, a new one every ``stride`` positions, and
the last one aligned to the end of the video, so every second is covered; a video no
longer than one window is one row, the whole file.

A query ranks rows; overlapping windows of one video describe one moment, so ranking
keeps the best of them and drops the others (non-maximum suppression on time), with at
most ``per_video`` moments per video. Pure numpy, no model.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class Moment(NamedTuple):
    """A hit: a video, the seconds it covers (``None``: not recorded) and its cosine."""

    path: str
    start: Optional[float]
    end: Optional[float]
    score: float

    def to_dict(self) -> Dict[str, object]:
        return dict(path=self.path, start=self.start, end=self.end, score=self.score)


@dataclass(frozen=True)
class WindowSettings:
    """How videos are cut: ``seconds`` per window, a new window every ``stride`` seconds,
    on a grid of ``frame_rate`` positions per second (the model's sampler's)."""

    seconds: float
    stride: float
    frame_rate: float = 1.0

    def __post_init__(self) -> None:
        for name in ('seconds', 'stride', 'frame_rate'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'window {name} must be a positive number, got {value!r}')
        if self.positions(self.seconds) < 1 or self.positions(self.stride) < 1:
            raise ValueError(f'a window ({self.seconds} s) and its stride ({self.stride} s) '
                             f'must each hold at least one grid position ({1 / self.frame_rate:g}'
                             f' s at {self.frame_rate:g} per second)')
        if self.stride > self.seconds:
            raise ValueError(f'the stride ({self.stride} s) is longer than the window '
                             f'({self.seconds} s): parts of the videos would never be searched')

    def positions(self, seconds: float) -> int:
        return int(round(seconds * self.frame_rate))

    def to_dict(self) -> Dict[str, float]:
        return dict(seconds=float(self.seconds), stride=float(self.stride),
                    frame_rate=float(self.frame_rate))


class Window(NamedTuple):
    """Frames ``[first, stop)`` of a video and the seconds ``[start, end)`` they span."""

    first: int
    stop: int
    start: float
    end: float


def grid_step(fps: float, frame_rate: float) -> int:
    """Frames between two grid positions (the reference's rule; 1 for an unknown rate)."""
    fps = float(fps) if fps and math.isfinite(fps) else 0.0
    return max(1, int(round(fps / frame_rate)))


def plan_windows(num_frames: int, fps: float, settings: WindowSettings) -> List[Window]:
    """The windows of a video of ``num_frames`` frames at ``fps``.

    Windows start on grid positions ``0, stride, 2 stride, ...`` while they fit; if the
    last one stops short of the end, one more ends at the last position. A video of at
    most one window's positions is one window over all its frames (sampled as before
    windows existed). Times are frame index / fps (grid positions per ``frame_rate`` when
    the video declares no usable rate).
    """
    if num_frames < 1:
        raise ValueError(f'the video has no frames (num_frames={num_frames})')
    step = grid_step(fps, settings.frame_rate)
    rate = float(fps) if fps and math.isfinite(fps) and fps > 0 else step * settings.frame_rate
    positions = -(-num_frames // step)  # len(range(0, num_frames, step))
    size, stride = settings.positions(settings.seconds), settings.positions(settings.stride)
    if positions <= size:
        return [Window(0, num_frames, 0.0, num_frames / rate)]
    starts = list(range(0, positions - size + 1, stride))
    if starts[-1] + size < positions:
        starts.append(positions - size)
    windows = []
    for s in starts:
        first, stop = s * step, min((s + size) * step, num_frames)
        windows.append(Window(first, stop, first / rate, stop / rate))
    return windows


def overlaps(a: Tuple[float, float], b: Tuple[float, float]) -> bool:
    """Whether two spans share time; an unknown end (NaN) means up to the end of the file."""
    a_end = a[1] if math.isfinite(a[1]) else math.inf
    b_end = b[1] if math.isfinite(b[1]) else math.inf
    return min(a_end, b_end) > max(a[0], b[0])


def suppress_overlaps(rows: Sequence[int], row_files: np.ndarray, spans: np.ndarray, k: int,
                      per_video: int = 1) -> List[int]:
    """Non-maximum suppression on time: of ``rows`` (best first), the first ``k`` that
    neither overlap a kept row of the same video nor exceed ``per_video`` rows of it.

    Greedy in rank order, so the first ``k`` picks over a prefix of the ranking are the
    picks over the whole ranking: callers may rank a few candidates and ask for more only
    when fewer than ``k`` come out.
    """
    if per_video < 1:
        raise ValueError(f'per_video must be >= 1, got {per_video}')
    kept: Dict[int, List[int]] = {}
    picks: List[int] = []
    for row in rows:
        if len(picks) >= k:
            break
        row = int(row)
        same = kept.setdefault(int(row_files[row]), [])
        if len(same) >= per_video or any(overlaps(spans[row], spans[j]) for j in same):
            continue
        same.append(row)
        picks.append(row)
    return picks


def rank_moments(top: Callable[[int], Tuple[np.ndarray, np.ndarray]], num_rows: int,
                 row_files: np.ndarray, spans: np.ndarray, k: int,
                 per_video: int = 1) -> Tuple[List[int], Dict[int, float]]:
    """The rows of the ``k`` best moments, growing the candidates until ``k`` come out.

    ``top(m)`` gives the ``m`` best (rows, scores), best first. Starts at ``4 k``
    candidates and quadruples while suppression leaves fewer than ``k`` moments and rows
    remain; returns the picked rows and their scores.
    """
    wanted = min(max(4 * k, 16), num_rows)
    while True:
        rows, scores = top(wanted)
        picks = suppress_overlaps(rows, row_files, spans, k, per_video)
        if len(picks) >= k or wanted >= num_rows or len(rows) < wanted:
            by_row = {int(r): float(s) for r, s in zip(rows, scores)}
            return picks, {r: by_row[r] for r in picks}
        wanted = min(wanted * 4, num_rows)
