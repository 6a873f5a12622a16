"""The published TempMe data protocol: frame rule, PIL resize, clip-level RandAugment, and the
fixture recorded by running the published loader (tests/data/reference_pipeline.pt)."""
import random
from pathlib import Path

import numpy as np
import pytest
from mmaction.registry import TRANSFORMS
from mmengine.config import Config
from PIL import Image
from torchvision import transforms as T

from projects.tempme.datasets import (ClipRandAugment, FpsGridSample, PILResizeCenterCrop,
                                      grid_frame_indices)
from tools.analysis import check_pipeline

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'tests/data/reference_pipeline.pt'
VIDEOS = ROOT / 'tests/data/videos'


def test_config_pipeline_matches_the_published_loader_on_the_fixture(capsys) -> None:
    code = check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt.py'), str(FIXTURE),
                                '--videos', str(VIDEOS), '--split', 'all'])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count('same    0.000      0  ok') == 6  # 3 videos x (test, train)
    assert out.strip().endswith('MATCH')


def test_check_pipeline_fails_on_the_mmaction_sampling_config(capsys) -> None:
    code = check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt_uniform_sampling.py'),
                                str(FIXTURE), '--videos', str(VIDEOS)])
    out = capsys.readouterr().out
    assert code == 1
    assert 'frames [19, 59, 99, 139' in out and out.count('MISMATCH:') == 3


def test_check_pipeline_names_a_missing_video(tmp_path, capsys) -> None:
    code = check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt.py'), str(FIXTURE),
                                '--videos', str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and out.count('ERROR') == 3 and 'long_30fps_320x240.mp4' in out


def test_own_videos_are_checked_and_saved_as_a_fixture(tmp_path, capsys) -> None:
    saved = tmp_path / 'mine.pt'
    assert check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt.py'), '--videos',
                                str(VIDEOS), '--save', str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.count('(12, 3, 224, 224)  ok') == 3
    # the saved record compares equal with the reference fixture and with itself
    assert check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt.py'), str(saved),
                                '--videos', str(VIDEOS)]) == 0
    # a config whose clip the model cannot take is reported
    assert check_pipeline.main([str(ROOT / 'configs/tempme_msrvtt.py'), '--videos', str(VIDEOS),
                                '--cfg-options', 'model.video_encoder.num_frames=8']) == 1
    assert 'the model takes (8, 3, 224, 224)' in capsys.readouterr().out


# -- the frame rule ------------------------------------------------------------------------
def _reference_rule(num_frames: int, fps: float, clip_len: int) -> list:
    """The rule as the published loader states it (video_framerate=1, whole video)."""
    positions = list(range(0, num_frames - 1 + 1, int(round(float(fps) / 1))))
    if len(positions) > clip_len:
        return [positions[i] for i in np.linspace(0, len(positions) - 1, clip_len, dtype=int)]
    if len(positions) == clip_len:
        return positions
    return list(np.linspace(0, num_frames - 1, clip_len, dtype=int))


@pytest.mark.parametrize('num_frames,fps,clip_len,branch', [
    (480, 30.0, 12, 'more'),  # 16 positions: 12 of them by linspace
    (360, 30.0, 12, 'exact'),  # 12 positions: all
    (175, 25.0, 12, 'fewer'),  # 7 positions: linspace over every frame
    (402, 29.97, 12, 'more'),
    (5, 10.0, 12, 'fewer'),  # shorter than the clip: repeated frames
    (1, 30.0, 12, 'fewer'),
    (3000, 24.0, 64, 'more'),  # the paragraph datasets' 64 frames
    (64 * 25, 25.0, 64, 'exact'),
])
def test_frame_rule_branches(num_frames, fps, clip_len, branch) -> None:
    indices = grid_frame_indices(num_frames, fps, clip_len)
    assert indices.tolist() == [int(i) for i in _reference_rule(num_frames, fps, clip_len)]
    assert len(indices) == clip_len and list(indices) == sorted(indices)
    grid = set(range(0, num_frames, int(round(fps))))
    on_grid = set(indices.tolist()) <= grid
    positions = len(grid)
    assert {'more': positions > clip_len, 'exact': positions == clip_len,
            'fewer': positions < clip_len}[branch]
    if branch != 'fewer':
        assert on_grid
    else:
        assert indices[0] == 0 and indices[-1] == num_frames - 1


def test_frame_rule_short_video_repeats_in_order() -> None:
    assert grid_frame_indices(5, 10.0, 12).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert grid_frame_indices(1, 30.0, 12).tolist() == [0] * 12


def test_frame_rule_edge_cases() -> None:
    # a frame rate below 0.5 fps, or none, steps one frame at a time instead of crashing
    assert grid_frame_indices(30, 0.2, 12).tolist() == grid_frame_indices(30, 1.0, 12).tolist()
    assert grid_frame_indices(30, float('nan'), 12).tolist() == \
        [0, 2, 5, 7, 10, 13, 15, 18, 21, 23, 26, 29]
    with pytest.raises(ValueError, match='no frames'):
        grid_frame_indices(0, 30.0, 12)
    with pytest.raises(ValueError, match='clip_len'):
        FpsGridSample(clip_len=0)
    with pytest.raises(KeyError, match='DecordInit'):
        FpsGridSample()(dict(total_frames=10))


def test_sampler_writes_what_decord_decode_reads() -> None:
    results = FpsGridSample(clip_len=12)(dict(total_frames=480, avg_fps=30.0))
    assert results['frame_inds'].tolist() == [0, 30, 60, 120, 150, 180, 240, 270, 300, 360,
                                              390, 450]
    assert results['clip_len'] == 12 and results['num_clips'] == 1
    assert TRANSFORMS.get('FpsGridSample') is FpsGridSample


# -- resize ---------------------------------------------------------------------------------
@pytest.mark.parametrize('height,width', [(240, 320), (320, 240), (144, 176), (150, 297),
                                          (224, 224), (100, 391), (481, 225), (224, 298),
                                          (298, 224), (224, 299), (301, 224), (224, 225)])
def test_resize_equals_the_reference_torchvision_composition(height, width) -> None:
    rng = np.random.default_rng(height * width)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
    reference = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                           T.CenterCrop(224)])
    out = PILResizeCenterCrop(224)(dict(imgs=frames))
    for ours, frame in zip(out['imgs'], frames):
        assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
        assert np.array_equal(ours, np.asarray(reference(Image.fromarray(frame))))
    assert out['img_shape'] == (224, 224)


# -- RandAugment ------------------------------------------------------------------------------
def _clip(seed: int = 0, identical: bool = False):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    first[:, :32] = 30  # structure for the geometric and contrast operations
    return [first.copy() if identical else rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for _ in range(12)]


def _augment(frames, seed: int):
    random.seed(seed)
    np.random.seed(seed)
    return ClipRandAugment()(dict(imgs=list(frames)))['imgs']


def test_randaugment_draws_once_per_clip() -> None:
    frames = _clip(identical=True)
    changed = 0
    for seed in range(20):
        out = _augment(frames, seed)
        assert all(f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in out)
        assert all(np.array_equal(out[0], f) for f in out[1:]), seed
        changed += not np.array_equal(out[0], frames[0])
    assert changed >= 15  # four operations at p=0.5: nearly every clip changes


def test_randaugment_seeds_give_different_clips_and_repeat() -> None:
    frames = _clip()
    a, b, again = _augment(frames, 1), _augment(frames, 2), _augment(frames, 1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a, again))


def test_randaugment_uses_the_reference_policy() -> None:
    augment = ClipRandAugment()
    names = sorted(op.name for op in augment.policy.ops)
    assert len(names) == 15 and 'PosterizeIncreasing' in names and 'TranslateXRel' in names
    assert augment.policy.num_layers == 4
    assert {op.magnitude for op in augment.policy.ops} == {7}
    assert {op.magnitude_std for op in augment.policy.ops} == {0.5}
    assert {op.kwargs['resample'] for op in augment.policy.ops} == {Image.BICUBIC}
    with pytest.raises(ValueError, match='RandAugment string'):
        ClipRandAugment(config='auto-v0')


# -- configs ---------------------------------------------------------------------------------
REFERENCE_CONFIGS = ['tempme_msrvtt.py', 'tempme_msrvtt_7k.py', 'tempme_msrvtt_vit_b16.py',
                     'lora_msrvtt.py', 'tome_msrvtt.py', 'clip4clip_msrvtt.py',
                     'clip4clip_tempme_msrvtt.py', 'tempme_msvd.py', 'tempme_lsmdc.py',
                     'tempme_didemo.py', 'tempme_activitynet.py', 'tempme_tiny.py']


@pytest.mark.parametrize('name', REFERENCE_CONFIGS)
def test_configs_use_the_reference_pipeline(name) -> None:
    cfg = Config.fromfile(ROOT / 'configs' / name)
    frames = cfg.model.video_encoder.num_frames
    for split in ('train', 'val', 'test'):
        types = [t['type'] for t in cfg[f'{split}_dataloader'].dataset.pipeline]
        expected = ['DecordInit', 'FpsGridSample', 'DecordDecode', 'PILResizeCenterCrop',
                    'OpenCLIPTokenize', 'PackVideoTextInputs']
        if split == 'train':
            expected.insert(3, 'ClipRandAugment')
        assert types == expected, (split, types)
        sampler = cfg[f'{split}_dataloader'].dataset.pipeline[1]
        assert sampler.clip_len == frames and sampler.frame_rate == 1
