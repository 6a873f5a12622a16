"""mmengine glue: the runner, training hooks, fault-tolerant checkpointing, optimizer steps."""
from .atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend
from .data_fits_model import DataFitsModelHook
from .hooks import EpochSeedHook, PEFTCheckpointHook
from .nonfinite import GuardedAmpOptimWrapper, GuardedOptimWrapper, NonFiniteLossError
from .runner import TempMeRunner
from .schedulers import WarmupCosineLR, warmup_cosine_factor
from .strict_load import CheckpointMismatchError, StrictLoadHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointMismatchError', 'DataFitsModelHook',
    'EpochSeedHook', 'GuardedAmpOptimWrapper', 'GuardedOptimWrapper', 'NonFiniteLossError',
    'PEFTCheckpointHook', 'StrictLoadHook', 'TempMeRunner', 'WarmupCosineLR',
    'warmup_cosine_factor'
]
