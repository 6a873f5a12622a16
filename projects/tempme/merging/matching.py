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
    """One matching decision: the output position of every input token.

    ``slots`` (N, T) holds, for each input token, the index of the output token it
    becomes part of (``None`` for the identity). Keeping the decision as an index map,
    rather than as a sequence of gathers and scatters, lets every tensor follow it in
    one operation: a weighted mean is one batched matrix product with a (T - r, T)
    weight matrix per sequence, which is a small fraction of a block's cost and has a
    single, cheap backward.
    """

    def __init__(self, slots: Optional[torch.Tensor], num_out: int) -> None:
        self.slots = slots
        self.num_out = num_out

    @property
    def is_identity(self) -> bool:
        return self.slots is None

    def __call__(self, x: torch.Tensor, mode: str = 'sum') -> torch.Tensor:
        """(N, T, C) -> (N, T - r, C), reducing merged tokens with ``mode`` (any
        ``scatter_reduce`` reduction: ``sum``, ``amax``, ``mean``, ...)."""
        if self.slots is None:
            return x
        n, t, c = x.shape
        index = self.slots[..., None].expand(n, t, c)
        return x.new_zeros(n, self.num_out, c).scatter_reduce(
            1, index, x, reduce=mode, include_self=False)

    def weights(self, size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N, T - r, T) matrix adding up each output token's inputs, weighted by size."""
        n, t = self.slots.shape
        return size.new_zeros(n, self.num_out, t, dtype=dtype).scatter_(
            1, self.slots[:, None, :], size.transpose(1, 2).to(dtype))


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
    if r <= 0:
        return TokenMerge(None, metric.shape[1])
    src_sel, dst_sel = _split_slices(num_cls)
    n, t = metric.shape[:2]
    with torch.no_grad():
        patches = metric[:, num_cls:]
        src, dst = patches[:, src_sel], patches[:, dst_sel]
        num_src, num_dst = src.shape[1], dst.shape[1]
        if r > num_src:
            raise ValueError(f'cannot merge {r} tokens: only {num_src} source tokens')
        # cosine similarity, normalising the small score matrix instead of the tokens
        scores = src @ dst.transpose(-1, -2)
        scores = scores / (src.norm(dim=-1)[..., None] * dst.norm(dim=-1)[:, None, :])
        best_score, best_dst = scores.max(dim=-1)
        order = best_score.argsort(dim=-1, descending=True)
        merged = torch.zeros_like(best_score, dtype=torch.bool).scatter_(
            1, order[:, :r], True)
        dst_start = num_cls + num_src - r
        src_slots = torch.where(merged, dst_start + best_dst, num_cls - 1 + (~merged).cumsum(1))
        slots = torch.empty(n, t, dtype=torch.long, device=metric.device)
        slots[:, :num_cls] = torch.arange(num_cls, device=metric.device)
        slots[:, num_cls:][:, src_sel] = src_slots
        slots[:, num_cls:][:, dst_sel] = torch.arange(
            dst_start, dst_start + num_dst, device=metric.device)
    return TokenMerge(slots, t - r)


def merge_wavg(merge: TokenMerge, x: torch.Tensor,
               size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge features as size-weighted means; returns (features, summed sizes)."""
    if merge.is_identity:
        return x, size
    weights = merge.weights(size, x.dtype)
    new_size = weights.sum(dim=-1, keepdim=True)
    return (weights / new_size) @ x, new_size.to(size.dtype)


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
