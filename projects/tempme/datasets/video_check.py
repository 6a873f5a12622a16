"""Cheap checks that video files decode, run before any training step.

A missing, empty, truncated or non-video file otherwise crashes a dataloader worker
hours into a run. Probing opens each file with decord and decodes only its first and
last frame (about 10-20 ms for a 15 s clip, against ~0.4 s to decode it all), which
finds those files without reading whole videos. Damage in the middle of a file can
still pass the probe; the dataset handles that when it loads the item.

Pure functions, no mmengine: the dataset and ``tools/analysis/check_dataset.py`` add
logging, progress bars and the distributed glue.
"""
import io
import os
import os.path as osp
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence

__all__ = ['VIDEO_EXTENSIONS', 'VideoProbe', 'resolve_video_path', 'probe_video',
           'probe_videos', 'shard', 'unshard']

#: The project's one list of video file extensions (dataset converters, search index,
#: compression tool), in the order preferred when one video exists in several formats.
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v', '.mpg', '.mpeg',
                    '.3gp', '.3g2', '.wmv', '.flv', '.ogv', '.mts', '.m2ts')


class VideoProbe(NamedTuple):
    """What the probe found: ``reason`` is ``None`` for a readable video."""

    path: str
    num_frames: int
    reason: Optional[str]

    @property
    def ok(self) -> bool:
        return self.reason is None


def resolve_video_path(filename: str) -> str:
    """The file mmaction2's ``DecordInit`` opens: ``.mp4`` is appended to a bare name."""
    return filename + '.mp4' if osp.splitext(filename)[0] == filename else filename


# decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: ".
_DECORD_PREFIX = re.compile(r'^\[[0-9:]+\] \S+:\d+: ')


def _short_error(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = _DECORD_PREFIX.sub('', lines[-1] if lines else '')
    text = _DECORD_PREFIX.sub('', text)  # nested "Check failed" messages repeat it
    if text.startswith('Error reading ') and text.endswith('...'):
        text = 'decord cannot open it'  # its message only repeats the path
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


def _is_remote(path: str) -> bool:
    return '://' in path and not path.startswith('file://')


def probe_video(filename: str) -> VideoProbe:
    """Open ``filename`` as ``DecordInit`` would and decode its first and last frame.

    Never raises for a bad file: the reason is returned, so that one pass can report
    every bad video instead of stopping at the first.
    """
    import decord

    path = resolve_video_path(filename)
    try:
        if _is_remote(path):
            from mmengine.fileio import exists, get
            if not exists(path):
                return VideoProbe(path, 0, 'file not found')
            data = get(path)
            if not data:
                return VideoProbe(path, 0, 'empty file (0 bytes)')
            source = io.BytesIO(data)
        else:
            path = path[len('file://'):] if path.startswith('file://') else path
            if not osp.isfile(path):
                return VideoProbe(path, 0, 'file not found' if not osp.exists(path)
                                  else 'not a regular file')
            if os.path.getsize(path) == 0:
                return VideoProbe(path, 0, 'empty file (0 bytes)')
            source = path
    except OSError as err:
        return VideoProbe(path, 0, f'cannot be read: {_short_error(err)}')

    try:
        reader = decord.VideoReader(source, num_threads=1)
    except Exception as err:  # decord raises RuntimeError / DECORDError
        return VideoProbe(path, 0, 'cannot be opened as a video (truncated, or not a video '
                          f'file): {_short_error(err)}')
    num_frames = len(reader)
    if num_frames <= 0:
        return VideoProbe(path, 0, 'the video has no frames')
    for index, name in ((0, 'first'), (num_frames - 1, 'last')):
        try:
            frame = reader[index].asnumpy()
        except Exception as err:
            return VideoProbe(
                path, num_frames,
                f'{name} frame ({index} of {num_frames}) does not decode; the file is '
                f'probably truncated ({_short_error(err)})')
        if frame.ndim != 3 or frame.shape[-1] != 3:
            # decord 0.6 returns 6 channels for some tiny videos (e.g. 16x16 mp4), which
            # its batch decoding (DecordDecode) then rejects
            return VideoProbe(
                path, num_frames,
                f'decodes to frames of shape {frame.shape}, not (H, W, 3) RGB; re-encode it '
                '(e.g. at 32x32 or larger)')
    return VideoProbe(path, num_frames, None)


@contextmanager
def _quiet_decord() -> Iterator[None]:
    """Silence FFmpeg's stderr chatter ("moov atom not found") while probing."""
    import decord.logging as decord_logging
    decord_logging.set_level(decord_logging.QUIET)
    try:
        yield
    finally:
        decord_logging.set_level(decord_logging.ERROR)


def probe_videos(filenames: Sequence[str],
                 num_threads: int = 4,
                 on_done: Optional[Callable[[VideoProbe], None]] = None) -> List[VideoProbe]:
    """Probe every file, ``num_threads`` at a time; results in the order of ``filenames``.

    decord releases the GIL while it reads and decodes, so threads overlap the I/O and
    the decoding. ``on_done`` is called once per file as it finishes (progress bars).
    """
    if num_threads < 1:
        raise ValueError(f'num_threads must be >= 1, got {num_threads}')

    def run(filename: str) -> VideoProbe:
        result = probe_video(filename)
        if on_done is not None:
            on_done(result)
        return result

    with _quiet_decord():
        if num_threads == 1 or len(filenames) <= 1:
            return [run(f) for f in filenames]
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            return list(pool.map(run, filenames))


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The items rank ``rank`` of ``world_size`` probes: every ``world_size``-th one."""
    if not 0 <= rank < world_size:
        raise ValueError(f'rank must lie in [0, {world_size}), got {rank}')
    return list(items[rank::world_size])


def unshard(parts: Sequence[Sequence], total: int) -> list:
    """Inverse of :func:`shard` over all ranks' parts (``parts[r]`` from rank ``r``)."""
    world_size = len(parts)
    merged: list = [None] * total
    for rank, part in enumerate(parts):
        expected = len(range(rank, total, world_size))
        if len(part) != expected:
            raise ValueError(
                f'rank {rank} returned {len(part)} results, expected {expected}')
        merged[rank::world_size] = list(part)
    return merged
