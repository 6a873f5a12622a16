"""`make demo`'s driver on a tiny generated benchmark, shortened to one epoch."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _demo(tmp_path, *args):
    small = [f'{split}_dataloader.batch_size=4' for split in ('train', 'val', 'test')]
    proc = subprocess.run(
        [sys.executable, 'tools/demo.py', '--data', str(tmp_path / 'data'), '--work-dir',
         str(tmp_path / 'demo'), '--num-train', '16', '--num-val', '4', '--num-test', '8', *args,
         '--cfg-options', 'train_cfg.max_epochs=1', *small],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_demo_writes_the_results_table(tmp_path):
    work = tmp_path / 'demo'
    proc = _demo(tmp_path)
    results = json.loads((work / 'results.json').read_text())
    assert (results['split'], results['num_videos']) == ('test', 8)
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


def test_demo_can_evaluate_on_the_validation_split(tmp_path):
    proc = _demo(tmp_path, '--split', 'val', '--methods', 'tempme')
    results = json.loads((tmp_path / 'demo' / 'results.json').read_text())
    meta = json.loads((tmp_path / 'data' / 'meta.json').read_text())['splits']['val']
    assert (results['split'], results['num_videos'], results['num_captions']) == ('val', 4, 8)
    assert results['chance_t2v_R1'] == 25.0
    assert results['num_order_captions'] == len(meta['order_dependent_captions'])
    assert list(results['methods']) == ['tempme']
    # the final checkpoint is tested once, by tools/test.py: no validation pass in training
    output = proc.stdout + proc.stderr
    assert 'Epoch(val)' not in output and 'Epoch(test)' in output
