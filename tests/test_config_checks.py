"""Fields that must agree are checked before anything is built."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from projects.tempme.config_checks import (ConfigMismatchError, check_data_fits_model,
                                           model_input_geometry)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / 'configs').glob('*.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_feeds_its_model(name):
    cfg = Config.fromfile(ROOT / 'configs' / name)
    check_data_fits_model(cfg)
    frames, size = model_input_geometry(cfg)
    assert frames in (12, 64) and size in (56, 112, 224)


@pytest.mark.parametrize('option,message', [
    ({'model.video_encoder.num_frames': 8},
     r'train_dataloader.dataset.pipeline.1.clip_len=12 \(FpsGridSample\) but '
     r'model.video_encoder.num_frames=8'),
    ({'model.clip.arch.vision_cfg.image_size': 224},
     r'test_dataloader.dataset.pipeline.3.size=112 \(PILResizeCenterCrop\) but the CLIP '
     'image size is 224'),
])
def test_a_one_sided_override_is_named(option, message):
    cfg = Config.fromfile(ROOT / 'configs/tempme_tiny.py')
    cfg.merge_from_dict(option)
    with pytest.raises(ConfigMismatchError, match=message):
        check_data_fits_model(cfg)


def test_train_tool_stops_before_reading_data(tmp_path):
    done = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/tempme_tiny.py', '--work-dir', str(tmp_path),
         '--cfg-options', 'model.video_encoder.num_frames=8',
         'train_dataloader.dataset.data_root=/nonexistent'],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300)
    assert done.returncode != 0
    assert 'the data pipeline cannot feed the model' in done.stderr
    assert '/nonexistent' not in done.stderr


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_checks_data_against_model_in_the_runner(name):
    cfg = Config.fromfile(ROOT / 'configs' / name)
    assert cfg.default_hooks.data_fits_model == dict(type='DataFitsModelHook')


def test_a_runner_built_elsewhere_stops_on_a_one_sided_clip_len(data_root, tmp_path):
    """mmaction2's tools build a Runner without our tool-level check: the hook still stops
    the run before the first step, naming both fields."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(ROOT / 'configs/tempme_tiny.py')
    cfg.merge_from_dict({f'{split}_dataloader.dataset.data_root': str(data_root)
                         for split in ('train', 'val', 'test')})
    cfg.merge_from_dict({'test_dataloader.dataset.pipeline.1.clip_len': 8})
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ConfigMismatchError,
                       match=r'test_dataloader.dataset.pipeline.1.clip_len=8 \(FpsGridSample\) '
                       r'but model.video_encoder.num_frames=12'):
        runner.test()
