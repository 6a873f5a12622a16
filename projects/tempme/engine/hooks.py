"""PEFT checkpointing: log what trains, save only it, load it over base CLIP weights.

LoRA injection and freezing happen when the model is built (``TempMeRetriever(lora=...,
train_mode='peft')``), not in a hook: mmengine wraps the model in DDP before any hook
runs, and DDP fixes the set of trained parameters when it wraps.
"""
from typing import Dict

from mmaction.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import set_random_seed

from ..checkpoint import fill_adapter_state, unwrap_model


@HOOKS.register_module()
class PEFTCheckpointHook(Hook):
    """Keep adapter-only checkpoints: a few MB instead of the whole CLIP.

    Saved checkpoints hold only the trainable weights (LoRA, temporal embeddings,
    head) and ``meta['adapter_only'] = True``. When such a checkpoint is loaded
    (``load_from``, ``--resume``, ``tools/test.py``) the frozen weights are taken from
    the model as built, i.e. from the configured base CLIP weights.

    Works with models that report ``parameter_counts()`` (``TempMeRetriever``).

    Args:
        adapter_only: strip frozen weights from saved checkpoints.
    """

    priority = 'VERY_LOW'

    def __init__(self, adapter_only: bool = True) -> None:
        self.adapter_only = adapter_only

    def before_run(self, runner) -> None:
        counts = unwrap_model(runner.model).parameter_counts()
        runner.logger.info(f'trainable parameters: {counts["trainable"]:,} of '
                           f'{counts["total"]:,} '
                           f'({100 * counts["trainable"] / max(counts["total"], 1):.2f}%)')

    def before_save_checkpoint(self, runner, checkpoint: Dict) -> None:
        if not self.adapter_only:
            return
        model = unwrap_model(runner.model)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        checkpoint['state_dict'] = {k: v for k, v in checkpoint['state_dict'].items()
                                    if k in trainable}
        checkpoint.setdefault('meta', {})['adapter_only'] = True

    def after_load_checkpoint(self, runner, checkpoint: Dict) -> None:
        if not checkpoint.get('meta', {}).get('adapter_only'):
            return
        state = checkpoint['state_dict']
        checkpoint['state_dict'], filled = fill_adapter_state(
            unwrap_model(runner.model).state_dict(), state)
        runner.logger.info(f'adapter checkpoint: {len(state)} tensors loaded, {filled} '
                           'taken from the base CLIP weights')


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed Python, NumPy and torch at the start of every training epoch.

    mmengine restores the seed on ``--resume`` but not the generators' state, so random
    frame sampling after a resume would differ from an uninterrupted run. Seeding each
    epoch from ``(seed, epoch)`` makes an epoch's randomness independent of how the run
    got there (in the main process and in non-persistent dataloader workers, which
    mmengine seeds afresh each epoch).
    """

    def before_train_epoch(self, runner) -> None:
        seed = runner.seed if runner.seed is not None else 0
        set_random_seed(seed + runner.epoch, deterministic=False)
