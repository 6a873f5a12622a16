"""End-to-end runs of the tools on generated videos with the tiny config."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mmaction
import pytest
import torch

from projects.tempme.checkpoint import safe_load_checkpoint
from projects.tempme.evaluation import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/tempme_tiny.py'
#: 2 x 2 against 1 x 4 videos per step, plain SGD: the largest weight difference as a
#: share of the largest update (LoRA B starts at zero, so its value is the update).
#: Measured: 7.9e-6 of 0.117 (7e-5), float rounding that depends on the batch size; a
#: gradient scaled by the world size would differ by 50-100% of the update.
DIST_RTOL = 1e-3


def _data_options(data_root):
    return [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')]


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    work_dir = tmp_path_factory.mktemp('run')
    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir),
          '--cfg-options', *_data_options(data_root)])
    return work_dir


def _weights(path):
    return safe_load_checkpoint(path)['state_dict']


def test_train_then_test_prints_all_metrics(trained, data_root, tmp_path):
    assert (trained / 'epoch_2.pth').exists()
    out, dump = tmp_path / 'metrics.json', tmp_path / 'sim.pt'
    proc = _run([sys.executable, 'tools/test.py', CONFIG, str(trained / 'epoch_2.pth'),
                 '--work-dir', str(tmp_path), '--out', str(out), '--dump', str(dump),
                 '--cfg-options', *_data_options(data_root)])
    metrics = json.loads(out.read_text())
    for key in ('t2v_R1', 't2v_R5', 't2v_R10', 't2v_MdR', 't2v_MnR', 'v2t_R1', 'v2t_R5',
                'v2t_R10', 'v2t_MdR', 'v2t_MnR', 'R_sum'):
        assert key in metrics and f'retrieval/{key}' in proc.stdout + proc.stderr
    saved = torch.load(dump, weights_only=True)
    assert saved['sim'].shape == (8, 4)  # 4 test videos x 2 captions each
    recomputed = retrieval_metrics(saved['sim'], saved['caption_to_video'])
    assert recomputed['R_sum'] == pytest.approx(metrics['R_sum'])


def test_resume_ends_like_an_uninterrupted_run(trained, data_root, tmp_path):
    # A run stopped after epoch 1 leaves exactly epoch_1.pth behind; resume from it.
    shutil.copy(trained / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(tmp_path), '--resume',
          '--cfg-options', *_data_options(data_root)])
    resumed, full = _weights(tmp_path / 'epoch_2.pth'), _weights(trained / 'epoch_2.pth')
    assert resumed.keys() == full.keys()
    changed = [k for k in full if not torch.allclose(resumed[k], full[k], atol=1e-6)]
    assert not changed
    first = _weights(trained / 'epoch_1.pth')
    assert any(not torch.equal(first[k], full[k]) for k in full)  # epoch 2 did train


def _final_metrics(work_dir):
    """The retrieval metrics of the last validation a run logged."""
    scalars = next(Path(work_dir).glob('*/vis_data/scalars.json')).read_text().splitlines()
    last = [json.loads(line) for line in scalars if 'retrieval/R_sum' in line][-1]
    return {k: v for k, v in last.items() if k.startswith('retrieval/')}


def _assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f'weights differ by up to {worst}'


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(data_root, tmp_path):
    """2 processes x 2 videos = 1 process x 4 videos, step for step. The sampler gives
    each rank every other index of the same permutation, so a global batch holds the same
    videos; every rank computes the loss over the gathered global batch (gather_with_grad)
    and the all-gather's backward sums the ranks' gradients, which DDP's mean then divides
    back: the step is the single-process one, up to float rounding (see DIST_RTOL); the
    validation metrics are identical.
    Plain SGD without clipping, so that a step is proportional to the gradient (Adam's
    step and a clipped one hide a gradient scaled by the world size). RandAugment is off
    (n0): its draws would follow each process's own random stream."""
    options = [*_data_options(data_root), 'train_cfg.max_epochs=1',
               'train_dataloader.dataset.pipeline.3.config=rand-m0-n0',
               'optim_wrapper.optimizer._delete_=True', 'optim_wrapper.optimizer.type=SGD',
               'optim_wrapper.optimizer.lr=1.0', 'optim_wrapper.clip_grad=None']
    one, two = tmp_path / 'one', tmp_path / 'two'
    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(one), '--cfg-options',
          *options, 'train_dataloader.batch_size=4'])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', PORT='29611',
               PYTHON=sys.executable)
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(two),
         '--cfg-options', *options, 'train_dataloader.batch_size=2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    # on failure, every error line of both ranks: the root cause is often not at the end
    errors = '\n'.join(line for line in proc.stderr.splitlines() if re.search(
        r'\[rank\d\]|[Ee]rror|terminate called|what\(\)|Assertion|abort', line))
    assert proc.returncode == 0, proc.stdout[-2000:] + errors[-6000:] + proc.stderr[-3000:]
    log = next(two.glob('*/*.log')).read_text()
    assert 'Distributed training is not used' not in log
    single, double = _weights(one / 'epoch_1.pth'), _weights(two / 'epoch_1.pth')
    update = max(v.abs().max().item() for k, v in single.items() if '.lora_B.' in k)
    assert update > 1e-3  # the steps are far above rounding
    _assert_same_weights(single, double, atol=DIST_RTOL * update)
    assert _final_metrics(two) == pytest.approx(_final_metrics(one), abs=1e-6)


def test_mmaction_train_tool_reaches_the_metrics_of_ours(trained, data_root, tmp_path):
    """The config alone (no tools/train.py glue) trains the same model: mmaction2's own
    train tool, same data and seed, ends with our run's weights and metrics."""
    tool = Path(mmaction.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not tool.exists():
        pytest.skip('mmaction2 was installed without its tools')
    _run([sys.executable, str(tool), CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
          *_data_options(data_root)])
    _assert_same_weights(_weights(tmp_path / 'epoch_2.pth'), _weights(trained / 'epoch_2.pth'),
                         atol=1e-6)
    ours = _final_metrics(trained)
    assert set(ours) >= {'retrieval/R_sum', 'retrieval/t2v_R1', 'retrieval/v2t_R1'}
    assert _final_metrics(tmp_path) == pytest.approx(ours, abs=1e-6)
