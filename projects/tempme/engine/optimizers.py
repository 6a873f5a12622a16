"""The optimizer the published TempMe recipe trains with: BERT-style AdamW.

TempMe's published code steps a copy of the original BERT AdamW, which differs from
``torch.optim.AdamW`` in three places that change every update:

* ``eps`` is added to ``sqrt(v)`` of the *uncorrected* second moment, and the bias
  correction is folded into the step size, ``lr * sqrt(1 - b2^t) / (1 - b1^t)``;
* the decoupled weight decay ``p -= lr * weight_decay * p`` is applied *after* the Adam
  update, to the updated weights (torch decays first);
* its defaults are betas (0.9, 0.999) and eps 1e-6 (torch: 1e-8).

Neither torch nor mmengine ships this variant, so it is written here (vectorised over a
group's tensors with torch's ``_foreach`` kernels). ``torch.optim.AdamW`` stays the modern
choice (``configs/_base_/schedules/adamw_cosine_5e.py``).
"""
import math
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from mmaction.registry import OPTIMIZERS
from torch.optim import Optimizer

__all__ = ['BertAdamW']


@OPTIMIZERS.register_module()
class BertAdamW(Optimizer):
    """AdamW as the BERT code base (and TempMe's published recipe) computes it.

    Per parameter, with gradient ``g`` at step ``t``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)   # correct_bias=True
        p -= lr * weight_decay * p

    A parameter without a gradient is skipped and its step count does not advance.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: ``(b1, b2)``.
        eps: added to ``sqrt(v)`` (the uncorrected second moment).
        weight_decay: decoupled weight decay, applied after the update.
        correct_bias: fold Adam's bias correction into the step size (the BERT TF code
            used ``False``; TempMe uses ``True``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        if not lr >= 0.0:
            raise ValueError(f'BertAdamW: lr must be >= 0, got {lr}')
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f'BertAdamW: betas must be two values in [0, 1), got {betas}')
        if not eps >= 0.0:
            raise ValueError(f'BertAdamW: eps must be >= 0, got {eps}')
        if not weight_decay >= 0.0:
            raise ValueError(f'BertAdamW: weight_decay must be >= 0, got {weight_decay}')
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, correct_bias=correct_bias))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None
             ) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        b1, b2 = group['betas']
        lr, eps, decay = group['lr'], group['eps'], group['weight_decay']
        # parameters that skipped steps (no gradient) have other step counts, hence other
        # step sizes: update each count's tensors together
        by_step: Dict[int, List[torch.Tensor]] = defaultdict(list)
        for p in group['params']:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError('BertAdamW does not support sparse gradients')
            state = self.state[p]
            if not state:
                state['step'] = 0
                state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state['step'] += 1
            by_step[state['step']].append(p)
        for t, params in by_step.items():
            grads = [p.grad for p in params]
            exp_avg = [self.state[p]['exp_avg'] for p in params]
            exp_avg_sq = [self.state[p]['exp_avg_sq'] for p in params]
            torch._foreach_mul_(exp_avg, b1)
            torch._foreach_add_(exp_avg, grads, alpha=1.0 - b1)
            torch._foreach_mul_(exp_avg_sq, b2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - b2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, eps)
            step_size = lr
            if group['correct_bias']:
                step_size = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
            torch._foreach_addcdiv_(params, exp_avg, denom, value=-step_size)
            if decay > 0.0:
                torch._foreach_add_(params, params, alpha=-lr * decay)
