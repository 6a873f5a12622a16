"""TempMe's frame rule: frames on a fixed-rate time grid, thinned uniformly to ``clip_len``.

The published TempMe loader (and CLIP4Clip's before it) does not split a video into
equal segments as mmaction2's ``UniformSample`` does. It first lays a grid of one frame
every ``round(fps / frame_rate)`` frames (one per second at ``frame_rate=1``), then:

- more grid positions than ``clip_len``: ``clip_len`` of them, picked by
  ``np.linspace(0, len(grid) - 1, clip_len, dtype=int)``;
- exactly ``clip_len``: all of them;
- fewer: ``np.linspace(0, num_frames - 1, clip_len, dtype=int)`` over all frames (a
  video shorter than ``clip_len`` frames gets repeated frames, in time order).

Training and evaluation pick the same frames: the reference has no temporal jitter.
"""
from typing import Dict

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform


def grid_frame_indices(num_frames: int, fps: float, clip_len: int,
                       frame_rate: float = 1.0) -> np.ndarray:
    """Indices of the ``clip_len`` frames the reference loader decodes from a video.

    Args:
        num_frames: Frames in the video (decord's ``len``).
        fps: The video's average frame rate (decord's ``get_avg_fps()``).
        clip_len: Frames per clip (12 for MSR-VTT, 64 for the paragraph datasets).
        frame_rate: Grid positions per second before thinning.

    A frame rate below ``frame_rate / 2`` (or a missing one) would give the reference a
    zero stride and a crash; the grid then steps one frame at a time.
    """
    if num_frames < 1:
        raise ValueError(f'the video has no frames (num_frames={num_frames})')
    if clip_len < 1:
        raise ValueError(f'clip_len must be >= 1, got {clip_len}')
    if not frame_rate > 0:
        raise ValueError(f'frame_rate must be > 0, got {frame_rate}')
    fps = float(fps) if np.isfinite(fps) else 0.0
    stride = max(1, int(round(fps / frame_rate)))
    grid = np.arange(0, num_frames, stride)
    if len(grid) > clip_len:
        return grid[np.linspace(0, len(grid) - 1, num=clip_len, dtype=int)]
    if len(grid) == clip_len:
        return grid
    return np.linspace(0, num_frames - 1, num=clip_len, dtype=int)


@TRANSFORMS.register_module()
class FpsGridSample(BaseTransform):
    """Pick ``clip_len`` frames by TempMe's rule (see the module docstring).

    Reads ``total_frames`` and ``avg_fps`` (set by ``DecordInit``); writes
    ``frame_inds``, ``clip_len``, ``num_clips=1`` and ``frame_interval=None`` like
    mmaction2's samplers, so ``DecordDecode`` and the dataset's checks work unchanged.

    Args:
        clip_len: Frames per clip; must equal the encoder's ``num_frames``.
        frame_rate: Grid positions per second (the reference's ``video_framerate``).
    """

    def __init__(self, clip_len: int = 12, frame_rate: float = 1.0) -> None:
        if clip_len < 1:
            raise ValueError(f'clip_len must be >= 1, got {clip_len}')
        if not frame_rate > 0:
            raise ValueError(f'frame_rate must be > 0, got {frame_rate}')
        self.clip_len = clip_len
        self.frame_rate = frame_rate
        self.num_clips = 1

    def transform(self, results: Dict) -> Dict:
        for key in ('total_frames', 'avg_fps'):
            if key not in results:
                raise KeyError(f"FpsGridSample needs results['{key}']; put DecordInit before it")
        results['frame_inds'] = grid_frame_indices(
            int(results['total_frames']), results['avg_fps'], self.clip_len, self.frame_rate)
        results['clip_len'] = self.clip_len
        results['frame_interval'] = None
        results['num_clips'] = 1
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(clip_len={self.clip_len}, '
                f'frame_rate={self.frame_rate})')
