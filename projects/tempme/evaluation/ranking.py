"""Ranking metrics for text-video retrieval, on a caption x video similarity matrix.

Pure tensor functions (no mmengine), so they can be tested and reused alone.

Conventions
-----------
* ``sim[c, v]`` is the score of caption ``c`` against video ``v``; higher is better.
* Ranks are 1-based. Ties are broken *against* the model: every competitor whose
  score is greater than or equal to the ground truth's is ranked above it. A model
  that outputs a constant matrix therefore gets the worst possible rank, never a
  perfect recall.
* The matrix is processed in blocks of rows, so only a bounded boolean mask exists
  beside ``sim`` at any time (60k x 10k fits in the memory of the matrix itself).

Conventions that matter only when a video has several captions (MSVD's test split, not
MSR-VTT 1k-A, whose videos have one caption each), chosen by name:

* ``v2t_convention``: ``'clip4clip'`` (default; the published TempMe and CLIP4Clip code)
  ranks a video's best caption against the *best caption of each other video*, so the
  rank is among videos; ``'all_captions'`` ranks it against *every caption* of the other
  videos, so the rank is among captions. Both agree with one caption per video.
* ``mdr_convention``: ``'published'`` (default) is the median the published code
  reports: ``torch.median``, the lower of the two middle ranks, for text-to-video when
  some video has several captions, and ``numpy.median``, the mean of the two middle
  ranks, otherwise (one caption per video, and video-to-text always).
  ``'mean_of_middle'`` and ``'lower_middle'`` force one rule for both directions.
"""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['retrieval_metrics', 'recall_from_ranks', 'dual_softmax', 'V2T_CONVENTIONS',
           'MDR_CONVENTIONS']

RECALL_AT = (1, 5, 10)
V2T_CONVENTIONS = ('clip4clip', 'all_captions')
MDR_CONVENTIONS = ('published', 'mean_of_middle', 'lower_middle')
_MEDIANS = ('mean_of_middle', 'lower_middle')

# Upper bound on the number of elements of the temporary masks built per block.
_BLOCK_ELEMENTS = 1 << 22


def recall_from_ranks(ranks: Tensor, prefix: str,
                      median: str = 'mean_of_middle') -> Dict[str, float]:
    """Turn 1-based ranks into ``{prefix}_R1/_R5/_R10`` (percent), ``_MdR`` and ``_MnR``.

    The median of an even number of ranks is the mean of the two middle ones
    (``median='mean_of_middle'``, ``numpy.median``) or the lower one
    (``'lower_middle'``, ``torch.median``); both agree on an odd number.
    """
    if median not in _MEDIANS:
        raise ValueError(f'median must be one of {_MEDIANS}, got {median!r}')
    if ranks.numel() == 0:
        raise ValueError(f'{prefix}: no ranks to summarise')
    ranks = ranks.reshape(-1).to(torch.float64)
    out = {f'{prefix}_R{k}': float((ranks <= k).to(torch.float64).mean() * 100.0)
           for k in RECALL_AT}
    ordered = ranks.sort().values
    n = ordered.numel()
    if median == 'lower_middle':
        median_value = ordered[(n - 1) // 2]
    else:
        median_value = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0
    out[f'{prefix}_MdR'] = float(median_value)
    out[f'{prefix}_MnR'] = float(ranks.mean())
    return out


def _rows_per_block(num_cols: int, block_rows: Optional[int]) -> int:
    if block_rows is not None:
        if block_rows < 1:
            raise ValueError(f'block_rows must be >= 1, got {block_rows}')
        return block_rows
    return max(1, _BLOCK_ELEMENTS // max(num_cols, 1))


def _check_finite(sim: Tensor, rows: int) -> None:
    """Reject NaN/inf: comparisons with NaN are always false and would fake good ranks."""
    if not sim.is_floating_point():
        return
    num_nan = 0
    num_inf = 0
    for start in range(0, sim.shape[0], rows):
        block = sim[start:start + rows]
        num_nan += int(torch.isnan(block).sum())
        num_inf += int(torch.isinf(block).sum())
    if num_nan or num_inf:
        raise ValueError(
            f'similarity matrix has non-finite values: {num_nan} NaN and {num_inf} inf '
            f'out of {sim.numel()}')


def _validate(sim: Tensor, caption_to_video: Tensor) -> Tensor:
    if sim.dim() != 2:
        raise ValueError(
            f'sim must be 2-D [num_captions, num_videos], got shape {tuple(sim.shape)}')
    if sim.numel() == 0:
        raise ValueError(f'empty similarity matrix of shape {tuple(sim.shape)}')
    if caption_to_video.dim() != 1 or caption_to_video.numel() != sim.shape[0]:
        raise ValueError(
            f'caption_to_video must have shape ({sim.shape[0]},) to match sim of shape '
            f'{tuple(sim.shape)}, got {tuple(caption_to_video.shape)}')
    if caption_to_video.is_floating_point() or caption_to_video.dtype == torch.bool:
        raise ValueError(
            f'caption_to_video must hold integer indices, got {caption_to_video.dtype}')
    caption_to_video = caption_to_video.to(device=sim.device, dtype=torch.long)
    low, high = int(caption_to_video.min()), int(caption_to_video.max())
    if low < 0 or high >= sim.shape[1]:
        raise ValueError(
            f'caption_to_video must lie in [0, {sim.shape[1] - 1}] (num_videos = '
            f'{sim.shape[1]}), got values in [{low}, {high}]')
    return caption_to_video


def _caption_indices(captions: Tensor, num_captions: int, device: torch.device) -> Tensor:
    captions = torch.as_tensor(captions, device=device)
    if captions.dtype == torch.bool:
        if captions.dim() != 1 or captions.numel() != num_captions:
            raise ValueError(
                f'a boolean captions mask must have shape ({num_captions},), '
                f'got {tuple(captions.shape)}')
        index = captions.nonzero().reshape(-1)
    else:
        if captions.is_floating_point():
            raise ValueError(f'captions must be a bool mask or indices, got {captions.dtype}')
        index = captions.reshape(-1).long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_captions):
            raise ValueError(
                f'captions indices must lie in [0, {num_captions - 1}], got values in '
                f'[{int(index.min())}, {int(index.max())}]')
    if index.numel() == 0:
        raise ValueError('the captions subset selects no caption')
    return index


def _t2v_ranks(sim: Tensor, caption_to_video: Tensor, index: Optional[Tensor],
               rows: int) -> Tensor:
    """Rank of each caption's video: 1 + number of other videos scoring >= it.

    Counting ``sim[c] >= gt[c]`` over all videos includes the ground truth itself
    exactly once, which supplies the ``1 +``.
    """
    num_rows = sim.shape[0] if index is None else index.numel()
    ranks = []
    for start in range(0, num_rows, rows):
        if index is None:
            block = sim[start:start + rows]
            target = caption_to_video[start:start + rows]
        else:
            picked = index[start:start + rows]
            block = sim.index_select(0, picked)
            target = caption_to_video.index_select(0, picked)
        gt = block.gather(1, target[:, None])
        ranks.append((block >= gt).sum(dim=1))
    return torch.cat(ranks)


def _best_gt_scores(sim: Tensor, caption_to_video: Tensor) -> Tuple[Tensor, Tensor]:
    """Each caption's ground-truth score, and each video's best one (-inf if none)."""
    gt_scores = sim.gather(1, caption_to_video[:, None]).reshape(-1)
    best = torch.full((sim.shape[1],), float('-inf'), dtype=sim.dtype, device=sim.device)
    return gt_scores, best.scatter_reduce(0, caption_to_video, gt_scores, reduce='amax')


def _v2t_ranks_all_captions(sim: Tensor, caption_to_video: Tensor, rows: int) -> Tensor:
    """Rank of each video's best ground-truth caption among the non-ground-truth ones.

    With ``m_v`` the best ground-truth score of video ``v``, the rank is
    ``1 + #{non-GT c : sim[c, v] >= m_v}``. Counting over the whole column and
    subtracting the ground-truth captions that reach ``m_v`` (those tied at the
    maximum, at least one) gives the same number without masking the matrix.
    Videos without captions are left out.
    """
    num_videos = sim.shape[1]
    gt_scores, best = _best_gt_scores(sim, caption_to_video)
    at_or_above = torch.zeros(num_videos, dtype=torch.long, device=sim.device)
    for start in range(0, sim.shape[0], rows):
        at_or_above += (sim[start:start + rows] >= best[None, :]).sum(dim=0)
    gt_at_best = torch.zeros(num_videos, dtype=torch.long, device=sim.device)
    gt_at_best.index_add_(0, caption_to_video,
                          (gt_scores >= best[caption_to_video]).long())
    has_caption = torch.bincount(caption_to_video, minlength=num_videos) > 0
    return (1 + at_or_above - gt_at_best)[has_caption]


def _v2t_ranks_clip4clip(sim: Tensor, caption_to_video: Tensor, rows: int) -> Tensor:
    """Rank of each video among videos: ``1 + #{u != v : max_{c of u} sim[c, v] >= m_v}``.

    Each other video competes once, with its best caption for ``v`` (the published
    code takes the max over a video's captions before ranking). ``hit[u, v]`` records
    whether some caption of ``u`` reaches ``m_v``; ``hit[v, v]`` always does. Videos
    without captions are left out, and never compete.
    """
    num_videos = sim.shape[1]
    _, best = _best_gt_scores(sim, caption_to_video)
    hit = torch.zeros(num_videos, num_videos, dtype=torch.uint8, device=sim.device)
    for start in range(0, sim.shape[0], rows):
        reached = (sim[start:start + rows] >= best[None, :]).to(torch.uint8)
        owner = caption_to_video[start:start + rows, None].expand_as(reached)
        hit.scatter_reduce_(0, owner, reached, reduce='amax')
    competitors = hit.sum(dim=0) - hit.diagonal()
    has_caption = torch.bincount(caption_to_video, minlength=num_videos) > 0
    return (1 + competitors.long())[has_caption]


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


def _medians(convention: str, several_captions: bool) -> Tuple[str, str]:
    """The (text-to-video, video-to-text) median rules of an ``mdr_convention``."""
    if convention == 'published':
        return ('lower_middle' if several_captions else 'mean_of_middle'), 'mean_of_middle'
    return convention, convention


def retrieval_metrics(sim: Tensor,
                      caption_to_video: Tensor,
                      captions: Optional[Tensor] = None,
                      *,
                      v2t_convention: str = 'clip4clip',
                      mdr_convention: str = 'published',
                      block_rows: Optional[int] = None) -> Dict[str, float]:
    """Text-to-video and video-to-text R@1/5/10 (percent), MdR, MnR and R_sum.

    Args:
        sim: ``[num_captions, num_videos]`` scores, higher is better.
        caption_to_video: ``[num_captions]`` index of the ground-truth video of
            each caption. A video may have any number of captions, including none.
        captions: optional subset of captions (bool mask over captions or caption
            indices). It restricts only the text-to-video side, e.g. to report a
            class of captions on their own; every video stays a candidate. The
            video-to-text side always uses the full matrix, because a video's
            ranking of captions is defined against all captions.
        v2t_convention: ``'clip4clip'`` or ``'all_captions'`` (module docstring).
        mdr_convention: ``'published'``, ``'mean_of_middle'`` or ``'lower_middle'``
            (module docstring). "Several captions" means some video of the whole
            matrix has more than one, whatever the ``captions`` subset.
        block_rows: rows per processing block; by default chosen so that the
            temporary masks hold about 4M elements.

    Returns:
        ``t2v_R1, t2v_R5, t2v_R10, t2v_MdR, t2v_MnR``, the same five with ``v2t_``,
        and ``R_sum`` (sum of the six recalls). Ties count against the model
        (see module docstring); in video-to-text the other ground-truth captions of
        a video do not compete with its best one.

    Raises:
        ValueError: empty matrix, shape mismatch, out-of-range video index,
            non-finite scores, an empty captions subset, or an unknown convention.
    """
    _check_choice('v2t_convention', v2t_convention, V2T_CONVENTIONS)
    _check_choice('mdr_convention', mdr_convention, MDR_CONVENTIONS)
    caption_to_video = _validate(sim, caption_to_video)
    if not sim.is_floating_point():
        sim = sim.float()
    rows = _rows_per_block(sim.shape[1], block_rows)
    _check_finite(sim, rows)
    index = None
    if captions is not None:
        index = _caption_indices(captions, sim.shape[0], sim.device)

    several = bool((torch.bincount(caption_to_video) > 1).any())
    t2v_median, v2t_median = _medians(mdr_convention, several)
    v2t_ranks = (_v2t_ranks_clip4clip if v2t_convention == 'clip4clip'
                 else _v2t_ranks_all_captions)
    metrics = recall_from_ranks(_t2v_ranks(sim, caption_to_video, index, rows), 't2v',
                                t2v_median)
    metrics.update(recall_from_ranks(v2t_ranks(sim, caption_to_video, rows), 'v2t',
                                     v2t_median))
    metrics['R_sum'] = sum(metrics[f'{side}_R{k}'] for side in ('t2v', 'v2t')
                           for k in RECALL_AT)
    return metrics


def dual_softmax(sim: Tensor, temperature: float = 100.0) -> Tensor:
    """Dual-softmax (DSL) re-ranking of a ``[num_captions, num_videos]`` matrix.

    ``out[c, v] = sim[c, v] * softmax_c(temperature * sim[:, v])``: each score is
    weighted by how strongly caption ``c`` stands out among all captions for video
    ``v``. A "hub" video that scores high against many captions spreads its prior
    over them and drops in every caption's ranking, which helps text-to-video.
    The result has the shape and dtype of ``sim`` (computed in at least float32).
    Note that it uses the whole test set's captions at once (a transductive prior).
    """
    if sim.dim() != 2 or sim.numel() == 0:
        raise ValueError(
            f'dual_softmax needs a non-empty 2-D matrix, got shape {tuple(sim.shape)}')
    if not (temperature > 0 and temperature < float('inf')):
        raise ValueError(f'temperature must be positive and finite, got {temperature}')
    work_dtype = torch.promote_types(sim.dtype, torch.float32)
    scores = sim.to(work_dtype)
    prior = torch.softmax(scores * temperature, dim=0)
    out_dtype = sim.dtype if sim.is_floating_point() else work_dtype
    return (scores * prior).to(out_dtype)


def evaluator_conventions(evaluator: Any) -> Dict[str, str]:
    """``v2t_convention`` / ``mdr_convention`` of a config's evaluator (a metric dict or a
    list of them), the metric's defaults where unset: tools that rank a saved or exported
    similarity matrix count as ``tools/test.py`` does with the same config."""
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    found = dict(v2t_convention=V2T_CONVENTIONS[0], mdr_convention=MDR_CONVENTIONS[0])
    for metric in metrics:
        if isinstance(metric, dict) and 'RetrievalMetric' in str(metric.get('type', '')):
            found.update({k: metric[k] for k in found if metric.get(k) is not None})
            break
    return found
