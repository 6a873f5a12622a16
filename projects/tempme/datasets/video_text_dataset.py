"""Video-text retrieval dataset over an mmaction2-style ``{video: [captions]}`` annotation.

Training iterates over (video, caption) pairs, because the contrastive loss needs one
caption per video in a batch. Evaluation iterates over videos, each item carrying all
of that video's captions, so every video is decoded once and every caption tokenized
once; the global caption ids let the metric rebuild the caption -> video map.

Pipeline (the one the configs use: TempMe's published data protocol)::

    train_pipeline = [
        dict(type='DecordInit'),
        dict(type='FpsGridSample', clip_len=12, frame_rate=1),
        dict(type='DecordDecode'),
        dict(type='ClipRandAugment', config='rand-m7-n4-mstd0.5-inc1'),
        dict(type='PILResizeCenterCrop', size=224),
        dict(type='OpenCLIPTokenize', context_length=32),
        dict(type='PackVideoTextInputs'),
    ]
    # evaluation: the same without ClipRandAugment
"""
import json
import os.path as osp
import posixpath
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmaction.datasets.transforms import DecordInit
from mmaction.registry import DATASETS, TRANSFORMS
from mmengine.dataset import BaseDataset
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.fileio import exists, get
from mmengine.logging import MMLogger
from tqdm import tqdm

from ...tempme_deploy.fileio import resolves_inside
from .frame_cache import check_cached_resize
from .transforms import OpenCLIPTokenize, truncated_captions
from .video_check import VideoProbe, probe_videos, resolve_video_path, shard, unshard

#: Bad videos named in an exception message; the log lists all of them.
_LISTED_IN_ERROR = 20
#: Other videos tried in 'skip' mode before a load failure is declared hopeless.
_MAX_REPLACEMENTS = 10
_ON_BAD_VIDEO = ('error', 'skip')


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is."""


class VideoCheckError(RuntimeError):
    """Videos of the annotation that cannot be read, found before any training step."""


class VideoLoadError(RuntimeError):
    """A video that failed while its item was loaded (names the file)."""


def _reject_duplicate_keys(ann_file: str) -> Callable[[List[Tuple[str, Any]]], dict]:
    """Return a JSON object hook that fails on a repeated key instead of keeping the last."""

    def hook(pairs: List[Tuple[str, Any]]) -> dict:
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise AnnotationError(
                    f'{ann_file}: video {key!r} appears more than once; '
                    'merge its captions into one entry')
            seen.add(key)
        return dict(pairs)

    return hook


def _entry_with_bad_bytes(raw: bytes) -> str:
    """``', video 'x.mp4', caption 2'`` for the first entry holding undecodable bytes."""
    try:
        videos = json.loads(raw.decode('utf-8-sig', errors='replace'))
    except ValueError:
        return ''
    if not isinstance(videos, dict):
        return ''
    for video, captions in videos.items():
        if '\ufffd' in video:
            return f', video {video!r}'
        for i, caption in enumerate(captions if isinstance(captions, list) else []):
            if isinstance(caption, str) and '\ufffd' in caption:
                return f', video {video!r}, caption {i}'
    return ''


def load_video_captions(ann_file: str) -> Dict[str, List[str]]:
    """Read and validate a ``{video_file: [caption, ...]}`` JSON file, in file order.

    Errors name the file and the offending entry, because a bad caption deep in a
    180k-pair file is otherwise found only when a worker crashes mid-epoch.
    """
    if not exists(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    raw = get(ann_file)
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b'\n') + 1
        raise AnnotationError(
            f'{ann_file}: not valid UTF-8 (byte {err.start}, line {line}'
            f'{_entry_with_bad_bytes(raw)}): {err.reason}; re-save the file as UTF-8') from None
    try:
        videos = json.loads(text, object_pairs_hook=_reject_duplicate_keys(ann_file))
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f'{ann_file}: malformed JSON at line {err.lineno}, column {err.colno}: '
            f'{err.msg}') from None

    if not isinstance(videos, dict):
        raise AnnotationError(
            f'{ann_file}: expected a JSON object {{video_file: [caption, ...]}}, '
            f'got {type(videos).__name__}')
    if not videos:
        raise AnnotationError(f'{ann_file}: the annotation has no videos')
    for video, captions in videos.items():
        if not video.strip():
            raise AnnotationError(f'{ann_file}: an entry has an empty video file name')
        if not isinstance(captions, list):
            raise AnnotationError(
                f'{ann_file}: video {video!r}: expected a list of captions, '
                f'got {type(captions).__name__}')
        if not captions:
            raise AnnotationError(f'{ann_file}: video {video!r} has no captions')
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise AnnotationError(
                    f'{ann_file}: video {video!r}, caption {i}: expected a string, '
                    f'got {type(caption).__name__}')
            if not caption.strip():
                raise AnnotationError(
                    f'{ann_file}: video {video!r}, caption {i} is empty')
    return videos


def check_paths_inside_root(annotation: Dict[str, List[str]], ann_file: str) -> None:
    """Refuse video keys that are absolute or leave the video folder through ``..``."""
    for video in annotation:
        normalized = posixpath.normpath(video.replace('\\', '/'))
        if osp.isabs(video) or normalized.startswith('/') or normalized == '..' or \
                normalized.startswith('../'):
            raise AnnotationError(
                f'{ann_file}: video {video!r} points outside the video folder (data_root / '
                "data_prefix['video']); use paths relative to it, or set "
                'allow_paths_outside_root=True on the dataset if the annotation really '
                'names files elsewhere')


def check_links_inside_root(annotation: Dict[str, List[str]], video_folder: str,
                            ann_file: str) -> None:
    """Refuse videos that are symlinks (or under symlinked folders) leading outside
    ``video_folder``: a relative key can still reach any file through a link. The folder
    itself may be a link (``data/msrvtt/videos -> /mnt/...``): it is resolved first."""
    root = video_folder or '.'
    for video in annotation:
        path = resolve_video_path(osp.join(video_folder, video))
        if osp.lexists(path) and not resolves_inside(path, root):
            raise AnnotationError(
                f'{ann_file}: video {video!r} is a link to {osp.realpath(path)!r}, outside the '
                f'video folder {osp.realpath(root)!r}; set allow_paths_outside_root=True on '
                'the dataset if the links are meant')


def data_prefix_folder(dataset: Dict, key: str) -> Optional[str]:
    """``data_root/data_prefix[key]`` of a dataset config, joined as the dataset joins it
    (an absolute prefix stands alone), for tools that read the folders without building
    the dataset; ``None`` when ``data_prefix`` has no ``key``."""
    prefix = dataset.get('data_prefix') or {}
    if key not in prefix:
        return None
    return osp.join(dataset.get('data_root') or '', prefix[key])


def _bad_video_lines(bad: Sequence[VideoProbe]) -> List[str]:
    return [f'  {probe.path}: {probe.reason}' for probe in bad]


@DATASETS.register_module()
class VideoTextRetrievalDataset(BaseDataset):
    """Text-video retrieval data: pairs for training, whole videos for evaluation.

    Annotation: a JSON object ``{video_file: [caption, ...]}`` (mmaction2's
    ``VideoTextDataset`` format), any number of captions per video. Videos are numbered
    in file order and captions globally in file order, video by video.

    Each ``data_info`` holds:

    - ``filename``: ``data_root/data_prefix['video']/video_file`` (``DecordInit`` appends
      ``.mp4`` to a name without an extension); ``video``: ``video_file`` itself (the key
      of a frame cache); ``frame_cache``: ``data_root/data_prefix['frame_cache']``, when
      given (the folder :class:`LoadCachedFrames` reads);
    - ``video_index``: the video's position in the file;
    - ``captions`` / ``caption_indices``: training, one caption and its global id;
      evaluation (``test_mode=True``), all of the video's captions and their ids;
    - ``start_index=0`` and ``modality='RGB'``, which mmaction2's samplers and
      ``Resize`` read.

    Frame sampling is the pipeline's (``FpsGridSample``: see
    :mod:`.frame_sampling`). A video with fewer than ``clip_len`` frames gets repeated
    frames (a 5-frame video gives 0,0,0,1,1,1,2,2,2,3,3,4), so every item has exactly
    ``clip_len`` frames in time order. Such videos are counted and logged at start-up,
    not rejected.

    Bad input is found at start-up, before any training step (``full_init``):

    - videos: each file is probed once (exists, not empty, decord opens it, first and
      last frame decode; see :mod:`.video_check`) with a progress bar. With
      ``on_bad_video='error'`` every unreadable video is logged with its reason and
      :class:`VideoCheckError` is raised; with ``'skip'`` they are left out as if
      absent from the annotation (videos and captions renumbered), and their count and
      list are logged (a warning that names the changed benchmark in test mode). Under
      ``torch.distributed`` the ranks split the probing and share the results, so all
      ranks keep the same videos; every rank must build the dataset, as mmengine's
      runner does.
    - a video that passes the probe but fails while an item loads raises
      :class:`VideoLoadError` naming the file (``'error'``), or (``'skip'``) is logged
      once and its items are replaced by the next item of another video (deterministic)
      and counted in ``num_load_failures`` (per process: each dataloader worker counts
      its own; the metric flags an evaluation that lost videos).
    - captions longer than the ``OpenCLIPTokenize`` context are counted and logged with
      an example (they are truncated, as CLIP was trained).

    ``metainfo`` carries ``num_videos``, ``num_captions``, ``num_skipped_videos`` and
    ``num_truncated_captions``; the retrieval metric reads them to flag partial splits.

    Attributes ``videos`` (file names, as in the annotation), ``captions`` (all
    captions by global id) and ``caption_to_video`` (LongTensor: video index of each
    caption) describe the videos kept, for the metric and for tools;
    ``skipped_videos`` lists ``(path, reason)`` of the videos left out.

    Args:
        ann_file: Annotation JSON path, relative to ``data_root`` unless absolute.
        pipeline: Transforms (config dicts are built from mmaction2's registry, so
            the dataset works without a default scope).
        data_root: Root of the annotation and the videos.
        data_prefix: ``dict(video=..., frame_cache=...)``: folders under ``data_root``:
            the videos and, optionally, their frame cache
            (``tools/data/cache_frames.py``), so both follow ``data_root``.
        test_mode: ``True`` for evaluation (one item per video).
        check_videos: probe every video at start-up. ``None`` (default): when the
            pipeline decodes with ``DecordInit``.
        on_bad_video: ``'error'`` (default) stops with the list of unreadable videos;
            ``'skip'`` trains/evaluates without them, counted and logged.
        check_threads: videos probed at once by each process.
        allow_paths_outside_root: accept annotation keys that are absolute paths or climb
            out of the video folder with ``..`` (refused by default: an annotation from
            someone else should not make training read files elsewhere on the machine).
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset`.
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: Sequence[Union[dict, Callable]],
                 data_root: str = '',
                 data_prefix: Optional[Dict[str, str]] = None,
                 test_mode: bool = False,
                 check_videos: Optional[bool] = None,
                 on_bad_video: str = 'error',
                 check_threads: int = 4,
                 allow_paths_outside_root: bool = False,
                 **kwargs) -> None:
        data_prefix = dict(video='') if data_prefix is None else dict(data_prefix)
        if 'video' not in data_prefix:
            raise KeyError(f"data_prefix needs a 'video' entry, got {data_prefix}")
        if on_bad_video not in _ON_BAD_VIDEO:
            raise ValueError(
                f'on_bad_video must be one of {_ON_BAD_VIDEO}, got {on_bad_video!r}')
        if check_threads < 1:
            raise ValueError(f'check_threads must be >= 1, got {check_threads}')
        self.check_videos = check_videos
        self.on_bad_video = on_bad_video
        self.check_threads = check_threads
        self.allow_paths_outside_root = allow_paths_outside_root
        self.skipped_videos: List[Tuple[str, str]] = []
        self.num_load_failures = 0
        self._failed_files: set = set()
        self._videos: List[str] = []
        self._captions: List[str] = []
        self._caption_to_video = torch.zeros(0, dtype=torch.long)
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        check_cached_resize(built)
        super().__init__(
            ann_file=ann_file,
            pipeline=built,
            data_root=data_root,
            data_prefix=data_prefix,
            test_mode=test_mode,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """Turn the annotation into pair items (training) or video items (evaluation)."""
        annotation = load_video_captions(self.ann_file)
        if not self.allow_paths_outside_root:
            check_paths_inside_root(annotation, self.ann_file)
            check_links_inside_root(annotation, self.data_prefix['video'], self.ann_file)
        annotation = self._drop_unreadable_videos(annotation)
        num_truncated = self._report_long_captions(annotation)
        videos: List[str] = []
        captions: List[str] = []
        caption_to_video: List[int] = []
        data_list: List[dict] = []
        cache = ({'frame_cache': self.data_prefix['frame_cache']}
                 if 'frame_cache' in self.data_prefix else {})
        for video_index, (video, video_captions) in enumerate(annotation.items()):
            filename = osp.join(self.data_prefix['video'], video)
            first_id = len(captions)
            ids = list(range(first_id, first_id + len(video_captions)))
            videos.append(video)
            captions.extend(video_captions)
            caption_to_video.extend([video_index] * len(video_captions))
            common = dict(filename=filename, video=video, video_index=video_index,
                          start_index=0, modality='RGB', **cache)
            if self.test_mode:
                data_list.append(
                    dict(common, captions=list(video_captions), caption_indices=ids))
            else:
                data_list.extend(
                    dict(common, captions=[caption], caption_indices=[caption_id])
                    for caption_id, caption in zip(ids, video_captions))

        self._videos = videos
        self._captions = captions
        self._caption_to_video = torch.tensor(caption_to_video, dtype=torch.long)
        self._metainfo.update(
            num_videos=len(videos), num_captions=len(captions),
            num_skipped_videos=len(self.skipped_videos),
            num_truncated_captions=num_truncated)
        return data_list

    # -- start-up checks ----------------------------------------------------------------

    def _transforms(self) -> List[Any]:
        return list(getattr(self.pipeline, 'transforms', []))

    def _should_check_videos(self) -> bool:
        if self.check_videos is not None:
            return bool(self.check_videos)
        return any(isinstance(t, DecordInit) for t in self._transforms())

    def _frames_per_item(self) -> Optional[int]:
        for t in self._transforms():
            if hasattr(t, 'clip_len') and hasattr(t, 'num_clips'):
                return int(t.clip_len) * int(t.num_clips)
        return None

    def _probe_all(self, filenames: List[str]) -> List[VideoProbe]:
        """Probe with a progress bar on rank 0; ranks share the work and the results."""
        rank, world_size = get_dist_info()
        mine = shard(filenames, rank, world_size)
        lock = threading.Lock()
        with tqdm(total=len(mine), disable=rank != 0, unit='video', mininterval=1.0,
                  desc=f'checking videos of {osp.basename(self.ann_file)}') as bar:

            def advance(_: VideoProbe) -> None:
                with lock:
                    bar.update()

            probes = probe_videos(mine, self.check_threads, on_done=advance)
        if world_size > 1:
            probes = unshard(all_gather_object(probes), len(filenames))
        return probes

    def _drop_unreadable_videos(self, annotation: Dict[str, List[str]]
                                ) -> Dict[str, List[str]]:
        self.skipped_videos = []
        if not self._should_check_videos():
            return annotation
        logger = MMLogger.get_current_instance()
        names = list(annotation)
        probes = self._probe_all([osp.join(self.data_prefix['video'], v) for v in names])
        bad = [(name, probe) for name, probe in zip(names, probes) if not probe.ok]
        self._report_short_videos(probes, logger)
        if not bad:
            logger.info(f'{self.ann_file}: all {len(names)} videos are readable')
            return annotation

        bad_probes = [probe for _, probe in bad]
        header = (f'{self.ann_file}: {len(bad)} of {len(names)} videos cannot be read '
                  f"(videos under {self.data_prefix['video']!r})")
        if all(probe.reason == 'file not found' for probe in bad_probes) and \
                len(bad) == len(names):
            header += "; none exists: check data_root and data_prefix['video']"
        if self.on_bad_video == 'error' or len(bad) == len(names):
            logger.error('\n'.join([header + ':'] + _bad_video_lines(bad_probes)))
            listed = _bad_video_lines(bad_probes[:_LISTED_IN_ERROR])
            if len(bad) > _LISTED_IN_ERROR:
                listed.append(f'  ... and {len(bad) - _LISTED_IN_ERROR} more (all are '
                              'listed in the log)')
            remedy = ('nothing would be left to use' if self.on_bad_video == 'skip' else
                      "fix or remove them, or set on_bad_video='skip' on the dataset to "
                      'leave them out (counted and logged); '
                      'tools/analysis/check_dataset.py CONFIG checks a config '
                      'without training')
            raise VideoCheckError('\n'.join([header + ':'] + listed + [remedy]))

        skipped = {name for name, _ in bad}
        self.skipped_videos = [(probe.path, str(probe.reason)) for probe in bad_probes]
        num_captions = sum(len(annotation[name]) for name in skipped)
        message = (f"{header}; on_bad_video='skip' leaves them and their {num_captions} "
                   'captions out:\n' + '\n'.join(_bad_video_lines(bad_probes)))
        if self.test_mode:
            message = (f'EVALUATION ON A PARTIAL SPLIT: {len(bad)} of {len(names)} videos '
                       'skipped, so metrics are not comparable with results on the full '
                       f'split.\n{message}')
        logger.warning(message)
        return {name: caps for name, caps in annotation.items() if name not in skipped}

    def _report_short_videos(self, probes: Sequence[VideoProbe], logger: Any) -> None:
        frames = self._frames_per_item()
        if frames is None:
            return
        short = [p for p in probes if p.ok and p.num_frames < frames]
        if short:
            logger.info(
                f'{self.ann_file}: {len(short)} of {len(probes)} videos have fewer than the '
                f'{frames} frames an item samples; their frames are repeated in time order '
                f'(e.g. {short[0].path}: {short[0].num_frames} frames)')

    def _report_long_captions(self, annotation: Dict[str, List[str]]) -> int:
        """Count (and log one example of) captions the tokenizer will truncate."""
        tokenizers = [t for t in self._transforms() if isinstance(t, OpenCLIPTokenize)]
        if not tokenizers:
            return 0
        context_length = tokenizers[0].context_length
        flat = [(video, i, caption) for video, caps in annotation.items()
                for i, caption in enumerate(caps)]
        long = truncated_captions([caption for _, _, caption in flat], context_length)
        if long:
            video, i, caption = flat[long[0]]
            MMLogger.get_current_instance().warning(
                f'{self.ann_file}: {len(long)} of {len(flat)} captions are longer than '
                f'{context_length - 2} tokens and are truncated to context_length='
                f'{context_length} (first: video {video!r}, caption {i}: {caption!r})')
        return len(long)

    # -- loading --------------------------------------------------------------------------

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline; a failure names the file (and in 'skip' mode is replaced)."""
        if self._failed_files:
            filename = self.get_data_info(idx)['filename']
            if filename in self._failed_files:
                return self._replace_failed_item(idx, filename)
        try:
            return super().prepare_data(idx)
        except Exception as err:
            filename = self.get_data_info(idx)['filename']
            if self.on_bad_video == 'error':
                raise VideoLoadError(
                    f'{filename} (dataset item {idx}) failed to load: '
                    f"{type(err).__name__}: {err}. Set on_bad_video='skip' on the dataset "
                    'to replace such items (counted and logged)') from err
            self._note_failed_file(filename, err)
            return self._replace_failed_item(idx, filename)

    def _note_failed_file(self, filename: str, err: BaseException) -> None:
        self._failed_files.add(filename)
        where = 'EVALUATION ON A PARTIAL SPLIT: ' if self.test_mode else ''
        MMLogger.get_current_instance().warning(
            f"{where}{filename} failed to load; its items are replaced by the next item of "
            f"another video (on_bad_video='skip'; {len(self._failed_files)} failed videos "
            f'in this process): {type(err).__name__}: {err}')

    def _replace_failed_item(self, idx: int, filename: str) -> Any:
        """Load the next item whose video has not failed (deterministic), and count it."""
        self.num_load_failures += 1
        tried = 0
        for step in range(1, len(self)):
            other_idx = (idx + step) % len(self)
            other = self.get_data_info(other_idx)['filename']
            if other in self._failed_files:
                continue
            try:
                return super().prepare_data(other_idx)
            except Exception as err:
                self._note_failed_file(other, err)
                tried += 1
                if tried >= _MAX_REPLACEMENTS:
                    break
        raise VideoLoadError(
            f'{filename} (dataset item {idx}) failed to load and no other video could '
            f'replace it ({len(self._failed_files)} videos failed in this process, '
            f'{tried} while looking for a replacement); the data looks broken beyond '
            'skipping: run tools/analysis/check_dataset.py')

    # -- whole-split views ----------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._fully_initialized:
            self.full_init()

    @property
    def videos(self) -> List[str]:
        """Video file names (as written in the annotation), by video index."""
        self._ensure_loaded()
        return self._videos

    @property
    def captions(self) -> List[str]:
        """Every caption, by global caption id."""
        self._ensure_loaded()
        return self._captions

    @property
    def caption_to_video(self) -> torch.Tensor:
        """LongTensor ``(num_captions,)``: the video index of each caption."""
        self._ensure_loaded()
        return self._caption_to_video
