"""Data preparation: dataset converters, the synthetic benchmark, frame caches.

Nothing here imports torch or mmaction2 on import, so ``--help`` answers at once."""
