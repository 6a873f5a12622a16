"""Long videos made of the synthetic benchmark's scenes, with each scene's caption and time.

A long video plays ``segments`` scenes of the benchmark one after the other (12 frames at
1 fps each by default: 12 s, the model's clip), so a search for a scene's caption has one
right answer: that scene's seconds of that video. Scenes are drawn as an evaluation split
is (``unique_captions``: no caption text describes two scenes) and without order twins,
so every caption names exactly one moment. numpy and OpenCV only.
"""
import json
import os
from typing import Dict, List

import numpy as np

from . import synthetic


def long_video_scenes(seed: int, videos: int, segments: int = 5, frames: int = 12,
                      size: int = 56) -> List[List[synthetic.Video]]:
    """``videos`` lists of ``segments`` scenes, all captions distinct."""
    rng = np.random.default_rng(seed)
    scenes = synthetic.sample_split(rng, videos * segments, prefix='scene', frames=frames,
                                    size=size, captions_per_video=1, twin_fraction=0.0,
                                    unique_captions=True)
    return [scenes[v * segments:(v + 1) * segments] for v in range(videos)]


def write_long_videos(out_dir: str, seed: int = 0, videos: int = 1, segments: int = 5,
                      frames: int = 12, size: int = 56, fps: float = 1.0) -> List[Dict]:
    """Write ``long_<i>.mp4`` under ``out_dir`` and ``moments.json``; returns its entries:
    ``{"file", "duration", "segments": [{"caption", "start", "end"}]}`` (seconds)."""
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for v, scenes in enumerate(long_video_scenes(seed, videos, segments, frames, size)):
        path = os.path.join(out_dir, f'long_{v:03d}.mp4')
        clips = [synthetic.render_scene(scene.scene, size) for scene in scenes]
        synthetic.write_video(path, np.concatenate(clips), fps)
        starts = np.cumsum([0] + [len(c) for c in clips])
        entries.append(dict(file=os.path.abspath(path), duration=float(starts[-1] / fps),
                            segments=[dict(caption=scene.captions[0].text,
                                           start=float(starts[i] / fps),
                                           end=float(starts[i + 1] / fps))
                                      for i, scene in enumerate(scenes)]))
    with open(os.path.join(out_dir, 'moments.json'), 'w') as f:
        json.dump(entries, f, indent=1)
    return entries
