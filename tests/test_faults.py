"""Faults during training and checkpointing: unsafe or unfitting checkpoints, jobs killed
while saving or training, non-finite losses."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from projects.tempme import checkpoint as ckpt
from projects.tempme.engine import (AtomicCheckpointHook, AtomicLocalBackend,
                                    CheckpointMismatchError, NonFiniteLossError, PEFTCheckpointHook,
                                    StrictLoadHook, TempMeRunner, atomic_checkpoint)
from projects.tempme.models import TempMeRetriever
from projects.tempme_deploy.fileio import atomic_write
from tests.conftest import TINY_CLIP
from tests.test_training import CONFIG, ROOT, _data_options, _run

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')


def _run_failing(args):
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


class _WriteMarker:
    """Pickles into a call that creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


class ToyModel(BaseModel):
    """Linear regression whose loss (or gradient) turns NaN at chosen training steps."""

    def __init__(self, bad_steps=(), bad='loss'):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.bad_steps, self.bad, self.steps = set(bad_steps), bad, 0

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)
        if mode != 'loss':
            return out
        loss = ((out - labels)**2).mean()
        if self.steps in self.bad_steps:
            if self.bad == 'loss':
                loss = loss * float('nan')
            else:  # finite loss, NaN gradient: d/db sqrt(0 * b) = 0 * inf
                loss = loss + torch.sqrt(self.linear.bias * 0).sum()
        self.steps += 1
        return {'loss': loss}


class ToyDataset(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([float(i), 1.0]), labels=torch.tensor(0.5 * i))


class Snapshot(Hook):
    """Copies of the weights and optimizer state around one training iteration."""

    def __init__(self, at):
        self.at, self.before, self.after = at, None, None

    @staticmethod
    def _state(runner):
        optim = runner.optim_wrapper.optimizer.state_dict()['state']
        weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
        return weights, {i: {k: torch.as_tensor(v).clone() for k, v in s.items()}
                         for i, s in optim.items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            self.before = self._state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.at:
            self.after = self._state(runner)


def _toy_runner(work_dir, model, max_epochs=3, hooks=(), max_keep_ckpts=-1, resume_from=None,
                **optim):
    """4 iterations per epoch, a checkpoint after every epoch."""
    return TempMeRunner(
        load_from=resume_from,
        resume=resume_from is not None,
        model=model,
        work_dir=str(work_dir),
        experiment_name=f'faults_{work_dir.name}',
        default_scope='mmaction',
        train_dataloader=dict(
            dataset=ToyDataset(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(type='GuardedOptimWrapper', optimizer=dict(type='AdamW', lr=0.01),
                           clip_grad=dict(max_norm=1.0), **optim),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                                           max_keep_ckpts=max_keep_ckpts)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0),
        log_level='WARNING')


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'metrics.json'
    path.write_text('old')

    def broken(tmp):
        Path(tmp).write_text('half')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, broken)
    assert path.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.json']

    assert atomic_write(path, lambda tmp: Path(tmp).write_text('new')) == str(path)
    assert path.read_text() == 'new'
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / 'sub' / 'fresh.txt'
    atomic_write(fresh, lambda tmp: Path(tmp).write_text('x'))
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600


_SLOW_SAVE = textwrap.dedent('''
    import sys, time
    import torch
    from projects.tempme_deploy import fileio

    class SlowFile:
        """A file object that pauses after every write, as a slow disk would."""
        def __init__(self, f):
            self.f = f
        def write(self, data):
            n = self.f.write(data)
            self.f.flush()
            print('wrote', flush=True)
            time.sleep(0.2)
            return n
        def flush(self):
            self.f.flush()

    checkpoint = {'state_dict': {f'w{i}': torch.full((250_000,), 2.0) for i in range(40)}}

    def write(tmp):
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, SlowFile(f))

    fileio.atomic_write(sys.argv[1], write)
    print('done', flush=True)
''')


def test_job_killed_while_saving_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    old = {'state_dict': {f'w{i}': torch.full((250_000, ), 1.0) for i in range(40)}}
    torch.save(old, path)
    proc = subprocess.Popen([sys.executable, '-c', _SLOW_SAVE, str(path)], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # several chunks of the new checkpoint are on disk
            assert proc.stdout.readline().strip() == 'wrote'
        partial = list(tmp_path.glob('.epoch_1.pth.*.tmp'))
        assert len(partial) == 1 and partial[0].stat().st_size > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    loaded = ckpt.safe_load_checkpoint(path)
    assert loaded.keys() == old.keys()
    assert all(torch.equal(loaded['state_dict'][k], v) for k, v in old['state_dict'].items())
    # The partial file never took the final name; only the hidden temporary file remains.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['epoch_1.pth',
                                                                 partial[0].name])
    with pytest.raises(ckpt.CheckpointLoadError, match='tmp'):
        ckpt.safe_load_checkpoint(partial[0])


def test_checkpoint_hook_never_leaves_a_dangling_last_checkpoint(tmp_path, monkeypatch):
    """A failed save keeps the previous checkpoint and pointer, even with max_keep_ckpts=1."""
    real = atomic_checkpoint.atomic_write

    def crash_on_epoch_2(path, write_fn):
        if str(path).endswith('epoch_2.pth'):

            def half_then_crash(tmp):
                write_fn(tmp)
                with open(tmp, 'r+b') as f:
                    f.truncate(os.path.getsize(tmp) // 2)
                raise KeyboardInterrupt('killed while saving')

            return real(path, half_then_crash)
        return real(path, write_fn)

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', crash_on_epoch_2)
    runner = _toy_runner(tmp_path, ToyModel(), max_keep_ckpts=1)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, AtomicCheckpointHook))
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_1.pth')
    checkpoint = ckpt.safe_load_checkpoint(tmp_path / 'epoch_1.pth')
    assert checkpoint['meta']['epoch'] == 1
    assert not (tmp_path / 'epoch_2.pth').exists()
    assert not list(tmp_path.glob('.*.tmp'))

    # Without a failure the old checkpoint goes once the new one is complete.
    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', real)
    work_dir = tmp_path / 'ok'
    _toy_runner(work_dir, ToyModel(), max_epochs=2, max_keep_ckpts=1).train()
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_2.pth')


def test_previous_best_checkpoint_is_deleted_only_after_the_new_is_saved(tmp_path, monkeypatch):
    runner = _toy_runner(tmp_path, ToyModel(), max_epochs=1)
    runner.train()
    hook = AtomicCheckpointHook(interval=1, save_best='acc', rule='greater')
    hook.before_train(runner)
    hook._save_best_checkpoint(runner, {'acc': 0.5})
    first = tmp_path / 'best_acc_epoch_1.pth'
    assert hook.best_ckpt_path == str(first) and first.is_file()

    real = atomic_checkpoint.atomic_write

    def crash_on_best(path, write_fn):
        if Path(path).name.startswith('best_'):
            raise KeyboardInterrupt('killed while saving')
        return real(path, write_fn)

    runner.train_loop._epoch = 2
    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', crash_on_best)
    with pytest.raises(KeyboardInterrupt):
        hook._save_best_checkpoint(runner, {'acc': 0.9})
    assert ckpt.safe_load_checkpoint(first)['meta']['epoch'] == 1
    assert hook.best_ckpt_path == str(first)

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', real)
    hook._save_best_checkpoint(runner, {'acc': 0.1})  # not better: nothing changes
    assert hook.best_ckpt_path == str(first) and first.is_file()
    hook._save_best_checkpoint(runner, {'acc': 0.9})
    second = tmp_path / 'best_acc_epoch_2.pth'
    assert hook.best_ckpt_path == str(second) and second.is_file() and not first.exists()


# ---------------------------------------------------------------------------------------------
# Checkpoints that must not load
# ---------------------------------------------------------------------------------------------


def test_code_executing_checkpoint_is_refused_by_test_and_resume(data_root, tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _WriteMarker(marker)}, evil)
    options = ['--cfg-options', *_data_options(data_root)]
    for args in (['tools/test.py', CONFIG, str(evil), '--work-dir', str(tmp_path / 'test')],
                 ['tools/train.py', CONFIG, '--resume', str(evil), '--work-dir',
                  str(tmp_path / 'train')]):
        output = _run_failing([sys.executable, *args, *options])
        assert 'UnsafeCheckpointError: refused to load checkpoint' in output
        assert 'evil.pth' in output and 'builtins.exec' in output
        assert not marker.exists()
    assert not list((tmp_path / 'train').glob('*.pth'))


def _tiny_model(**kwargs):
    torch.manual_seed(0)
    return TempMeRetriever(clip=dict(arch=TINY_CLIP), data_preprocessor=None,
                           video_encoder=kwargs.pop('video_encoder', dict(type='TempMeViT')),
                           **kwargs)


def _runner_for(model, load_from='ckpt.pth'):
    return SimpleNamespace(model=model, logger=MMLogger.get_instance('test_faults'),
                           _load_from=load_from, _resume=False, work_dir='.')


def _load_error(model, checkpoint, hooks=(StrictLoadHook(), )):
    runner = _runner_for(model)
    with pytest.raises(CheckpointMismatchError) as info:
        for hook in hooks:
            hook.after_load_checkpoint(runner, checkpoint)
    return str(info.value)


def test_checkpoint_of_another_width_lists_shape_mismatches():
    wide = _tiny_model()
    narrow_clip = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP['vision_cfg'], width=32))
    torch.manual_seed(0)
    narrow = TempMeRetriever(clip=dict(arch=narrow_clip), video_encoder=dict(type='TempMeViT'),
                             data_preprocessor=None)
    message = _load_error(narrow, dict(meta={}, state_dict=wide.state_dict()))
    assert "checkpoint 'ckpt.pth' does not fit" in message
    assert 'video_encoder.conv1.weight: (64, 3, 16, 16) vs (32, 3, 16, 16)' in message
    assert 'missing keys' not in message and 'unexpected keys' not in message


def test_full_checkpoint_into_lora_model_lists_missing_and_unexpected_keys():
    full = _tiny_model(lora=None, train_mode='full')
    lora = _tiny_model()
    message = _load_error(lora, dict(meta={}, state_dict=full.state_dict()))
    assert 'video_encoder.blocks.0.attn.qkv.lora_A.default.weight' in message
    assert 'video_encoder.blocks.0.attn.qkv.base_layer.weight' in message  # missing
    assert 'unexpected keys' in message and 'video_encoder.blocks.0.attn.qkv.weight' in message
    # The other way round, and through mmengine's DDP prefix, the lists swap.
    state = {f'module.{k}': v for k, v in lora.state_dict().items()}
    message = _load_error(full, dict(meta={}, state_dict=state))
    assert message.index('missing keys') < message.index('video_encoder.blocks.0.attn.qkv.weight')


def test_checkpoint_of_another_merge_schedule_is_refused():
    default = _tiny_model()
    later = _tiny_model(video_encoder=dict(type='TempMeViT', merge_layers=(9, 10, 11)))
    message = _load_error(later, dict(meta={}, state_dict=default.state_dict()))
    assert 'video_encoder.blocks.8.temporal_embedding' in message  # unexpected
    assert 'video_encoder.blocks.11.temporal_embedding' in message  # missing
    assert 'video_encoder.blocks.9.temporal_embedding: (6, 64) vs (12, 64)' in message


def test_adapter_only_checkpoints_still_load():
    trained = _tiny_model()
    for param in trained.parameters():
        if param.requires_grad:
            nn.init.normal_(param)
    checkpoint = dict(meta={}, state_dict=trained.state_dict())
    PEFTCheckpointHook().before_save_checkpoint(_runner_for(trained), checkpoint)
    adapter_keys = set(checkpoint['state_dict'])

    fresh = _tiny_model()
    runner = _runner_for(fresh)
    for hook in sorted([StrictLoadHook(), PEFTCheckpointHook()],
                       key=lambda h: {'VERY_LOW': 90, 'LOWEST': 100}[h.priority]):
        hook.after_load_checkpoint(runner, checkpoint)  # in the runner's order
    fresh.load_state_dict(checkpoint['state_dict'], strict=True)
    assert torch.equal(fresh.state_dict()['video_encoder.blocks.8.temporal_embedding'],
                       trained.state_dict()['video_encoder.blocks.8.temporal_embedding'])

    # Without the PEFT hook the frozen weights are missing, and the message says why.
    reduced = dict(meta=dict(adapter_only=True),
                   state_dict={k: trained.state_dict()[k] for k in adapter_keys})
    message = _load_error(_tiny_model(), reduced)
    assert 'adapter-only checkpoint' in message and 'PEFTCheckpointHook' in message


def test_non_strict_load_only_warns(caplog):
    full = _tiny_model(lora=None, train_mode='full')
    runner = _runner_for(_tiny_model())
    messages = []
    runner.logger = SimpleNamespace(warning=messages.append)
    StrictLoadHook(strict=False).after_load_checkpoint(
        runner, dict(meta={}, state_dict=full.state_dict()))
    assert len(messages) == 1 and 'missing keys' in messages[0]


def test_test_tool_refuses_a_checkpoint_of_another_width(data_root, tmp_path):
    cfg = Config.fromfile(str(ROOT / CONFIG))
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('type')
    model_cfg['clip']['arch']['vision_cfg']['width'] = 64
    model_cfg['data_preprocessor'] = None
    torch.save(dict(meta={}, state_dict=TempMeRetriever(**model_cfg).state_dict()),
               tmp_path / 'narrow.pth')
    output = _run_failing([sys.executable, 'tools/test.py', CONFIG, str(tmp_path / 'narrow.pth'),
                           '--work-dir', str(tmp_path), '--cfg-options',
                           *_data_options(data_root)])
    assert 'CheckpointMismatchError' in output and 'narrow.pth' in output
    assert 'video_encoder.conv1.weight: (64, 3, 16, 16) vs (128, 3, 16, 16)' in output
    assert 'Epoch(test)' not in output  # nothing was evaluated


# ---------------------------------------------------------------------------------------------
# Non-finite losses
# ---------------------------------------------------------------------------------------------


def test_nan_loss_stops_before_the_step_and_keeps_the_last_checkpoint(tmp_path):
    snapshot = Snapshot(at=6)
    runner = _toy_runner(tmp_path, ToyModel(bad_steps={6}), hooks=[snapshot])
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    message = str(info.value)
    assert 'non-finite loss (nan) at iteration 7 of 12 (epoch 2 of 3)' in message
    assert f'last good checkpoint is {tmp_path / "epoch_1.pth"}' in message
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']
    checkpoint = ckpt.safe_load_checkpoint(tmp_path / 'epoch_1.pth')
    assert checkpoint['meta']['epoch'] == 1 and checkpoint['meta']['iter'] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values())
    weights = runner.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in snapshot.before[0].items())


def test_nan_gradient_with_a_finite_loss_stops_too(tmp_path):
    runner = _toy_runner(tmp_path, ToyModel(bad_steps={2}, bad='grad'))
    with pytest.raises(NonFiniteLossError, match=r'non-finite gradient norm \(nan\) at '
                       r'iteration 3 of 12 \(epoch 1 of 3\).*No checkpoint has been saved'):
        runner.train()
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


@pytest.mark.parametrize('bad', ['loss', 'grad'])
def test_skip_mode_leaves_weights_and_optimizer_untouched(tmp_path, bad):
    snapshot = Snapshot(at=5)
    runner = _toy_runner(tmp_path, ToyModel(bad_steps={5}, bad=bad), hooks=[snapshot],
                         on_nonfinite='skip')
    runner.train()
    assert runner.iter == 12
    (weights_before, optim_before), (weights_after, optim_after) = snapshot.before, snapshot.after
    assert all(torch.equal(weights_after[k], v) for k, v in weights_before.items())
    assert optim_after.keys() == optim_before.keys()
    for index, state in optim_before.items():
        assert all(torch.equal(optim_after[index][k], v) for k, v in state.items())
    assert runner.optim_wrapper.skipped_steps == 1
    assert runner.message_hub.get_scalar('train/skipped_steps').current() == 1
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    # The steps after the skipped one trained as usual.
    final = runner.model.state_dict()['linear.weight']
    assert not torch.equal(final, weights_after['linear.weight'])


def test_skip_count_survives_a_resume(tmp_path):
    runner = _toy_runner(tmp_path, ToyModel(bad_steps={1}), max_epochs=2, on_nonfinite='skip')
    runner.train()
    assert runner.optim_wrapper.skipped_steps == 1
    # The resumed model counts its own calls from 0: call 2 is iteration 11 of the run.
    resumed = _toy_runner(tmp_path / 'resumed', ToyModel(bad_steps={2}), on_nonfinite='skip',
                          resume_from=str(tmp_path / 'epoch_2.pth'))
    resumed.train()
    assert resumed.iter == 12 and resumed.optim_wrapper.skipped_steps == 2
    assert resumed.message_hub.get_scalar('train/skipped_steps').current() == 2


def test_too_many_consecutive_skips_stop(tmp_path):
    runner = _toy_runner(tmp_path, ToyModel(bad_steps={4, 5, 6}), on_nonfinite='skip',
                         max_consecutive_skips=2)
    with pytest.raises(NonFiniteLossError, match='3 consecutive steps.*iteration 7 of 12.*'
                       'max_consecutive_skips=2'):
        runner.train()
    runner = _toy_runner(tmp_path / 'two', ToyModel(bad_steps={4, 5}), on_nonfinite='skip',
                         max_consecutive_skips=2)
    runner.train()
    assert runner.optim_wrapper.skipped_steps == 2


def test_invalid_nonfinite_setting_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="optim_wrapper.on_nonfinite must be one of"):
        _toy_runner(tmp_path, ToyModel()).build_optim_wrapper(
            dict(type='GuardedOptimWrapper', optimizer=dict(type='SGD', lr=0.1),
                 on_nonfinite='ignore'))


@pytest.mark.parametrize('path', sorted(str(p.relative_to(ROOT))
                                        for p in (ROOT / 'configs').glob('*.py')))
def test_every_config_guards_steps_and_checkpoints(path):
    cfg = Config.fromfile(str(ROOT / path))
    assert cfg.optim_wrapper.type == 'GuardedOptimWrapper'
    assert cfg.optim_wrapper.on_nonfinite == 'stop'
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    assert cfg.default_hooks.strict_load.type == 'StrictLoadHook'


def test_amp_wrapper_checks_the_loss(monkeypatch):
    """Its construction and loss check on CPU (AMP numerics need a GPU; GradScaler is off)."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    from mmaction.registry import OPTIM_WRAPPERS
    model = nn.Linear(2, 1)
    wrapper = OPTIM_WRAPPERS.build(dict(type='GuardedAmpOptimWrapper', on_nonfinite='skip',
                                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    assert wrapper.check_grads is False  # the loss scaler handles inf gradients
    before = model.weight.detach().clone()
    wrapper.update_params(model(torch.ones(1, 2)).sum() + float('inf'))
    assert wrapper.skipped_steps == 1 and torch.equal(model.weight, before)
    wrapper.update_params(model(torch.ones(1, 2)).sum())
    assert not torch.equal(model.weight, before)
    wrapper.on_nonfinite = 'stop'
    with pytest.raises(NonFiniteLossError, match=r'non-finite loss \(nan\)'):
        wrapper.update_params(model(torch.ones(1, 2)).sum() * float('nan'))


def test_amp_run_stops_on_a_nonfinite_loss(monkeypatch):
    """The wrapper ``tools/train.py --amp`` configures steps in mixed precision and still
    stops a run on a NaN loss before any weight changes. On CPU: the autocast context is
    bfloat16 and the loss scaler is off (AmpOptimWrapper otherwise asks for CUDA)."""
    from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    from tools import train as train_tool
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    args = train_tool.parse_args([CONFIG])
    args.amp = True  # as parsed on a CUDA machine
    cfg = train_tool.merge_args(Config.fromfile(str(ROOT / CONFIG)), args)
    cuda = torch.cuda.is_available()  # fp16 there, as in a real --amp run
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1)).to('cuda' if cuda else 'cpu')
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, AmpOptimWrapper)
    x = torch.ones(2, 4, device=model[0].weight.device)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r'non-finite loss \(nan\)'):
        with wrapper.optim_context(model):
            out = model(x)
            assert out.dtype == (torch.float16 if cuda else torch.bfloat16)  # autocast is on
            wrapper.update_params(out.float().sum() * float('nan'))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with wrapper.optim_context(model):
        wrapper.update_params(model(x).float().sum())
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the refusal is for machines without CUDA')
def test_amp_without_cuda_is_refused_in_one_line():
    done = subprocess.run([sys.executable, 'tools/train.py', CONFIG, '--amp'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert '--amp needs a CUDA GPU' in done.stderr


# ---------------------------------------------------------------------------------------------
# Config errors stop the run before any data is read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('options, error, message', [
    ({'model.clip.arch': 'ViT-X-99'}, ValueError,
     r"unknown CLIP architecture 'ViT-X-99' \(model.clip.arch\)"),
    ({'model.clip.weights': 'missing/ViT-B-32.pt'}, FileNotFoundError,
     "CLIP weights not found: 'missing/ViT-B-32.pt'.*model.clip.weights"),
    ({'model.lora.rank': 0}, ValueError, 'lora.rank must be a positive integer, got 0'),
    ({'model.video_encoder.num_frames': 10}, ValueError,
     'clips_per_merge 2 at layer 9 does not divide the 5 clips.*num_frames=10'),
])
def test_config_errors_come_before_the_data(tmp_path, options, error, message):
    cfg = Config.fromfile(str(ROOT / CONFIG))
    cfg.merge_from_dict(options)
    for split in ('train', 'val', 'test'):  # reading any of it would fail differently
        cfg[f'{split}_dataloader'].dataset.data_root = str(tmp_path / 'no_data')
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(error, match=message):
        Runner.from_cfg(cfg)


# ---------------------------------------------------------------------------------------------
# A training job killed at a random point resumes to the same result
# ---------------------------------------------------------------------------------------------


def _val_metrics(work_dir, epoch):
    """The validation metrics logged after ``epoch`` (last run in ``work_dir`` that has them)."""
    found = None
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'retrieval/R_sum' in record and record['step'] == epoch:
                found = {k: v for k, v in record.items() if k.startswith('retrieval/')}
    assert found, f'no validation metrics for epoch {epoch} under {work_dir}'
    return found


def _wait_for_log(work_dir, text, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in work_dir.glob('*/*.log'):
            if text in log.read_text():
                return
        assert proc.poll() is None, f'training ended before {text!r} was logged'
        time.sleep(0.02)
    raise AssertionError(f'{text!r} not logged within {timeout} s')


def test_sigkilled_training_resumes_to_the_same_metrics_and_weights(data_root, tmp_path):
    options = ['--cfg-options', *_data_options(data_root)]
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    rng = random.Random(20250)
    kill_after_iter, delay = rng.choice([1, 2]), rng.uniform(0.0, 0.05)

    def train(work_dir):
        work_dir.mkdir()
        with open(work_dir / 'output.txt', 'w') as out:
            return subprocess.Popen([sys.executable, 'tools/train.py', CONFIG, '--work-dir',
                                     str(work_dir), *options], cwd=ROOT, env=_env(),
                                    stdout=out, stderr=subprocess.STDOUT)

    # The uninterrupted run and the run to kill share the two cores.
    uninterrupted, proc = train(full), train(killed)
    try:
        _wait_for_log(killed, f'Epoch(train) [2][{kill_after_iter}/4]', proc)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        uninterrupted.wait(timeout=600)
    assert uninterrupted.returncode == 0, (full / 'output.txt').read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / 'epoch_2.pth').exists()  # killed during epoch 2
    assert (killed / 'last_checkpoint').read_text() == str(killed / 'epoch_1.pth')

    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(killed), '--resume',
          *options])
    assert _val_metrics(killed, 2) == pytest.approx(_val_metrics(full, 2), abs=1e-6)
    resumed = ckpt.safe_load_checkpoint(killed / 'epoch_2.pth')['state_dict']
    reference = ckpt.safe_load_checkpoint(full / 'epoch_2.pth')['state_dict']
    assert resumed.keys() == reference.keys()
    assert not [k for k, v in reference.items()
                if not torch.allclose(resumed[k], v, atol=1e-6, rtol=0)]


class _GrowingModel(BaseModel):
    """Its weight grows by 1 per step, and the metric reports it: every epoch is a new best."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        if mode == 'loss':
            return dict(loss=-(self.weight * inputs).sum())
        return [dict(score=float(self.weight))]


class _WeightMetric(BaseMetric):

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results) -> dict:
        return dict(score=results[-1]['score'])


def _growing_runner(work_dir: Path, resume: bool, max_epochs: int = 3) -> TempMeRunner:
    loader = dict(dataset=[dict(inputs=torch.ones(1))] * 2, batch_size=1,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return TempMeRunner(
        model=_GrowingModel(), work_dir=str(work_dir), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=Evaluator([_WeightMetric()]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5)),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                                           save_best='score', rule='greater')),
        resume=resume, default_scope='mmaction',
        experiment_name=f'growing_{resume}_{time.time_ns()}')


def _resume_recording_validations(work_dir: Path) -> list:
    """Resume a 3-epoch run in ``work_dir``; the epochs validated, in order."""
    runner = _growing_runner(work_dir, resume=True)
    validated = []
    real_run = runner.val_loop.run

    def record_epoch():
        validated.append(runner.epoch)
        return real_run()

    runner.val_loop.run = record_epoch
    runner.train()
    return validated


def test_resume_validates_an_epoch_whose_best_checkpoint_was_lost(tmp_path, monkeypatch):
    real_write = atomic_checkpoint.atomic_write

    def killed_while_saving_the_second_best(path, write_fn):
        if Path(path).name.startswith('best_') and 'epoch_2' in Path(path).name:
            raise KeyboardInterrupt
        return real_write(path, write_fn)

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', killed_while_saving_the_second_best)
    with pytest.raises(KeyboardInterrupt):
        _growing_runner(tmp_path, resume=False).train()
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_score_epoch_1.pth']
    assert (tmp_path / 'epoch_2.pth').is_file()

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', real_write)
    validated = _resume_recording_validations(tmp_path)
    assert validated == [2, 3]  # epoch 2 again before training continues, then epoch 3
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_score_epoch_3.pth']
    assert (tmp_path / 'last_validated_epoch').read_text() == '3'


def test_a_clean_resume_does_not_validate_again(tmp_path):
    _growing_runner(tmp_path, resume=False, max_epochs=2).train()
    assert _resume_recording_validations(tmp_path) == [3]


def test_disk_full_and_read_only_name_the_file(tmp_path, monkeypatch):
    path = tmp_path / 'work' / 'epoch_1.pth'

    def disk_full(tmp):
        Path(tmp).write_bytes(b'half')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match=f'cannot write {path}: No space left on device') as err:
        atomic_write(path, disk_full)
    assert err.value.errno == 28 and not list((tmp_path / 'work').iterdir())

    def read_only(*args, **kwargs):
        raise OSError(30, 'Read-only file system')

    monkeypatch.setattr('tempfile.mkstemp', read_only)
    with pytest.raises(OSError, match=f'cannot write {path}: Read-only file system'):
        atomic_write(path, lambda tmp: None)
