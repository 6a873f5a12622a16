"""Refuse a checkpoint that does not fit the model, listing what differs.

mmengine's ``Runner.load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``) loads
with ``strict=False``: missing, unexpected and shape-mismatched weights only produce a
warning, and the run goes on with random weights where the checkpoint did not fit. A
checkpoint of another CLIP width, of full fine-tuning loaded into a LoRA model, or of
another merge schedule (temporal embeddings per merge layer) then trains or tests the wrong
model. :class:`StrictLoadHook` compares the keys and shapes before anything is copied and
raises :class:`CheckpointMismatchError` with the lists.
"""
import re
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

from mmaction.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint

__all__ = ['CheckpointMismatchError', 'StateDictMismatch', 'StrictLoadHook',
           'compare_state_dicts', 'format_mismatch']

# Buffers mmengine's loader does not require either (BatchNorm step counters).
_IGNORED_MISSING = re.compile(r'(^|\.)num_batches_tracked$')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model built from the config."""


class StateDictMismatch(NamedTuple):
    """What keeps a checkpoint from loading exactly into a model."""

    missing: List[str]  # in the model, not in the checkpoint
    unexpected: List[str]  # in the checkpoint, not in the model
    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]  # key, checkpoint, model

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def compare_state_dicts(model_state: Mapping[str, Any],
                        checkpoint_state: Mapping[str, Any]) -> StateDictMismatch:
    """Missing, unexpected and shape-mismatched keys of ``checkpoint_state``."""
    missing = [k for k in model_state
               if k not in checkpoint_state and not _IGNORED_MISSING.search(k)]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    shapes = []
    for key, value in checkpoint_state.items():
        expected = model_state.get(key)
        if hasattr(value, 'shape') and hasattr(expected, 'shape') \
                and tuple(value.shape) != tuple(expected.shape):
            shapes.append((key, tuple(value.shape), tuple(expected.shape)))
    return StateDictMismatch(missing, unexpected, shapes)


def _listing(title: str, items: List[str], limit: int) -> str:
    shown = ''.join(f'\n    {item}' for item in items[:limit])
    more = f'\n    ... and {len(items) - limit} more' if len(items) > limit else ''
    return f'\n  {len(items)} {title}:{shown}{more}'


def format_mismatch(mismatch: StateDictMismatch, source: str, limit: int = 20) -> str:
    """A readable report: counts, the first ``limit`` keys of each kind, what to do."""
    text = f'checkpoint {source} does not fit the model built from the config:'
    if mismatch.missing:
        text += _listing('missing keys (in the model, not in the checkpoint)',
                         mismatch.missing, limit)
    if mismatch.unexpected:
        text += _listing('unexpected keys (in the checkpoint, not in the model)',
                         mismatch.unexpected, limit)
    if mismatch.shapes:
        text += _listing('shape mismatches (checkpoint vs model)',
                         [f'{k}: {tuple(a)} vs {tuple(b)}' for k, a, b in mismatch.shapes],
                         limit)
    return text


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _checkpoint_source(runner) -> str:
    """The file being loaded, as the runner chose it (``load_from`` or the latest one)."""
    path: Optional[str] = getattr(runner, '_load_from', None)
    if path is None and getattr(runner, '_resume', False):
        path = find_latest_checkpoint(runner.work_dir)
    return repr(path) if path else '(unknown file)'


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Fail, naming every difference, when a loaded checkpoint does not fit the model.

    Runs after the other hooks' ``after_load_checkpoint`` (``PEFTCheckpointHook`` completes
    adapter-only checkpoints with the base weights first), before mmengine copies weights.

    Args:
        strict: raise :class:`CheckpointMismatchError`; ``False`` logs the same report as
            a warning, for deliberate partial loading.
    """

    priority = 'LOWEST'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint)
        # mmengine strips a DDP prefix before loading; compare what it will load.
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        mismatch = compare_state_dicts(_unwrap(runner.model).state_dict(), state)
        if not mismatch:
            return
        meta = checkpoint.get('meta') or {}
        message = format_mismatch(mismatch, _checkpoint_source(runner))
        if meta.get('adapter_only') and mismatch.missing:
            message += ('\nIt is an adapter-only checkpoint (trained weights only): add '
                        "dict(type='PEFTCheckpointHook') to custom_hooks so the frozen weights "
                        'come from model.clip.weights.')
        message += ('\nWas it trained with another model config (CLIP architecture or width, '
                    'LoRA or full fine-tuning, merge schedule, head)? Use the config it was '
                    "trained with; the checkpoint stores it in meta['cfg'].")
        if self.strict:
            raise CheckpointMismatchError(message)
        runner.logger.warning(message)
