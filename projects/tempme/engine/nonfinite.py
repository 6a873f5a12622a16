"""Stop (or skip) a training step whose loss or gradients are NaN / inf, before it is applied.

A non-finite loss poisons every weight it touches, and the next checkpoint then saves the
damage over the last good one. The wrappers below check the loss before ``backward`` and
(without AMP, whose loss scaler already skips steps with inf gradients) the gradient norm
before ``optimizer.step``:

* ``on_nonfinite='stop'`` raises :class:`NonFiniteLossError` naming the iteration, the epoch
  and the last good checkpoint; nothing of the bad step reaches the weights or the optimizer
  state, and no checkpoint is written.
* ``on_nonfinite='skip'`` drops the step, counts it (logged as ``skipped_steps``) and stops
  only after more than ``max_consecutive_skips`` bad steps in a row.

Every process takes the same decision (the loss check is reduced over the process group;
the gradients are already reduced by DDP), so a skip never desynchronises a distributed run.

Both wrappers also take ``grad_scale``: the gradient that is clipped and stepped is the
gradient of the loss times ``grad_scale``. This project's loss gives the true gradient of
the global batch's loss on any number of processes; the published TempMe code gives that
divided by its world size (its feature gather keeps only the local slice in backward and
DDP averages), which changes what a clipping threshold means. ``grad_scale`` states that
scale in the config instead of leaving it to the number of GPUs. The logged loss is not
scaled.
"""
import math
import os.path as osp
from typing import Dict, Optional

import torch
import torch.distributed as dist
from mmaction.registry import OPTIM_WRAPPERS
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper

__all__ = ['NonFiniteLossError', 'GuardedOptimWrapper', 'GuardedAmpOptimWrapper',
           'ON_NONFINITE']

#: Accepted values of ``optim_wrapper.on_nonfinite``.
ON_NONFINITE = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss or gradient was NaN or infinite."""


def _loss_is_finite_everywhere(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (one tiny all-reduce when distributed)."""
    bad = (~torch.isfinite(loss.detach())).any().to(torch.float32)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item() == 0)


def _describe_value(loss: torch.Tensor) -> str:
    values = loss.detach().float().flatten()
    bad = values[~torch.isfinite(values)]
    return str(bad[0].item()) if bad.numel() else 'finite here, non-finite on another process'


def training_position(hub: Optional[MessageHub] = None) -> str:
    """``iteration 7 of 16 (epoch 2 of 2)``, 1-based like mmengine's log lines."""
    hub = hub or MessageHub.get_current_instance()
    info = hub.runtime_info
    if 'iter' not in info:
        return 'an unknown iteration (no runner is recording the training position)'
    text = f'iteration {info["iter"] + 1}'
    if 'max_iters' in info:
        text += f' of {info["max_iters"]}'
    if 'epoch' in info:
        text += f' (epoch {info["epoch"] + 1}'
        text += f' of {info["max_epochs"]})' if 'max_epochs' in info else ')'
    return text


def last_good_checkpoint(hub: Optional[MessageHub] = None) -> str:
    """Where the last checkpoint of this run is, as a sentence for error messages."""
    hub = hub or MessageHub.get_current_instance()
    path = hub.runtime_info.get('last_ckpt')
    if not path:
        return 'No checkpoint has been saved in this run yet.'
    if not osp.exists(path):
        return f'The last checkpoint recorded, {path}, no longer exists.'
    return (f'The last good checkpoint is {path}; continue from it with '
            f'`tools/train.py CONFIG --resume {path}`.')


class _NonFiniteGuard:
    """The checks shared by the plain and the AMP wrapper (a mixin over ``OptimWrapper``)."""

    #: Whether ``step`` checks the gradient norm (AMP's loss scaler does that itself).
    check_grads = True

    def _init_guard(self, on_nonfinite: str, max_consecutive_skips: int,
                    grad_scale: float) -> None:
        if not (isinstance(grad_scale, (int, float)) and math.isfinite(grad_scale)
                and grad_scale > 0):
            raise ValueError(f'optim_wrapper.grad_scale must be a number > 0, got {grad_scale!r}')
        self.grad_scale = float(grad_scale)
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f'optim_wrapper.on_nonfinite must be one of {ON_NONFINITE}, got '
                             f'{on_nonfinite!r}')
        if not isinstance(max_consecutive_skips, int) or max_consecutive_skips < 0:
            raise ValueError('optim_wrapper.max_consecutive_skips must be an integer >= 0, got '
                             f'{max_consecutive_skips!r}')
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._window_has_grads = False  # a good micro-batch added gradients since the last step

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """mmengine's accumulation scaling, times ``grad_scale``."""
        loss = super().scale_loss(loss)
        return loss if self.grad_scale == 1.0 else loss * self.grad_scale

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        if _loss_is_finite_everywhere(loss):
            self.consecutive_skips = 0
            super().update_params(loss, step_kwargs, zero_kwargs)
            # ``super`` stepped (and zeroed the gradients) exactly when should_update() holds.
            self._window_has_grads = not self.should_update()
        else:
            self._reject('loss', _describe_value(loss))
            # the micro-batch is consumed, as backward would count it (OptimWrapper's private
            # counter, mmengine 0.10.x; setup.cfg pins < 0.11)
            self._inner_count += 1
            if self.should_update():
                if self._window_has_grads:  # other micro-batches of this window were fine
                    self.step(**(step_kwargs or {}))
                self.zero_grad(**(zero_kwargs or {}))
                self._window_has_grads = False
        if self.on_nonfinite == 'skip':
            self.message_hub.update_scalar('train/skipped_steps', self.skipped_steps)

    def state_dict(self) -> dict:
        """The optimizer's state plus the skip count, so that a resumed run keeps counting."""
        state = super().state_dict()
        state['skipped_steps'] = self.skipped_steps
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)  # checkpoints written before the count was stored lack it
        self.skipped_steps = int(state_dict.pop('skipped_steps', 0))
        super().load_state_dict(state_dict)

    def step(self, **kwargs) -> None:
        if self.check_grads:
            norm = self._grad_norm()
            if norm is not None and not math.isfinite(norm):
                self._reject('gradient norm', str(norm))
                return  # update_params zeroes the gradients next
        super().step(**kwargs)

    def _grad_norm(self) -> Optional[float]:
        grads = [p.grad for group in self.optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        if not grads:
            return None
        return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))

    def _reject(self, what: str, value: str) -> None:
        """Raise in 'stop' mode; count, log and allow a limited run of skips in 'skip' mode."""
        where = training_position(self.message_hub)
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(
                f'non-finite {what} ({value}) at {where}; training stopped before this step '
                f'changed any weight. {last_good_checkpoint(self.message_hub)} Lower the '
                'learning rate, check the data of this iteration, or set '
                "optim_wrapper.on_nonfinite='skip' to skip such steps.")
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips > self.max_consecutive_skips:
            raise NonFiniteLossError(
                f'{self.consecutive_skips} consecutive steps had a non-finite loss or gradient '
                f'(the last: {what} {value} at {where}), more than '
                f'optim_wrapper.max_consecutive_skips={self.max_consecutive_skips}; training '
                f'stopped. {last_good_checkpoint(self.message_hub)}')
        MMLogger.get_current_instance().warning(
            f'skipped the step at {where}: non-finite {what} ({value}); '
            f'{self.skipped_steps} step(s) skipped so far')


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(_NonFiniteGuard, OptimWrapper):
    """``OptimWrapper`` that never applies a step with a NaN / inf loss or gradient.

    Args:
        on_nonfinite: ``'stop'`` (raise :class:`NonFiniteLossError`) or ``'skip'``.
        max_consecutive_skips: in skip mode, stop after more bad steps than this in a row.
        grad_scale: multiplies the gradient before clipping and stepping (module docstring).
        **kwargs: :class:`mmengine.optim.OptimWrapper` arguments.
    """

    def __init__(self, *args, on_nonfinite: str = 'stop', max_consecutive_skips: int = 10,
                 grad_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_guard(on_nonfinite, max_consecutive_skips, grad_scale)


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(_NonFiniteGuard, AmpOptimWrapper):
    """``AmpOptimWrapper`` with the loss check of :class:`GuardedOptimWrapper`.

    Inf gradients are left to the loss scaler, which skips those steps and lowers the scale
    as mixed precision training expects.
    """

    check_grads = False

    def __init__(self, *args, on_nonfinite: str = 'stop', max_consecutive_skips: int = 10,
                 grad_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_guard(on_nonfinite, max_consecutive_skips, grad_scale)
