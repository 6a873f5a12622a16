"""Decoded frames stored once, read in place of the video: the reference protocol is fixed.

TempMe decodes the same ``clip_len`` frames of a video in every epoch (the 1 fps grid rule
has no randomness; RandAugment comes after decoding). A training cache keeps those frames
as they come out of decord, at the video's own resolution, so that RandAugment and the
resize still run per item on exactly the pixels the video would give. An evaluation clip
has no randomness at all: a cache with ``size`` set keeps it resized and cropped already
(the pipeline's resize then has nothing left to do). Layout of a cache folder::

    cache.json     the rule (clip_len, frame_rate, size, interpolation) and, per video,
                   the source file's size and mtime, its frame indices and shape
    <video>.npy    uint8 (clip_len, H, W, 3), named by the annotation's key

``tools/data/cache_frames.py`` writes it by running the very transforms the cache stands
in for (resumable, one ``.npy`` per video written atomically); :class:`LoadCachedFrames`
reads it and refuses, naming the file, a cache made for another frame rule, a video that
is not in it, or a source that changed since.
"""
import json
import os
import os.path as osp
import posixpath
import sys
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from tqdm import tqdm

from ...tempme_deploy.fileio import atomic_write, resolves_inside
from .resize import PILResizeCenterCrop
from .video_check import resolve_video_path

CACHE_FORMAT = 'tempme-frame-cache'
CACHE_VERSION = 1
MANIFEST = 'cache.json'


class FrameCacheError(RuntimeError):
    """A frame cache that cannot serve this config or this video."""


def source_fingerprint(path: str) -> Dict[str, int]:
    """Size and modification time of a video: a changed file invalidates its frames."""
    stat = os.stat(path)
    return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def cache_entry_path(cache_root: str, relative: str) -> str:
    """``<cache_root>/<key>.npy``; a key that would leave the cache folder (absolute, ``..``)
    is refused, so writing a cache never touches a file outside it."""
    normalized = posixpath.normpath(str(relative).replace('\\', '/'))
    if osp.isabs(relative) or normalized.startswith(('/', '../')) or normalized in ('.', '..'):
        raise FrameCacheError(f'video key {relative!r} would be cached outside the frame cache '
                              f'{cache_root!r}; annotation keys must be paths relative to '
                              'the video folder')
    return osp.join(cache_root, normalized + '.npy')


def check_entry(entry: object, rule: dict, where: str) -> dict:
    """A manifest entry that can serve ``rule``, or :class:`FrameCacheError` naming the field.

    The manifest is a file: a hand-edited or damaged one must not serve 5 frames to a
    12-frame model, or indices that are not numbers.
    """
    def refuse(field: str, why: str) -> FrameCacheError:
        return FrameCacheError(f'{where}.{field}: {why}; rebuild the cache with '
                               'tools/data/cache_frames.py')

    if not isinstance(entry, dict):
        raise FrameCacheError(f'{where}: not an object; rebuild the cache')
    clip_len = rule['clip_len']
    for field in ('size', 'mtime_ns', 'num_frames'):
        if not isinstance(entry.get(field), int) or isinstance(entry.get(field), bool) \
                or entry[field] < 0:
            raise refuse(field, f'{entry.get(field)!r} is not a non-negative integer')
    frames = entry.get('frames')
    if not isinstance(frames, list) or len(frames) != clip_len or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < entry['num_frames']
            for i in frames):
        raise refuse('frames', f'expected {clip_len} frame indices in [0, num_frames='
                     f'{entry["num_frames"]}), got {frames!r:.80}')
    shape = entry.get('shape')
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape) \
            or shape[0] != clip_len or shape[3] != 3:
        raise refuse('shape', f'expected [{clip_len}, H, W, 3], got {shape!r:.80}')
    if rule['size'] is not None and shape[1:3] != [rule['size']] * 2:
        raise refuse('shape', f'{shape} is not {rule["size"]} x {rule["size"]} frames')
    fps = entry.get('fps')
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps < 1e4:
        raise refuse('fps', f'{fps!r} is not a frame rate')
    return entry


def reference_clip(path: str, rule: dict) -> Dict:
    """The pipeline's results for one video after the steps a cache with ``rule`` stands
    in for: mmaction2's ``DecordInit`` and ``DecordDecode`` around :class:`FpsGridSample`,
    then, for an evaluation cache, :class:`PILResizeCenterCrop`. The writer runs these
    transforms themselves, so the cache holds what the pipeline would compute."""
    steps = [dict(type='DecordInit'),
             dict(type='FpsGridSample', clip_len=rule['clip_len'], frame_rate=rule['frame_rate']),
             dict(type='DecordDecode')]
    if rule['size'] is not None:
        steps.append(dict(type='PILResizeCenterCrop', size=rule['size'],
                          interpolation=rule['interpolation']))
    results = dict(filename=path, start_index=0, modality='RGB')
    for step in steps:
        results = TRANSFORMS.build(step)(results)
    frames = np.stack(results['imgs'])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f'{path}: decodes to {frames.dtype} frames of shape {frames.shape}, '
                         'not uint8 (T, H, W, 3)')
    results['imgs'] = frames
    return results


def read_manifest(cache_root: str) -> dict:
    path = osp.join(cache_root, MANIFEST)
    if not osp.isfile(path):
        raise FrameCacheError(f'no frame cache in {cache_root!r} (no {MANIFEST}); build it '
                              'with tools/data/cache_frames.py CONFIG')
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except ValueError as err:
        raise FrameCacheError(f'{path}: unreadable ({err}); rebuild the cache') from None
    if manifest.get('format') != CACHE_FORMAT or manifest.get('version') != CACHE_VERSION:
        raise FrameCacheError(f'{path}: not a {CACHE_FORMAT} of version {CACHE_VERSION}')
    return manifest


# -- writing ---------------------------------------------------------------------------------
def _quiet_worker() -> None:
    """A decoding process keeps mmengine's file-backend notices off the console, as the
    tool that started it does."""
    from ..console import quiet_console
    quiet_console()


def _cache_one(job: Tuple[str, str, str, dict]) -> Tuple[str, Optional[dict], str]:
    """Decode one video and write its frames; ``(key, manifest entry or None, error)``."""
    key, path, cache_root, rule = job
    try:
        fingerprint = source_fingerprint(path)
        clip = reference_clip(path, rule)
        frames = clip['imgs']
        target = cache_entry_path(cache_root, key)

        def write(tmp: str) -> None:
            with open(tmp, 'wb') as f:
                np.save(f, np.ascontiguousarray(frames), allow_pickle=False)

        atomic_write(target, write)
        return key, dict(fingerprint, frames=[int(i) for i in clip['frame_inds']],
                         shape=list(frames.shape), fps=float(clip['avg_fps']),
                         num_frames=int(clip['total_frames'])), ''
    except Exception as err:  # noqa: BLE001 - reported by path, the others go on
        return key, None, f'{type(err).__name__}: {err}'


def cache_rule(clip_len: int, frame_rate: float, size: Optional[int] = None,
               interpolation: str = 'bicubic') -> dict:
    """What a cache holds: ``clip_len`` frames by the ``frame_rate`` grid rule, resized and
    centre-cropped to ``size`` with ``interpolation`` (evaluation) or as decoded
    (``size=None``: training)."""
    if size is None:
        return dict(clip_len=int(clip_len), frame_rate=float(frame_rate), size=None,
                    interpolation=None)
    return dict(clip_len=int(clip_len), frame_rate=float(frame_rate), size=int(size),
                interpolation=interpolation)


def _source_unchanged(entry: dict, path: str) -> bool:
    """The source file still has the size and mtime it had when it was cached."""
    now = source_fingerprint(path)
    return (now['size'], now['mtime_ns']) == (entry['size'], entry['mtime_ns'])


def _describe(rule: dict) -> str:
    return ', '.join(f'{k}={v}' for k, v in rule.items())


def _save_manifest(cache_root: str, rule: dict, entries: Dict[str, dict]) -> None:
    """Write the manifest atomically: the rule and every cached video."""
    manifest = dict(format=CACHE_FORMAT, version=CACHE_VERSION, **rule, decoder='decord',
                    videos=entries)
    text = json.dumps(manifest)
    atomic_write(osp.join(cache_root, MANIFEST), lambda tmp: Path(tmp).write_text(text))


def update_cache(cache_root: str, videos: Sequence[Tuple[str, str]], rule: dict,
                 workers: int = 1, save_every: int = 200,
                 progress: bool = True) -> Dict[str, int]:
    """Bring a frame cache up to date for ``(video key, source path)`` pairs.

    ``rule``: :func:`cache_rule`. Resumable: entries whose ``.npy`` exists and whose source
    is unchanged are kept; a cache made for another rule is discarded. Returns counts
    (``videos``, ``cached``, ``unchanged``, ``failed``, ``bytes``); failures are reported by
    path.
    """
    root = cache_root
    for key, _ in videos:  # every key stays inside the cache, checked before any work
        cache_entry_path(root, key)
    entries: Dict[str, dict] = {}
    if osp.isfile(osp.join(root, MANIFEST)):
        try:
            manifest = read_manifest(root)
        except FrameCacheError as err:
            print(f'{err}: starting a new cache', file=sys.stderr)
            manifest = {}
        held = {key: manifest.get(key) for key in rule}
        if held == rule:
            entries = manifest['videos']
        elif manifest:
            print(f'{root}: made for {_describe(held)}; re-caching for {_describe(rule)}',
                  file=sys.stderr)
    todo, paths = [], dict(videos)
    for key, path in videos:
        entry = entries.get(key)
        fresh = entry is not None and osp.isfile(cache_entry_path(root, key)) and \
            osp.isfile(path) and _source_unchanged(entry, path)
        if not fresh:
            entries.pop(key, None)
            todo.append((key, path, root, rule))
    os.makedirs(root, exist_ok=True)
    stats = dict(videos=len(videos), cached=0, unchanged=len(videos) - len(todo), failed=0)
    pool = get_context('spawn').Pool(workers, initializer=_quiet_worker) if workers > 1 \
        else None
    results = pool.imap_unordered(_cache_one, todo) if pool else map(_cache_one, todo)
    since_save = 0
    try:
        for key, entry, error in tqdm(results, total=len(todo), unit='video', desc='caching',
                                      disable=not progress, file=sys.stderr):
            if entry is None:
                stats['failed'] += 1
                tqdm.write(f'skipped {paths[key]}: {error}', file=sys.stderr)
                continue
            entries[key] = entry
            stats['cached'] += 1
            since_save += 1
            if since_save >= save_every:
                _save_manifest(root, rule, entries)
                since_save = 0
    finally:
        if pool:
            pool.terminate()
        _save_manifest(root, rule, entries)
    stats['bytes'] = sum(int(np.prod(e['shape'])) for e in entries.values())
    return stats


# -- reading ---------------------------------------------------------------------------------


@TRANSFORMS.register_module()
class LoadCachedFrames(BaseTransform):
    """Read a video's reference frames from a frame cache (replaces DecordInit, the frame
    sampler and DecordDecode; the rest of the pipeline is unchanged).

    Entries are found by the annotation's video key (``results['video']``, set by
    :class:`VideoTextRetrievalDataset`), so moving the videos does not orphan the cache.

    Args:
        cache_root: The cache folder (``tools/data/cache_frames.py`` writes it). ``None``
            (default): the dataset's ``data_prefix['frame_cache']`` under its
            ``data_root`` (``results['frame_cache']``), so the cache follows ``data_root``.
        clip_len: Frames per clip; must be what the cache was built with.
        frame_rate: Grid positions per second; must be what the cache was built with.
        size: Frames stored already resized and centre-cropped to this size (evaluation
            caches), or ``None`` for frames as decoded (training caches, which RandAugment
            needs); must be what the cache was built with.
        interpolation: The resize's interpolation when ``size`` is set (the pipeline's
            ``PILResizeCenterCrop`` must use the same: :func:`check_cached_resize`).
        check_source: Refuse a video whose file changed (size or mtime) since caching.
    """

    def __init__(self, cache_root: Optional[str] = None, clip_len: int = 12,
                 frame_rate: float = 1.0, size: Optional[int] = None,
                 interpolation: str = 'bicubic', check_source: bool = True) -> None:
        self.cache_root = cache_root
        self.clip_len = clip_len
        self.rule = cache_rule(clip_len, frame_rate, size, interpolation)
        self.num_clips = 1
        self.check_source = check_source
        self._manifests: Dict[str, Dict[str, dict]] = {}

    def _videos_in(self, root: str) -> Dict[str, dict]:
        """The manifest's videos of the cache in ``root``, checked against the rule once."""
        if root not in self._manifests:
            manifest = read_manifest(root)
            held = {key: manifest.get(key) for key in self.rule}
            if held != self.rule:
                raise FrameCacheError(
                    f'the frame cache in {root!r} holds {_describe(held)}, the config asks '
                    f'for {_describe(self.rule)}: rebuild it with tools/data/cache_frames.py')
            videos = manifest.get('videos')
            if not isinstance(videos, dict):
                raise FrameCacheError(f'{osp.join(root, MANIFEST)}: videos is not an object; '
                                      'rebuild the cache')
            where = osp.join(root, MANIFEST)
            self._manifests[root] = {key: check_entry(entry, self.rule, f'{where}: {key}')
                                     for key, entry in videos.items()}
        return self._manifests[root]

    def transform(self, results: Dict) -> Dict:
        if 'video' not in results:
            raise KeyError("LoadCachedFrames needs results['video'] (the annotation's video "
                           'key, set by VideoTextRetrievalDataset)')
        root = self.cache_root or results.get('frame_cache')
        if root is None:
            raise KeyError("LoadCachedFrames has no cache_root and the dataset no "
                           "data_prefix['frame_cache']: set one of them")
        filename, relative = results['filename'], results['video']
        entry = self._videos_in(root).get(relative)
        if entry is None:
            raise FrameCacheError(f'{filename} is not in the frame cache {root!r}; '
                                  'run tools/data/cache_frames.py for this split')
        source = resolve_video_path(filename)  # the file that was cached (bare keys: .mp4)
        if self.check_source and osp.exists(source) and not _source_unchanged(entry, source):
            raise FrameCacheError(f'{filename} changed since it was cached; run '
                                  'tools/data/cache_frames.py again')
        path = cache_entry_path(root, relative)
        if osp.lexists(path) and not resolves_inside(path, root):
            raise FrameCacheError(f'{path}: a symlink that leads outside the frame cache '
                                  f'{root!r}; refusing to read it')
        try:
            frames = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise FrameCacheError(f'{path}: cannot read cached frames ({err}); run '
                                  'tools/data/cache_frames.py again') from None
        if frames.dtype != np.uint8 or frames.shape != tuple(entry['shape']):
            raise FrameCacheError(f'{path}: holds {frames.dtype} {frames.shape}, the manifest '
                                  f'says uint8 {tuple(entry["shape"])}; rebuild the cache')
        results['imgs'] = list(frames)
        results['frame_inds'] = np.asarray(entry['frames'])
        results['total_frames'] = entry['num_frames']
        results['avg_fps'] = entry['fps']
        results['original_shape'] = results['img_shape'] = frames.shape[1:3]
        results['clip_len'], results['num_clips'] = self.clip_len, 1
        return results

    def __repr__(self) -> str:
        where = repr(self.cache_root) if self.cache_root else "data_prefix['frame_cache']"
        return f'{self.__class__.__name__}(cache_root={where}, {_describe(self.rule)})'


def check_cached_resize(pipeline: Sequence) -> None:
    """Refuse a pipeline whose resize differs from the one its evaluation cache applied.

    Frames from a cache built with ``size`` are final clips: a later
    :class:`PILResizeCenterCrop` of that size finds nothing to do, so one configured with
    another size or interpolation would silently not be applied.
    """
    cached = None
    for step in pipeline:
        if isinstance(step, LoadCachedFrames) and step.rule['size'] is not None:
            cached = step
        elif cached is not None and isinstance(step, PILResizeCenterCrop):
            wanted = dict(size=step.size, interpolation=step.interpolation)
            held = {key: cached.rule[key] for key in wanted}
            if held != wanted:
                raise ValueError(
                    f'the pipeline resizes with {_describe(wanted)} after {cached!r}, whose '
                    f'frames were resized with {_describe(held)}: give LoadCachedFrames the '
                    'resize\'s size and interpolation (and rebuild the cache)')
