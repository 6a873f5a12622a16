"""Shared test helpers: a tiny CLIP geometry with ViT-B/32's 12 x 50 token layout, the
video-text pipeline and a small generated synthetic dataset."""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from mmengine.registry import DefaultScope

import projects.tempme  # noqa: F401  (compatibility fixes + registration)

#: 112 px frames with 16 px patches: 7 x 7 patches + CLS = 50 tokens, like ViT-B/32.
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=112, patch_size=16, width=64, layers=12, head_width=32),
    text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
)


@pytest.fixture
def tiny_clip():
    return dict(arch=TINY_CLIP)


@pytest.fixture(autouse=True)
def mmaction_scope():
    """Build from mmaction's registries, whatever scope an earlier Runner left behind."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        yield


def write_circle_video(path, colour, frames: int = 16, size=(80, 64)) -> None:
    """A small mp4 of a ``colour`` (BGR) disc moving right, for search and index tests."""
    import cv2
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, size)
    for k in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.circle(img, (10 + 3 * k, 32), 9, colour, -1)
        writer.write(img)
    writer.release()


def video_text_pipeline(test_mode: bool, size: int = 32, context: int = 32) -> List[dict]:
    """The configs' reference pipeline at a small frame size, without the training
    RandAugment (the frames of the generated videos encode their index in their colour).
    The reference picks the same frames in both modes; ``test_mode`` is kept for callers."""
    del test_mode
    return [
        dict(type='DecordInit'),
        dict(type='FpsGridSample', clip_len=12, frame_rate=1),
        dict(type='DecordDecode'),
        dict(type='PILResizeCenterCrop', size=size),
        dict(type='OpenCLIPTokenize', context_length=context),
        dict(type='PackVideoTextInputs'),
    ]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """A few synthetic videos per split, written by tools/data/make_synthetic.py."""
    root_dir = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp('synthetic')
    subprocess.run([sys.executable, 'tools/data/make_synthetic.py', '--out', str(root),
                    '--num-train', '8', '--num-val', '4', '--num-test', '4', '--seed', '3'],
                   cwd=root_dir, env=dict(os.environ, PYTHONPATH=str(root_dir)),
                   capture_output=True, check=True, timeout=600)
    return root
