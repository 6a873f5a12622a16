"""Refuse a checkpoint that does not fit the model, listing what differs.

mmengine's ``Runner.load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``) loads
with ``strict=False``: missing, unexpected and shape-mismatched weights only produce a
warning, and the run goes on with random weights where the checkpoint did not fit. A
checkpoint of another CLIP width, of full fine-tuning loaded into a LoRA model, or of
another merge schedule (temporal embeddings per merge layer) then trains or tests the wrong
model. :class:`StrictLoadHook` compares the keys and shapes before anything is copied and
raises :class:`CheckpointMismatchError` with the lists.
"""
from typing import Optional

from mmaction.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import find_latest_checkpoint

from ..checkpoint import (compare_state_dicts, format_mismatch, state_dict_of, strip_ddp_prefix,
                          unwrap_model)

__all__ = ['CheckpointMismatchError', 'StrictLoadHook']


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model built from the config."""


def _checkpoint_source(runner) -> str:
    """The file being loaded, as the runner chose it (``load_from`` or the latest one).

    Reads ``Runner._load_from`` / ``_resume`` (private; mmengine 0.10.x, pinned ``<0.11``):
    the hook is called without the path.
    """
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
        # mmengine strips a DDP prefix before loading; compare what it will load.
        state = strip_ddp_prefix(state_dict_of(checkpoint))
        mismatch = compare_state_dicts(unwrap_model(runner.model).state_dict(), state)
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
