"""mmengine glue: training hooks."""
from .hooks import EpochSeedHook, PEFTCheckpointHook

__all__ = ['EpochSeedHook', 'PEFTCheckpointHook']
