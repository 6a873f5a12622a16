"""mmengine glue: the runner, training hooks, fault-tolerant checkpointing, optimizer steps."""
from .atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend
from .data_fits_model import DataFitsModelHook
from .distributed import RetrieverDistributedDataParallel
from .hooks import EpochSeedHook, PEFTCheckpointHook
from .nonfinite import GuardedAmpOptimWrapper, GuardedOptimWrapper, NonFiniteLossError
from .optimizers import BertAdamW
from .protocols import ProtocolTestLoop, ProtocolTrainLoop
from .runner import TempMeRunner
from .schedulers import WarmupCosineLR, warmup_cosine_factor
from .strict_load import CheckpointMismatchError, StrictLoadHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'BertAdamW', 'CheckpointMismatchError',
    'DataFitsModelHook', 'RetrieverDistributedDataParallel',
    'EpochSeedHook', 'GuardedAmpOptimWrapper', 'GuardedOptimWrapper', 'NonFiniteLossError',
    'PEFTCheckpointHook', 'ProtocolTestLoop', 'ProtocolTrainLoop', 'StrictLoadHook',
    'TempMeRunner', 'WarmupCosineLR',
    'warmup_cosine_factor'
]
