"""Bipartite soft matching and size-weighted merging of tokens.

Pure tensor functions, independent of any model: a matching step looks at a metric
(keys or hidden states) and returns a ``merge`` function that can then be applied to
any per-token tensor with the same layout (features, sizes, source maps), so the
decision is made once and every tensor follows it.

Token layout conventions (they decide which tokens later splits see, so they are part
of the algorithm): a sequence is ``[CLS tokens, patch tokens]``; the bipartite split
alternates over the patch tokens only, starting at an even or odd position depending
on the parity of the number of CLS tokens; after a merge the sequence is
``[CLS tokens, unmerged source tokens in their original order, destination tokens]``.
"""
from typing import Callable, Tuple

import torch

MergeFn = Callable[..., torch.Tensor]


def _identity(x: torch.Tensor, mode: str = 'sum') -> torch.Tensor:
    return x


def _split_slices(num_cls: int) -> Tuple[slice, slice]:
    """(source, destination) slices over the patch tokens for ``num_cls`` CLS tokens."""
    if num_cls % 2 == 0:
        return slice(0, None, 2), slice(1, None, 2)
    return slice(1, None, 2), slice(0, None, 2)


def max_merge(num_tokens: int, num_cls: int) -> int:
    """The most tokens one bipartite step can remove: half the patch tokens."""
    return (num_tokens - num_cls) // 2


def bipartite_soft_matching(metric: torch.Tensor, r: int, num_cls: int) -> MergeFn:
    """Match the ``r`` most similar source patches onto destination patches.

    Args:
        metric: (N, T, C) per-token descriptors; cosine similarity decides the matches.
        r: tokens to remove; 0 gives the identity.
        num_cls: leading tokens that are never merged.

    Returns:
        ``merge(x, mode='sum')`` mapping (N, T, C') to (N, T - r, C'), reducing merged
        tokens with ``mode`` (any ``scatter_reduce`` reduction).
    """
    if r <= 0:
        return _identity
    src_sel, dst_sel = _split_slices(num_cls)
    with torch.no_grad():
        patches = metric[:, num_cls:]
        patches = patches / patches.norm(dim=-1, keepdim=True)
        scores = patches[:, src_sel] @ patches[:, dst_sel].transpose(-1, -2)
        if r > scores.shape[1]:
            raise ValueError(f'cannot merge {r} tokens: only {scores.shape[1]} source tokens')
        best_score, best_dst = scores.max(dim=-1)
        order = best_score.argsort(dim=-1, descending=True)[..., None]
        kept_idx = order[:, r:].sort(dim=1)[0]
        merged_idx = order[:, :r]
        dst_idx = best_dst[..., None].gather(dim=1, index=merged_idx)

    def merge(x: torch.Tensor, mode: str = 'sum') -> torch.Tensor:
        patches = x[:, num_cls:]
        src, dst = patches[:, src_sel], patches[:, dst_sel]
        n, num_src, c = src.shape
        kept = src.gather(dim=1, index=kept_idx.expand(n, num_src - r, c))
        moved = src.gather(dim=1, index=merged_idx.expand(n, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(n, r, c), moved, reduce=mode)
        return torch.cat([x[:, :num_cls], kept, dst], dim=1)

    return merge


def merge_wavg(merge: MergeFn, x: torch.Tensor,
               size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge features as size-weighted means; returns (features, summed sizes)."""
    x = merge(x * size, mode='sum')
    size = merge(size, mode='sum')
    return x / size, size


def merge_source(merge: MergeFn, source: torch.Tensor) -> torch.Tensor:
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
