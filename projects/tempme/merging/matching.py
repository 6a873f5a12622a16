"""Bipartite soft matching and size-weighted merging of tokens.

Pure tensor functions, independent of any model: a matching step looks at a metric
(keys or hidden states) and returns a :class:`TokenMerge` that can then be applied to
any per-token tensor with the same layout (features, sizes, source maps), so the
decision is made once and every tensor follows it.

Token layout conventions (they decide which tokens later splits see, so they are part
of the algorithm): a sequence is ``[CLS tokens, patch tokens]``; the bipartite split
alternates over the patch tokens only, starting at an even or odd position depending
on the parity of the number of CLS tokens; after a merge the sequence is
``[CLS tokens, unmerged source tokens in their original order, destination tokens]``.
"""
from typing import Optional, Tuple

import torch


def _split_slices(num_cls: int) -> Tuple[slice, slice]:
    """(source, destination) slices over the patch tokens for ``num_cls`` CLS tokens."""
    if num_cls % 2 == 0:
        return slice(0, None, 2), slice(1, None, 2)
    return slice(1, None, 2), slice(0, None, 2)


def max_merge(num_tokens: int, num_cls: int) -> int:
    """The most tokens one bipartite step can remove: half the patch tokens."""
    return (num_tokens - num_cls) // 2


class TokenMerge:
    """One matching decision, kept as index maps so every tensor can follow it.

    ``keep`` (N, T - r): for each output token, the input token that stays in its place
    (CLS, unmerged source or destination); ``moved`` / ``moved_to`` (N, r): the merged
    source tokens and the output token each joins. A size-weighted mean is then one
    indexed copy of the kept tokens and an indexed add of the ``r`` moved ones: memory
    traffic of about one copy, and a backward that keeps only the indices.
    """

    def __init__(self, num_tokens: int, keep: Optional[torch.Tensor] = None,
                 moved: Optional[torch.Tensor] = None,
                 moved_to: Optional[torch.Tensor] = None) -> None:
        self.keep, self.moved, self.moved_to = keep, moved, moved_to
        self.num_tokens = num_tokens
        self.num_out = num_tokens if keep is None else keep.shape[1]

    @property
    def is_identity(self) -> bool:
        return self.keep is None

    @property
    def slots(self) -> torch.Tensor:
        """(N, T): the output token of every input token."""
        n, num_out = self.keep.shape
        outputs = torch.arange(num_out, device=self.keep.device).expand(n, num_out)
        return self.keep.new_empty(n, self.num_tokens).scatter_(1, self.keep, outputs).scatter_(
            1, self.moved, self.moved_to)

    def __call__(self, x: torch.Tensor, mode: str = 'sum') -> torch.Tensor:
        """(N, T, C) -> (N, T - r, C), reducing merged tokens with ``mode`` (any
        ``scatter_reduce`` reduction: ``sum``, ``amax``, ``mean``, ...)."""
        if self.is_identity:
            return x
        n, t, c = x.shape
        index = self.slots[..., None].expand(n, t, c)
        return x.new_zeros(n, self.num_out, c).scatter_reduce(
            1, index, x, reduce=mode, include_self=False)

    def weighted_mean(self, x: torch.Tensor,
                      size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Size-weighted means of the merged tokens and their summed sizes."""
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        kept_size, moved_size = size[rows, self.keep], size[rows, self.moved]
        # The sums go through scatter_add (ONNX ScatterElements), not an accumulating
        # index_put (ScatterND): ONNX Runtime's multi-threaded ScatterND(add) loses updates
        # when several tokens join one destination (measured: up to 0.4 off, run to run).
        new_size = kept_size.scatter_add(1, self.moved_to[..., None], moved_size)
        # Advanced indexing rather than gather: its backward keeps only the indices, not
        # a copy of the whole input sequence. In place on the fresh copy: one full-size
        # tensor per merge.
        out = x[rows, self.keep].mul_((kept_size / new_size).to(x.dtype))
        joining = x[rows, self.moved].mul_(
            (moved_size / new_size[rows, self.moved_to]).to(x.dtype))
        index = self.moved_to[..., None].expand(-1, -1, x.shape[-1])
        return out.scatter_add_(1, index, joining), new_size


def bipartite_soft_matching(metric: torch.Tensor, r: int, num_cls: int) -> TokenMerge:
    """Match the ``r`` most similar source patches onto destination patches.

    Args:
        metric: (N, T, C) per-token descriptors; cosine similarity decides the matches.
        r: tokens to remove; 0 gives the identity.
        num_cls: leading tokens that are never merged.

    Returns:
        the :class:`TokenMerge` taking (N, T, C') to (N, T - r, C'), laid out as
        ``[CLS, unmerged sources in order, destinations]``.
    """
    n, t = metric.shape[:2]
    if r <= 0:
        return TokenMerge(t)
    src_sel, dst_sel = _split_slices(num_cls)
    with torch.no_grad():
        scores = _match_scores(metric, r, num_cls)
        num_src = scores.shape[1]
        best_score, best_dst = scores.max(dim=-1)
        order = best_score.argsort(dim=-1, descending=True)
        positions = torch.arange(t, device=metric.device)
        src_pos, dst_pos = positions[num_cls:][src_sel], positions[num_cls:][dst_sel]
        kept = src_pos[order[:, r:].sort(dim=1)[0]]
        keep = torch.cat([positions[:num_cls].expand(n, -1), kept, dst_pos.expand(n, -1)], 1)
        merged = order[:, :r]
        moved_to = num_cls + num_src - r + best_dst.gather(1, merged)
    return TokenMerge(t, keep, src_pos[merged], moved_to)


def _match_scores(metric: torch.Tensor, r: int, num_cls: int) -> torch.Tensor:
    """(N, sources, destinations) cosine similarities of the bipartite split."""
    src_sel, dst_sel = _split_slices(num_cls)
    patches = metric[:, num_cls:]
    src, dst = patches[:, src_sel], patches[:, dst_sel]
    if r > src.shape[1]:
        raise ValueError(f'cannot merge {r} tokens: only {src.shape[1]} source tokens')
    # cosine similarity, normalising the small score matrix instead of the tokens
    scores = src @ dst.transpose(-1, -2)
    return scores / (src.norm(dim=-1)[..., None] * dst.norm(dim=-1)[:, None, :])


@torch.no_grad()
def decision_margins(metric: torch.Tensor, r: int, num_cls: int) -> torch.Tensor:
    """How far each sequence's matching decision is from flipping, as a score gap.

    A merge changes when two scores it compares swap: the ``r``-th and ``(r+1)``-th best
    source scores (which sources merge), or a merged source's best and second-best
    destination (where it goes). Returns the smallest such gap per sequence, (N,);
    ``inf`` where nothing can flip. Two runtimes that compute the scores with different
    float rounding can only disagree on a sequence whose margin is within that noise.
    """
    n = metric.shape[0]
    inf = torch.full((n,), float('inf'), device=metric.device)
    if r <= 0:
        return inf
    scores = _match_scores(metric.to(torch.promote_types(metric.dtype, torch.float32)), r,
                           num_cls)
    ranked = scores.max(dim=-1).values.sort(dim=-1, descending=True)
    margin = inf
    if r < scores.shape[1]:
        margin = ranked.values[:, r - 1] - ranked.values[:, r]
    if scores.shape[2] > 1:
        top2 = scores.topk(2, dim=-1).values
        merged = ranked.indices[:, :r]
        dst_gap = (top2[..., 0] - top2[..., 1]).gather(1, merged)
        margin = torch.minimum(margin, dst_gap.min(dim=1).values)
    return margin


def merge_wavg(merge: TokenMerge, x: torch.Tensor,
               size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge features as size-weighted means; returns (features, summed sizes)."""
    if merge.is_identity:
        return x, size
    return merge.weighted_mean(x, size)


def merge_source(merge: TokenMerge, source: torch.Tensor) -> torch.Tensor:
    """Follow a (N, T, S) token-to-original-patch map through a merge."""
    return merge(source, mode='amax')


def group_clips(x: torch.Tensor, group: int, num_cls: int) -> torch.Tensor:
    """Concatenate ``group`` adjacent clips into one token sequence.

    (N * group, T, C) -> (N, group * T, C) laid out as [all CLS tokens clip by clip,
    then all patch tokens clip by clip], so CLS tokens stay side by side in front.
    """
    if group == 1:
        return x
    nt, t, c = x.shape
    x = x.reshape(nt // group, group, t, c)
    cls = x[:, :, :num_cls].reshape(nt // group, group * num_cls, c)
    patches = x[:, :, num_cls:].reshape(nt // group, group * (t - num_cls), c)
    return torch.cat([cls, patches], dim=1)


def clip_of_token(group: int, num_tokens: int, num_cls: int,
                  device: torch.device = None) -> torch.Tensor:
    """For the layout of :func:`group_clips`, the clip (0..group-1) each token came from."""
    clips = torch.arange(group, device=device)
    return torch.cat([clips.repeat_interleave(num_cls),
                      clips.repeat_interleave(num_tokens - num_cls)])
