"""Video-text retrieval dataset over an mmaction2-style ``{video: [captions]}`` annotation.

Training iterates over (video, caption) pairs, because the contrastive loss needs one
caption per video in a batch. Evaluation iterates over videos, each item carrying all
of that video's captions, so every video is decoded once and every caption tokenized
once; the global caption ids let the metric rebuild the caption -> video map.

Pipeline (the one the configs use; sizes are CLIP's)::

    train_pipeline = [
        dict(type='DecordInit'),
        dict(type='UniformSample', clip_len=12, num_clips=1),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(-1, 224)),
        dict(type='CenterCrop', crop_size=224),
        dict(type='OpenCLIPTokenize', context_length=32),
        dict(type='PackVideoTextInputs'),
    ]
    # evaluation: the same with dict(type='UniformSample', clip_len=12, num_clips=1,
    #                                 test_mode=True)
"""
import json
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmaction.registry import DATASETS, TRANSFORMS
from mmengine.dataset import BaseDataset
from mmengine.fileio import exists, get


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is."""


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
            f'{ann_file}: not valid UTF-8 (byte {err.start}, line {line}): '
            f'{err.reason}') from None
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


@DATASETS.register_module()
class VideoTextRetrievalDataset(BaseDataset):
    """Text-video retrieval data: pairs for training, whole videos for evaluation.

    Annotation: a JSON object ``{video_file: [caption, ...]}`` (mmaction2's
    ``VideoTextDataset`` format), any number of captions per video. Videos are numbered
    in file order and captions globally in file order, video by video.

    Each ``data_info`` holds:

    - ``filename``: ``data_root/data_prefix['video']/video_file`` (``DecordInit`` appends
      ``.mp4`` to a name without an extension);
    - ``video_index``: the video's position in the file;
    - ``captions`` / ``caption_indices``: training, one caption and its global id;
      evaluation (``test_mode=True``), all of the video's captions and their ids;
    - ``start_index=0`` and ``modality='RGB'``, which mmaction2's ``UniformSample`` and
      ``Resize`` read.

    Frame sampling: ``UniformSample(clip_len)`` splits frames ``0..n-1`` into
    ``clip_len`` equal segments. In training it draws a random frame from each segment
    (both ends included); in test mode it takes each segment's rounded start plus
    ``int(segment / 2)`` for ``num_clips=1``. A video with fewer than ``clip_len``
    frames gets repeated frames (a 5-frame video gives 0,0,1,1,1,2,2,2,3,3,3,4 in test
    mode), so every item has exactly ``clip_len * num_clips`` frames in time order.

    Attributes ``videos`` (file names, as in the annotation), ``captions`` (all
    captions by global id) and ``caption_to_video`` (LongTensor: video index of each
    caption) describe the whole file, for the metric and for tools.

    Args:
        ann_file: Annotation JSON path, relative to ``data_root`` unless absolute.
        pipeline: Transforms (config dicts are built from mmaction2's registry, so
            the dataset works without a default scope).
        data_root: Root of the annotation and the videos.
        data_prefix: ``dict(video=...)``: folder of the videos under ``data_root``.
        test_mode: ``True`` for evaluation (one item per video).
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset`.
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: Sequence[Union[dict, Callable]],
                 data_root: str = '',
                 data_prefix: Optional[Dict[str, str]] = None,
                 test_mode: bool = False,
                 **kwargs) -> None:
        data_prefix = dict(video='') if data_prefix is None else dict(data_prefix)
        if 'video' not in data_prefix:
            raise KeyError(f"data_prefix needs a 'video' entry, got {data_prefix}")
        self._videos: List[str] = []
        self._captions: List[str] = []
        self._caption_to_video = torch.zeros(0, dtype=torch.long)
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
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
        videos: List[str] = []
        captions: List[str] = []
        caption_to_video: List[int] = []
        data_list: List[dict] = []
        for video_index, (video, video_captions) in enumerate(annotation.items()):
            filename = osp.join(self.data_prefix['video'], video)
            first_id = len(captions)
            ids = list(range(first_id, first_id + len(video_captions)))
            videos.append(video)
            captions.extend(video_captions)
            caption_to_video.extend([video_index] * len(video_captions))
            common = dict(
                filename=filename, video_index=video_index, start_index=0, modality='RGB')
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
        self._metainfo.update(num_videos=len(videos), num_captions=len(captions))
        return data_list

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
