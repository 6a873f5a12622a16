"""TempMeViT as the backbone of mmaction2's Recognizer3D: the recognition example config
trained, tested and used for inference end to end on generated videos."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config

import projects.tempme  # noqa: F401  (compatibility fixes + registration)
from projects.tempme.checkpoint import safe_checkpoint_loading
from projects.tempme.config_checks import (ConfigMismatchError, check_data_fits_model,
                                           model_input_geometry)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/recognition/tempme_vit_b32_k400.py'
NUM_CLASSES, FRAMES, SIZE = 3, 4, 32
#: 32 px frames with 8 px patches (17 tokens per frame), 4 layers: ClipMe on the last
#: two, grouping 2 then 2 clips, and ImgMe r=1 before.
TINY_ARCH = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=4, head_width=16),
    text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=1, layers=1))
TINY_MERGE = dict(merge_layers=(2, 3), clips_per_merge=(2, 2), imgme_r=1)
#: BGR colour of each class's moving square.
COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))


def _write_video(path: Path, colour, frames: int, size=(40, 32), fps: int = 10) -> None:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
    side = size[1] // 3
    for k in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        x = k * (size[0] - side) // max(frames - 1, 1)
        img[side:2 * side, x:x + side] = colour
        writer.write(img)
    writer.release()
    assert path.stat().st_size > 0


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    """6 small videos of 24 frames, 2 per class, in a Kinetics-style list file."""
    root = tmp_path_factory.mktemp('k400_like')
    (root / 'videos').mkdir()
    lines = []
    for i in range(6):
        label = i % NUM_CLASSES
        name = f'clip_{i}.mp4'
        _write_video(root / 'videos' / name, COLOURS[label], frames=24)
        lines.append(f'{name} {label}')
    (root / 'train_list.txt').write_text('\n'.join(lines) + '\n')
    (root / 'val_list.txt').write_text('\n'.join(lines[:3]) + '\n')
    return root


def test_the_example_config_feeds_its_backbone():
    cfg = Config.fromfile(CONFIG)
    check_data_fits_model(cfg)
    assert model_input_geometry(cfg) == (12, 224)
    assert cfg.model.backbone.input_layout == 'NCTHW' and cfg.model.backbone.output == 'mean'
    # adapter-only checkpoints are the retriever's: a recognizer keeps whole ones
    assert 'PEFTCheckpointHook' not in {hook['type'] for hook in cfg.custom_hooks}
    assert cfg.default_hooks.data_fits_model == dict(type='DataFitsModelHook')


def _tiny_step(step: dict, frames: int) -> dict:
    """The config's pipeline step at the tiny model's clip length and frame size."""
    kind = step['type']
    if kind == 'SampleFrames':
        return dict(step, clip_len=frames, frame_interval=2)
    if kind == 'Resize':
        keep = step.get('keep_ratio', True)
        return dict(step, scale=(-1, SIZE + 4) if keep else (SIZE, SIZE))
    if kind == 'CenterCrop':
        return dict(step, crop_size=SIZE)
    return step


def tiny_config(videos: Path, work_dir: Path, frames: int = FRAMES) -> Config:
    """The example config with a tiny random CLIP and 3 classes, reading ``videos``."""
    cfg = Config.fromfile(CONFIG)
    backbone = cfg.model.backbone
    backbone.clip = dict(arch=TINY_ARCH, weights=None)
    backbone.update(num_frames=frames, **TINY_MERGE)
    cfg.model.cls_head.update(num_classes=NUM_CLASSES, in_channels=TINY_ARCH['embed_dim'])
    pipelines = {split: [_tiny_step(s, frames) for s in cfg[f'{split}_pipeline']]
                 for split in ('train', 'val', 'test')}
    cfg.test_pipeline = pipelines['test']
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
    for split, ann in (('train', 'train_list.txt'), ('val', 'val_list.txt'),
                       ('test', 'val_list.txt')):
        cfg[f'{split}_dataloader'] = dict(
            cfg[f'{split}_dataloader'], **loader,
            dataset=dict(cfg[f'{split}_dataloader'].dataset, ann_file=str(videos / ann),
                         data_prefix=dict(video=str(videos / 'videos')),
                         pipeline=pipelines[split]))
    cfg.train_cfg.max_epochs = 1
    cfg.optim_wrapper.optimizer.lr = 1e-3
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    return cfg


def _runner(cfg: Config):
    """The runner as mmaction2's tools/train.py builds it (the config's ``runner_type``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def test_train_test_and_infer_with_the_example_config(videos, tmp_path):
    from mmaction.apis import inference_recognizer, init_recognizer
    cfg = tiny_config(videos, tmp_path / 'work')
    runner = _runner(cfg)
    runner.train()
    checkpoint = tmp_path / 'work' / 'epoch_1.pth'
    assert checkpoint.exists()
    metrics = runner.test()
    for key in ('acc/top1', 'acc/top5', 'acc/mean1'):
        assert 0.0 <= metrics[key] <= 1.0, metrics

    # a "real-size" video: 320x240, 3 s at 25 fps
    video = tmp_path / 'real_size.mp4'
    _write_video(video, COLOURS[1], frames=75, size=(320, 240), fps=25)
    # mmaction2's loader under the project's allow-list: on torch >= 2.6 a bare torch.load
    # refuses the HistoryBuffer objects in mmengine's own checkpoints
    with safe_checkpoint_loading():
        model = init_recognizer(cfg, str(checkpoint), device='cpu')
    result = inference_recognizer(model, str(video))
    assert result.pred_score.shape == (NUM_CLASSES, )
    assert float(result.pred_score.sum()) == pytest.approx(1.0, abs=1e-4)  # 'prob' averaging


def _backbone(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(type='TempMeViT', clip=dict(arch=TINY_ARCH), num_frames=FRAMES,
                             **TINY_MERGE, **kwargs)).eval()


def test_ncthw_layout_gives_the_ntchw_features():
    ntchw, ncthw = _backbone(), _backbone(input_layout='NCTHW')
    video = torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ncthw(video.transpose(1, 2)), ntchw(video))
        ours, source = ncthw.forward_with_source(video.transpose(1, 2))
        theirs, their_source = ntchw.forward_with_source(video)
    assert torch.equal(ours, theirs) and torch.equal(source, their_source)
    assert ncthw.input_shape == (3, FRAMES, SIZE, SIZE)
    assert ntchw.input_shape == (FRAMES, 3, SIZE, SIZE)


def test_mean_output_is_the_mean_of_the_frame_features():
    frames, mean = _backbone(), _backbone(output='mean')
    video = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(mean(video), frames(video).mean(1), atol=0, rtol=0)


def test_a_video_in_the_other_layout_is_named():
    with pytest.raises(ValueError, match=r"TempMeViT\(input_layout='NTCHW'\) takes NTCHW video "
                       r"\(B, 4, 3, 32, 32\); got \(2, 3, 4, 32, 32\): this looks like NCTHW: "
                       r"set input_layout='NCTHW'"):
        _backbone()(torch.zeros(2, 3, FRAMES, SIZE, SIZE))
    # mmaction2's default 8-frame clip into a 4-frame NCTHW backbone fed NTCHW
    with pytest.raises(ValueError, match=r"got \(1, 8, 3, 32, 32\): this looks like NTCHW: "
                       r"set input_layout='NTCHW'; 8 frames, but the merge schedule was "
                       r'built for num_frames=4'):
        _backbone(input_layout='NCTHW')(torch.zeros(1, 8, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r'frames of 64x64, but CLIP takes 32x32'):
        _backbone()(torch.zeros(1, FRAMES, 3, 64, 64))


@pytest.mark.parametrize('option,message', [
    (dict(input_layout='NTHWC'), r"input_layout must be one of \('NTCHW', 'NCTHW'\)"),
    (dict(output='cls'), r"output must be one of \('frames', 'mean'\)"),
])
def test_bad_options_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        _backbone(**option)


def test_a_one_sided_clip_len_stops_before_the_first_step(videos, tmp_path):
    """A 12-frame backbone fed 8-frame clips: the runner's DataFitsModelHook names both
    fields before any forward pass."""
    cfg = tiny_config(videos, tmp_path, frames=12)
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.1.clip_len': 8})
    runner = _runner(cfg)
    calls = []
    runner.model.backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ConfigMismatchError,
                       match=r'train_dataloader.dataset.pipeline.1.clip_len=8 \(SampleFrames\) '
                       r'but model.backbone.num_frames=12'):
        runner.train()
    assert not calls and runner.iter == 0
