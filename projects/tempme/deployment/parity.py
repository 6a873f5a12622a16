"""Does an exported encoder compute what PyTorch computes? Per-video comparison.

Token merging makes discrete choices (which tokens merge, where they go) from scores
that two runtimes round differently. A video whose choice sits within rounding noise of
flipping may legitimately merge differently, and its embedding then moves by more than
rounding. :func:`merge_margins` measures, in PyTorch, how close each video's choices
are to flipping; :func:`compare_embeddings` accepts a larger difference only for such a
video, names the layer and the gap, and still requires the embeddings to point the
same way.
"""
import contextlib
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..merging.matching import decision_margins
from ..models import tempme_vit

#: Largest per-value difference accepted without explanation.
ATOL = 1e-4
#: A merge decision this close to flipping is within float noise of two runtimes: their
#: matching scores differ by about 1e-6 (unflipped embeddings agree to a few 1e-6).
FLIP_GAP = 1e-4
#: Embedding cosine required of a video whose merge flipped.
MIN_COSINE = 0.9999


@dataclass
class VideoParity:
    """One video's comparison; ``flip`` names the closest merge decision if it was used."""

    index: int
    max_abs_diff: float
    cosine: float
    margin: float
    margin_layer: str
    ok: bool
    flip: Optional[str] = None

    def to_dict(self) -> Dict:
        return asdict(self)


def _merge_steps(encoder: torch.nn.Module) -> List[str]:
    """Names of the encoder's matching calls, in the order a forward makes them."""
    steps = []
    for plan in encoder.schedule.layers:
        if plan.group > 1 and plan.cross_r > 0:
            steps.append(f'layer {plan.index} cross-clip (ClipMe, r={plan.cross_r})')
        if plan.intra_r > 0:
            kind = 'intra-clip (ClipMe)' if plan.cls_in > 1 or plan.group > 1 else 'ImgMe'
            steps.append(f'layer {plan.index} {kind}, r={plan.intra_r}')
    return steps


@contextlib.contextmanager
def recording_matches() -> Iterator[List[Tuple[torch.Tensor, int, int]]]:
    """Record the arguments of every bipartite matching the encoder makes meanwhile."""
    calls = []
    original = tempme_vit.bipartite_soft_matching

    def recording(metric, r, num_cls):
        calls.append((metric.detach(), r, num_cls))
        return original(metric, r, num_cls)

    tempme_vit.bipartite_soft_matching = recording
    try:
        yield calls
    finally:
        tempme_vit.bipartite_soft_matching = original


def margins_of(calls: List[Tuple[torch.Tensor, int, int]], encoder: torch.nn.Module,
               batch: int) -> Tuple[np.ndarray, List[str]]:
    """Per video of a recorded forward of ``batch`` videos, the smallest decision margin
    over all merges and the merge it belongs to; ``inf`` and ``''`` without merging."""
    steps = _merge_steps(encoder)
    if len(steps) != len(calls):
        raise RuntimeError(f'expected {len(steps)} merges from the schedule, saw {len(calls)}')
    margin = np.full(batch, np.inf)
    where = [''] * batch
    for name, (metric, r, num_cls) in zip(steps, calls):
        per_video = decision_margins(metric, r, num_cls).view(batch, -1).min(dim=1).values
        for i, value in enumerate(per_video.cpu().numpy().astype(float)):
            if value < margin[i]:
                margin[i], where[i] = value, name
    return margin, where


@torch.no_grad()
def merge_margins(encoder: torch.nn.Module,
                  video: torch.Tensor) -> Tuple[np.ndarray, List[str]]:
    """:func:`margins_of` a forward of ``encoder`` on ``video`` (B, T, 3, H, W, normalised)."""
    with recording_matches() as calls:
        encoder(video)
    return margins_of(calls, encoder, video.shape[0])


def row_cosines(reference: np.ndarray, exported: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``exported`` to the same row of ``reference`` (0 for a zero
    row), in float64."""
    reference, exported = np.asarray(reference, np.float64), np.asarray(exported, np.float64)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(exported, axis=-1)
    dots = (reference * exported).sum(-1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def compare_embeddings(reference: np.ndarray, exported: np.ndarray,
                       margins: Optional[np.ndarray] = None,
                       layers: Optional[List[str]] = None, atol: float = ATOL,
                       flip_gap: float = FLIP_GAP,
                       min_cosine: float = MIN_COSINE) -> List[VideoParity]:
    """Compare (B, D) embeddings row by row under the rule of this module."""
    reference, exported = np.asarray(reference, np.float64), np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        raise ValueError(f'embeddings of shape {exported.shape}, expected {reference.shape}')
    b = reference.shape[0]
    margins = np.full(b, np.inf) if margins is None else margins
    layers = [''] * b if layers is None else layers
    cosines = row_cosines(reference, exported)
    results = []
    for i in range(b):
        diff = float(np.abs(reference[i] - exported[i]).max())
        cosine = float(cosines[i])
        ok, flip = diff <= atol, None
        if not ok and margins[i] < flip_gap:
            flip = f'{layers[i]}: decision margin {margins[i]:.2e}'
            ok = cosine >= min_cosine
        results.append(VideoParity(i, diff, cosine, float(margins[i]), layers[i], ok, flip))
    return results
