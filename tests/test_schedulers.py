"""The learning-rate schedule follows the run: any loader length, an overridden max_epochs."""
import math
from pathlib import Path
from typing import List

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner

from projects.tempme.engine import WarmupCosineLR, warmup_cosine_factor

ROOT = Path(__file__).resolve().parents[1]
BASE_LR = 6e-4


def published_lr(step: int, total: int, ratio: float = 0.1) -> float:
    """get_cosine_schedule_with_warmup of the published TempMe code, at ``step``."""
    warmup = int(ratio * total)
    if step < warmup:
        return BASE_LR * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return BASE_LR * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class _Toy(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.weight * inputs).sum())


class _RecordLR(Hook):
    """The learning rate each training iteration ran with, as the logger reports it."""

    def __init__(self) -> None:
        self.lrs: List[float] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.lrs.append(runner.message_hub.get_scalar('train/lr').current())


def _train(tmp_path, iters_per_epoch: int, options: dict = None) -> List[float]:
    cfg = Config.fromfile(ROOT / 'configs/_base_/schedules/adamw_cosine_5e.py')
    cfg.merge_from_dict(options or {})
    recorder = _RecordLR()
    runner = Runner(
        model=_Toy(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * iters_per_epoch, batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=cfg.train_cfg.max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=BASE_LR)),
        param_scheduler=cfg.param_scheduler, custom_hooks=[recorder],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmaction', experiment_name=f'sched_{iters_per_epoch}_{id(recorder)}')
    runner.train()
    return recorder.lrs


@pytest.mark.parametrize('iters_per_epoch', [1, 2, 3, 4, 100])
def test_logged_lr_is_the_published_schedule(tmp_path, iters_per_epoch) -> None:
    lrs = _train(tmp_path, iters_per_epoch)
    total = 5 * iters_per_epoch
    assert len(lrs) == total
    assert lrs == pytest.approx([published_lr(s, total) for s in range(total)], abs=1e-12)
    assert max(lrs) == pytest.approx(BASE_LR, rel=0.02)  # the peak is reached
    assert lrs[-1] < 0.1 * BASE_LR  # and the decay finishes


def test_overridden_max_epochs_moves_the_whole_schedule(tmp_path) -> None:
    lrs = _train(tmp_path, 10, {'train_cfg.max_epochs': 4})
    assert len(lrs) == 40
    assert lrs == pytest.approx([published_lr(s, 40) for s in range(40)], abs=1e-12)
    assert lrs[4] == pytest.approx(BASE_LR)  # warm-up: 10% of 40 iterations
    lrs = _train(tmp_path / 'b', 10, {'train_cfg.max_epochs': 8})
    assert lrs == pytest.approx([published_lr(s, 80) for s in range(80)], abs=1e-12)


def test_warmup_shorter_than_one_step_is_skipped_with_a_log_line(tmp_path) -> None:
    logger = MMLogger.get_instance('sched_short', log_level='INFO')
    messages = []
    handler = type('H', (__import__('logging').Handler, ), {
        'emit': lambda self, record: messages.append(record.getMessage())})()
    logger.addHandler(handler)
    with torch.no_grad():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    try:
        scheduler = WarmupCosineLR(optimizer, warmup_ratio=0.1, end=5, by_epoch=False)
    finally:
        logger.removeHandler(handler)
    assert scheduler.warmup_steps == 0
    assert optimizer.param_groups[0]['lr'] == pytest.approx(1.0)  # starts at the peak
    assert any('shorter than one step and is skipped' in m for m in messages), messages


def test_scheduler_refuses_a_run_without_a_length() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    with pytest.raises(ValueError, match='leave `end` unset'):
        WarmupCosineLR(optimizer)
    with pytest.raises(ValueError, match='warmup_ratio'):
        WarmupCosineLR(optimizer, warmup_ratio=1.0, end=10)


def test_factor_shape() -> None:
    assert warmup_cosine_factor(0, 100, 10) == 0.0
    assert warmup_cosine_factor(5, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine_factor(0, 100, 10, start_factor=0.01) == pytest.approx(0.01)
    assert warmup_cosine_factor(100, 100, 10, end_factor=0.1) == pytest.approx(0.1)


@pytest.mark.parametrize('config', ['tempme_msrvtt.py', 'tempme_tiny.py', 'tempme_synthetic.py',
                                    'clip4clip_tempme_msrvtt.py'])
def test_configs_state_the_schedule_as_fractions_of_the_run(config) -> None:
    cfg = Config.fromfile(ROOT / 'configs' / config)
    for scheduler in cfg.param_scheduler:
        assert 'end' not in scheduler and 'T_max' not in scheduler, scheduler
        assert scheduler.type == 'WarmupCosineLR' and scheduler.convert_to_iter_based
