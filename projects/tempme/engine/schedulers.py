"""Linear warm-up then cosine decay, sized by the run it is in.

mmengine's ``LinearLR`` + ``CosineAnnealingLR`` take their ``end`` / ``T_max`` as numbers
written in the config, computed from ``max_epochs`` when the file is parsed: overriding
``train_cfg.max_epochs`` on the command line leaves the schedule at its old length, and
a warm-up that rounds to zero or one iteration stops mmengine or freezes the learning
rate. ``WarmupCosineLR`` states the warm-up as a fraction of the run and takes the run's
length from the runner when training starts (mmengine fills in a missing ``end`` with
``max_epochs`` and converts it to iterations with the real loader length).
"""
import math
from typing import List

from mmaction.registry import PARAM_SCHEDULERS
from mmengine.logging import MMLogger
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler


def warmup_cosine_factor(step: int, total: int, warmup: int, start_factor: float = 0.0,
                         end_factor: float = 0.0) -> float:
    """Multiplier of the base value at ``step`` of ``total``.

    TempMe's schedule (``get_cosine_schedule_with_warmup`` of the published code) with
    ``start_factor = end_factor = 0``: linear from ``start_factor`` to 1 over ``warmup``
    steps, then half a cosine from 1 down to ``end_factor`` at ``total``.
    """
    if step < warmup:
        return start_factor + (1.0 - start_factor) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Learning rate: linear warm-up over ``warmup_ratio`` of the run, then cosine decay.

    Leave ``end`` unset in configs: the runner sets it to ``max_epochs`` (or
    ``max_iters``), and with ``convert_to_iter_based=True`` steps are iterations. The
    warm-up is ``int(warmup_ratio * steps)`` steps, as in the published code; when that is
    zero (a very short run) it is skipped and the log says so.

    Args:
        optimizer: Wrapped optimizer.
        warmup_ratio: Fraction of the run spent warming up, in [0, 1).
        start_factor: Learning-rate multiplier at the first step (TempMe: 0).
        end_factor: Multiplier reached at the end of the run (TempMe: 0).
        begin, end, last_step, by_epoch, verbose: As in mmengine's schedulers.
    """

    def __init__(self, optimizer, warmup_ratio: float = 0.1, start_factor: float = 0.0,
                 end_factor: float = 0.0, begin: int = 0, end: int = INF,
                 last_step: int = -1, by_epoch: bool = True, verbose: bool = False) -> None:
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f'warmup_ratio must be in [0, 1), got {warmup_ratio}')
        if not 0.0 <= start_factor <= 1.0 or not 0.0 <= end_factor <= 1.0:
            raise ValueError(f'start_factor and end_factor must be in [0, 1], got '
                             f'{start_factor} and {end_factor}')
        if end == INF:
            raise ValueError(
                'WarmupCosineLR needs the length of the run: leave `end` unset in the config '
                'so that the runner sets it from train_cfg.max_epochs / max_iters')
        self.warmup_ratio = warmup_ratio
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_steps = int(end - begin)
        self.warmup_steps = int(warmup_ratio * self.total_steps)
        unit = 'epochs' if by_epoch else 'iterations'
        if warmup_ratio > 0 and self.warmup_steps == 0:
            MMLogger.get_current_instance().info(
                f'WarmupCosineLR: warm-up of {warmup_ratio:g} x {self.total_steps} {unit} is '
                'shorter than one step and is skipped')
        else:
            MMLogger.get_current_instance().info(
                f'WarmupCosineLR: {self.warmup_steps} warm-up and '
                f'{self.total_steps - self.warmup_steps} cosine {unit}')
        super().__init__(optimizer, begin=begin, end=end,
                         last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, begin: float = 0, end: float = INF,
                              by_epoch: bool = True, epoch_length: int = None, **kwargs):
        """The same schedule in iterations, for ``convert_to_iter_based=True``."""
        if not by_epoch:
            raise ValueError('convert_to_iter_based needs by_epoch=True')
        if not epoch_length or epoch_length < 1:
            raise ValueError(f'the training loader has no batches (epoch_length={epoch_length})')
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        return cls(*args, begin=begin, end=end, by_epoch=False, **kwargs)

    def _get_value(self) -> List[float]:
        factor = warmup_cosine_factor(self.last_step, self.total_steps, self.warmup_steps,
                                      self.start_factor, self.end_factor)
        return [base * factor for base in self.base_values]
