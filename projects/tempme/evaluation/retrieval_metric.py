"""mmengine metric for text-video retrieval: gathers per-video features, ranks them.

Input contract (from the retriever's ``predict``): every data sample, a dict or a
``BaseDataElement``/``ActionDataSample``, carries

* ``video_feat``: ``Tensor[D]``, the video feature;
* ``text_feats``: ``Tensor[n_i, D]``, the features of all ``n_i >= 0`` captions of
  that video;
* ``video_index``: ``int``, the dataset index of the video.

Keeping the captions with their video makes the caption -> video index implicit and
survives any sharding of the split across ranks.

The result names how it was obtained: the ranking conventions always (in the JSON file),
and the evaluation protocol when one is set (``protocol``, see
:mod:`projects.tempme.evaluation.protocols`): in the log line, the JSON file and, as the
string ``{prefix}/protocol``, the returned dict, which mmengine logs and dumps with the
test metrics (non-scalar values never reach the scalar logs or best-checkpoint choice).
"""
import json
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmaction.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ...tempme_deploy.fileio import atomic_write
from .ranking import MDR_CONVENTIONS, RECALL_AT, V2T_CONVENTIONS, dual_softmax, retrieval_metrics

_REQUIRED = ('video_feat', 'text_feats', 'video_index')


def _field(sample: Any, name: str) -> Any:
    """Read ``name`` from a dict or a data element (``None`` when absent)."""
    if isinstance(sample, dict):
        return sample.get(name)
    return getattr(sample, name, None)


def format_metrics(metrics: Dict[str, float], prefix: str = '') -> str:
    """One-line table: ``t2v R@1 .. MdR .. MnR .. | v2t ... | R_sum ..``."""
    parts = []
    for side in ('t2v', 'v2t'):
        cells = [f'R@{k} {metrics[f"{prefix}{side}_R{k}"]:.1f}' for k in RECALL_AT]
        cells.append(f'MdR {metrics[f"{prefix}{side}_MdR"]:.1f}')
        cells.append(f'MnR {metrics[f"{prefix}{side}_MnR"]:.1f}')
        parts.append(f'{side} ' + ' '.join(cells))
    parts.append(f'R_sum {metrics[f"{prefix}R_sum"]:.1f}')
    return ' | '.join(parts)


def _check_finite_features(videos: torch.Tensor, texts: torch.Tensor,
                           caption_to_video: torch.Tensor, video_ids: List[int]) -> None:
    """Fail on NaN/inf features, saying how many videos and captions have them.

    A non-finite feature makes its whole similarity row or column NaN, and NaN compares
    false, so ranking it would fake good ranks instead of exposing a diverged model.
    """
    bad_videos = (~torch.isfinite(videos)).any(dim=1)
    bad_texts = (~torch.isfinite(texts)).any(dim=1)
    if not (bad_videos.any() or bad_texts.any()):
        return
    first = [video_ids[i] for i in bad_videos.nonzero().reshape(-1)[:5].tolist()]
    first_of_captions = sorted({video_ids[int(caption_to_video[i])]
                                for i in bad_texts.nonzero().reshape(-1)[:5].tolist()})
    raise ValueError(
        f'non-finite (NaN or inf) features: {int(bad_videos.sum())} of {len(video_ids)} '
        f'videos (first dataset indices {first}) and {int(bad_texts.sum())} of '
        f'{texts.shape[0]} captions (of videos {first_of_captions}); the model has '
        'diverged or was fed broken input: check the training loss, the learning rate '
        'and mixed precision, then evaluate a checkpoint from before the divergence')


def _warn_collapsed(feats: torch.Tensor, name: str, logger: Any, atol: float = 1e-5) -> None:
    """Warn when every (normalised) feature is the same: a collapsed or constant model.

    Exact ties already count against the model; this names the cause, and catches
    features equal only up to rounding, whose ties rounding noise breaks at random.
    """
    if feats.shape[0] > 1 and bool(((feats - feats[:1]).abs() <= atol).all()):
        logger.warning(
            f'all {feats.shape[0]} {name} features are identical (within {atol:g} after '
            'normalisation): the model ignores its input (collapsed, or untrained), so '
            'these metrics are those of a constant model')


# mmaction2 already registers a different ``RetrievalMetric`` (mmaction.evaluation), so
# this one is registered under its own name: ``dict(type='TempMeRetrievalMetric')``.
@METRICS.register_module(name='TempMeRetrievalMetric')
class RetrievalMetric(BaseMetric):
    """Text-to-video and video-to-text recall, median and mean rank, R_sum.

    Registered as ``TempMeRetrievalMetric``; ``type='RetrievalMetric'`` would build
    mmaction2's own metric, which expects a different input.

    Args:
        dsl: also report the metrics of the dual-softmax re-ranked matrix under
            ``dsl_``-prefixed keys (see :func:`~.ranking.dual_softmax`).
        dsl_temperature: temperature of the dual softmax.
        v2t_convention: ``'clip4clip'`` (a video's best caption against each other
            video's best caption, as the published code ranks) or ``'all_captions'``
            (against every caption); they differ only when a video has several captions.
        mdr_convention: ``'published'`` (the published code's median rank),
            ``'mean_of_middle'`` or ``'lower_middle'``; see :mod:`.ranking`.
        protocol: name of the evaluation protocol these numbers belong to (``'paper'``,
            ``'clean'``), reported with them; the protocol's train loop sets it.
        out_file: if given, the metrics dict is written there as JSON, with the
            conventions and the protocol.
        dump_sim: if given, ``{'sim': Tensor, 'caption_to_video': Tensor}`` is
            saved there with ``torch.save`` (for offline analysis).
        collect_device, prefix, collect_dir: see ``mmengine.evaluator.BaseMetric``.
    """

    default_prefix: Optional[str] = 'retrieval'

    def __init__(self,
                 dsl: bool = False,
                 dsl_temperature: float = 100.0,
                 v2t_convention: str = 'clip4clip',
                 mdr_convention: str = 'published',
                 protocol: Optional[str] = None,
                 out_file: Optional[str] = None,
                 dump_sim: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix,
                         collect_dir=collect_dir)
        for name, value, choices in (('v2t_convention', v2t_convention, V2T_CONVENTIONS),
                                     ('mdr_convention', mdr_convention, MDR_CONVENTIONS)):
            if value not in choices:
                raise ValueError(f'{name} must be one of {choices}, got {value!r}')
        self.dsl = dsl
        self.dsl_temperature = dsl_temperature
        self.v2t_convention = v2t_convention
        self.mdr_convention = mdr_convention
        self.protocol = protocol
        self.out_file = out_file
        self.dump_sim = dump_sim

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each video's features on the CPU in float32, keyed by its index."""
        for sample in data_samples:
            values = {name: _field(sample, name) for name in _REQUIRED}
            missing = [name for name, value in values.items() if value is None]
            if missing:
                raise KeyError(
                    f'RetrievalMetric needs {list(_REQUIRED)} in every data sample; '
                    f'missing {missing}')
            video = torch.as_tensor(values['video_feat']).detach().float().cpu()
            video = video.reshape(-1)
            texts = torch.as_tensor(values['text_feats']).detach().float().cpu()
            if texts.numel() == 0:
                texts = texts.new_zeros((0, video.numel()))
            if texts.dim() == 1:
                texts = texts[None]
            if texts.dim() != 2 or texts.shape[1] != video.numel():
                raise ValueError(
                    f'text_feats must have shape (n, {video.numel()}) to match video_feat, '
                    f'got {tuple(texts.shape)}')
            self.results.append(dict(video_index=int(values['video_index']),
                                     video_feat=video, text_feats=texts))

    def _warn_partial_split(self, num_videos: int, num_captions: int, logger: Any) -> None:
        """Say loudly when the ranking is not over the whole split the dataset holds."""
        meta = self.dataset_meta or {}
        expected = meta.get('num_videos')
        if expected is not None and num_videos < expected:
            logger.warning(
                f'EVALUATION ON A PARTIAL SPLIT: {num_videos} of the {expected} videos of the '
                'split were evaluated (the others failed to load, see the warnings above); '
                'metrics are not comparable with results on the full split')
        skipped = meta.get('num_skipped_videos', 0)
        if skipped:
            logger.warning(
                f'EVALUATION ON A PARTIAL SPLIT: the dataset check skipped {skipped} '
                'unreadable videos of this split; metrics are not comparable with results '
                'on the full split')
        if num_videos == 1:
            logger.warning(
                f'only 1 video ({num_captions} captions) was evaluated: text-to-video '
                'recall is 100% by construction')

    def compute_metrics(self, results: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Order videos by dataset index, drop padding duplicates, rank, report."""
        if not results:
            raise ValueError('no videos were evaluated (empty split?)')
        by_index: Dict[int, Dict[str, Any]] = {}
        for item in results:
            # The distributed sampler pads the last batch by repeating samples.
            by_index.setdefault(int(item['video_index']), item)
        items = [by_index[i] for i in sorted(by_index)]

        videos = torch.stack([item['video_feat'].float() for item in items])
        texts = torch.cat([item['text_feats'].float() for item in items])
        counts = torch.tensor([item['text_feats'].shape[0] for item in items])
        if texts.shape[0] == 0:
            raise ValueError(f'{len(items)} videos were evaluated but none has a caption')
        caption_to_video = torch.repeat_interleave(torch.arange(len(items)), counts)
        _check_finite_features(videos, texts, caption_to_video,
                               [int(item['video_index']) for item in items])
        logger = MMLogger.get_current_instance()
        self._warn_partial_split(len(items), int(texts.shape[0]), logger)
        videos, texts = F.normalize(videos, dim=-1), F.normalize(texts, dim=-1)
        _warn_collapsed(videos, 'video', logger)
        _warn_collapsed(texts, 'caption', logger)
        sim = texts @ videos.T

        conventions = dict(v2t_convention=self.v2t_convention,
                           mdr_convention=self.mdr_convention)
        metrics: Dict[str, Any] = retrieval_metrics(sim, caption_to_video, **conventions)
        protocol = f', {self.protocol} protocol' if self.protocol else ''
        logger.info(f'retrieval ({len(items)} videos, {texts.shape[0]} captions{protocol}): '
                    f'{format_metrics(metrics)}')
        if self.dsl:
            dsl_metrics = retrieval_metrics(
                dual_softmax(sim, self.dsl_temperature), caption_to_video, **conventions)
            dsl_metrics = {f'dsl_{key}': value for key, value in dsl_metrics.items()}
            logger.info(f'retrieval with DSL: {format_metrics(dsl_metrics, "dsl_")}')
            metrics.update(dsl_metrics)

        if self.protocol:
            metrics['protocol'] = self.protocol
        if self.out_file:
            text = json.dumps({**metrics, **conventions}, indent=2)

            def write_json(path: str) -> None:
                with open(path, 'w') as f:
                    f.write(text + '\n')

            atomic_write(self.out_file, write_json)
        if self.dump_sim:
            payload = {'sim': sim, 'caption_to_video': caption_to_video}
            atomic_write(self.dump_sim, lambda path: torch.save(payload, path))
        return metrics
