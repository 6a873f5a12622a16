"""`make demo`'s driver on a tiny generated benchmark, shortened to one epoch."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tools import demo

ROOT = Path(__file__).resolve().parents[1]


def _demo(tmp_path, *args, options=()):
    # 16 iterations per epoch, so that the 10% warm-up lasts at least one
    small = ['train_dataloader.batch_size=2', 'val_dataloader.batch_size=4',
             'test_dataloader.batch_size=4']
    proc = subprocess.run(
        [sys.executable, 'tools/demo.py', '--data', str(tmp_path / 'data'), '--work-dir',
         str(tmp_path / 'demo'), '--num-train', '16', '--num-val', '4', '--num-test', '8',
         '--epochs', '1', *args, '--cfg-options', *small, *options],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_demo_writes_the_results_table(tmp_path):
    work = tmp_path / 'demo'
    proc = _demo(tmp_path)
    results = json.loads((work / 'results.json').read_text())
    assert (results['split'], results['num_videos'], results['epochs']) == ('test', 8, 1)
    # one epoch, its checkpoint, and the learning rate decayed to about zero at its end
    assert [p.name for p in (work / 'tempme').glob('*.pth')] == ['epoch_1.pth']
    last_lr = re.findall(r'Epoch\(train\) \[1\]\[16/16\]\s+base_lr: (\S+)', proc.stdout)
    assert len(last_lr) == 2 and all(float(lr) < 0.02 * 5e-4 for lr in last_lr)
    assert results['chance_t2v_R1'] == 100 / 8
    assert 0 <= results['order_blind_ceiling_t2v_R1'] <= 100
    for name in ('tempme', 'baseline'):
        method = results['methods'][name]
        for key in ('t2v_R1', 't2v_R1_order', 'v2t_R1', 'R_sum', 'gmacs_per_video',
                    'train_wall_s'):
            assert isinstance(method[key], float), (name, key)
        assert 0 <= method['t2v_R1'] <= 100
    tempme, baseline = results['methods']['tempme'], results['methods']['baseline']
    assert (tempme['output_tokens'], baseline['output_tokens']) == (97, 600)
    assert tempme['gmacs_per_video'] < 0.7 * baseline['gmacs_per_video']
    assert (work / 'results.png').stat().st_size > 10_000
    table = (work / 'results.md').read_text()
    assert 'order-blind ceiling' in table and 'TempMe' in table
    assert 'Epoch(train)' in proc.stdout + proc.stderr  # training progress is shown
    _demo_checkpoint_takes_a_real_video(tmp_path, work / 'tempme' / 'epoch_1.pth')


def _demo_checkpoint_takes_a_real_video(tmp_path, checkpoint):
    """The demo's model resizes and crops like the real configs: any video works."""
    video = tmp_path / 'camera' / 'clip.mp4'
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 30, (320, 240))
    for k in range(90):
        frame = np.zeros((240, 320, 3), np.uint8)
        cv2.circle(frame, (40 + 3 * k, 120), 30, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    run = [sys.executable, 'tools/analysis/visualize_merging.py', 'configs/tempme_synthetic.py',
           str(video), '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'merge.png')]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / 'merge.png').stat().st_size > 1000
    index = [sys.executable, 'tools/search.py', 'index', str(video.parent), '--config',
             'configs/tempme_synthetic.py', '--checkpoint', str(checkpoint), '--index',
             str(tmp_path / 'index'), '--workers', '0', '--no-progress']
    done = subprocess.run(index, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '1 videos; 1 encoded' in done.stdout and '0 unreadable' in done.stdout


def test_demo_can_evaluate_on_the_validation_split(tmp_path):
    # 112 px frames in 16 px patches: still 50 tokens, and not the generator's default size
    proc = _demo(tmp_path, '--split', 'val', '--methods', 'tempme', options=[
        'model.clip.arch.vision_cfg.image_size=112', 'model.clip.arch.vision_cfg.patch_size=16'])
    results = json.loads((tmp_path / 'demo' / 'results.json').read_text())
    meta = json.loads((tmp_path / 'data' / 'meta.json').read_text())['splits']['val']
    assert (results['split'], results['num_videos'], results['num_captions']) == ('val', 4, 8)
    assert results['chance_t2v_R1'] == 25.0
    assert results['num_order_captions'] == len(meta['order_dependent_captions'])
    assert list(results['methods']) == ['tempme']
    # the videos are generated at the frame size of the (overridden) config
    assert json.loads((tmp_path / 'data' / 'meta.json').read_text())['config']['size'] == 112
    # the final checkpoint is tested once, by tools/test.py: no validation pass in training
    output = proc.stdout + proc.stderr
    assert 'Epoch(val)' not in output and 'Epoch(test)' in output


def test_config_overrides_apply_to_what_the_demo_reads_from_the_config():
    cfg = demo._load_config('configs/tempme_synthetic.py', [
        'model.clip.arch.vision_cfg.mlp_ratio=4.0', 'train_cfg.max_epochs=2'])
    assert cfg.model.clip.arch.vision_cfg.mlp_ratio == 4.0 and cfg.train_cfg.max_epochs == 2
    assert cfg.model.clip.arch.vision_cfg.width == 32  # the rest is the config's
    plain = demo._load_config('configs/tempme_synthetic.py')
    assert demo._cost(cfg)['gmacs_per_video'] > demo._cost(plain)['gmacs_per_video']
