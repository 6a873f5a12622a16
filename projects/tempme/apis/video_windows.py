"""Read the windows of a long video with a config's test pipeline, decoding it once.

The test pipeline reads one clip per file: an init step (``DecordInit``) opens the file,
a sampler picks the clip's frames (``FpsGridSample``: 12 on the 1 fps grid), a decode step
decodes them, and the rest resizes. For windows the same steps run per window, the
sampler on the window's frames alone, as if the window were the whole video; the file is
opened once, and the decode step reads through a frame cache, so frames shared by two
overlapping windows are decoded once and each window costs one batched seek for its new
frames. A video no longer than a window reads exactly as the plain pipeline reads it.
"""
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmaction.registry import TRANSFORMS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from projects.tempme_deploy.search.moments import Window, WindowSettings, plan_windows

from ..file_configs import checked_file_config
from .inference import frames_to_tensor, video_pipeline_config


class _Frames:
    """What ``decord``'s ``get_batch`` returns: something with ``asnumpy()``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def asnumpy(self) -> np.ndarray:
        return self.array


class CachedFrames:
    """A decoder's container seen from one window: indices relative to the window's first
    frame, frames decoded once per file and dropped when no later window needs them."""

    def __init__(self, container) -> None:
        self.container = container
        self.cache: Dict[int, np.ndarray] = {}
        self.offset, self.length = 0, len(container)
        self.decoded = 0  # frames decoded so far (each once)

    def view(self, window: Window) -> 'CachedFrames':
        self.offset, self.length = window.first, window.stop - window.first
        for index in [i for i in self.cache if i < window.first]:
            del self.cache[index]
        return self

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices: Sequence[int]) -> _Frames:
        wanted = [int(i) + self.offset for i in indices]
        missing = sorted(set(i for i in wanted if i not in self.cache))
        if missing:
            frames = self.container.get_batch(missing).asnumpy()
            self.decoded += len(missing)
            self.cache.update(zip(missing, frames))
        return _Frames(np.stack([self.cache[i] for i in wanted]))

    def __getattr__(self, name: str):
        return getattr(self.container, name)


def _split_pipeline(steps: List[dict]) -> Tuple[int, int]:
    """Positions of the init and decode steps of a video pipeline."""
    types = [str(step['type']) for step in steps]
    init = next((i for i, t in enumerate(types) if t.endswith('Init')), None)
    decode = next((i for i, t in enumerate(types) if t.endswith('Decode')), None)
    if init is None or decode is None or decode < init + 1:
        raise ValueError(f'windows need a video pipeline of an init step, a sampler and a '
                         f'decode step (e.g. DecordInit, FpsGridSample, DecordDecode), got '
                         f'{types}')
    return init, decode


def default_window(steps: List[dict], num_frames: int) -> WindowSettings:
    """The model's own clip as a window (``FpsGridSample``'s clip at its frame rate; else
    ``num_frames`` at 1 per second), a new one every half window."""
    sampler = next((s for s in steps if s['type'] == 'FpsGridSample'), {})
    frame_rate = float(sampler.get('frame_rate', 1.0))
    seconds = int(sampler.get('clip_len', num_frames)) / frame_rate
    stride = max(seconds / 2, 1 / frame_rate)
    return WindowSettings(seconds, stride, frame_rate)


class WindowReader:
    """Windows of a file as uint8 (T, 3, H, W) frames, with a config's test pipeline."""

    def __init__(self, cfg: Config) -> None:
        self.steps = video_pipeline_config(cfg)
        self.init_at, self.decode_at = _split_pipeline(self.steps)
        with DefaultScope.overwrite_default_scope('mmaction'):
            self.transforms = [TRANSFORMS.build(step) for step in self.steps]

    def open(self, path: str) -> Dict:
        results = dict(filename=path, start_index=0, modality='RGB')
        for transform in self.transforms[:self.init_at + 1]:
            results = transform(results)
        return results

    def probe(self, path: str) -> Tuple[int, float]:
        """(frames, fps) of a file, as the init step reads them; ``decord`` reads only the
        header when the pipeline uses it."""
        if self.steps[self.init_at]['type'] == 'DecordInit':
            import decord
            reader = decord.VideoReader(path, num_threads=1)
            return len(reader), float(reader.get_avg_fps())
        opened = self.open(path)
        return int(opened['total_frames']), float(opened['avg_fps'])

    def read(self, path: str, settings: WindowSettings, only: Optional[Sequence[int]] = None
             ) -> Iterator[Tuple[int, Window, torch.Tensor]]:
        """(window index, window, frames) for each window of the file, or for the indices
        in ``only`` (a rank's share), in time order."""
        opened = self.open(path)
        windows = plan_windows(int(opened['total_frames']), opened['avg_fps'], settings)
        wanted = range(len(windows)) if only is None else sorted(only)
        frames = CachedFrames(opened['video_reader'])
        for index in wanted:
            window = windows[index]
            results = dict(opened, total_frames=window.stop - window.first,
                           video_reader=frames.view(window))
            for transform in self.transforms[self.init_at + 1:]:
                results = transform(results)
            yield index, window, frames_to_tensor(results['imgs'], path)
        self.decoded = frames.decoded


def export_window_reader(info: Dict, export_dir: str) -> WindowReader:
    """A reader for the pipeline an export folder records (``info`` as ``OnnxRetriever`` read
    and schema-checked it), each step checked as file data."""
    source = os.path.join(export_dir, 'deploy.json')
    pipeline = checked_file_config(info['video_pipeline'], source, 'video_pipeline')
    return WindowReader(Config(dict(test_pipeline=pipeline)))
