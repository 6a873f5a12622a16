"""The runner this project's configs name: mmengine's, with checkpoints loaded safely.

Safe loading (:func:`~projects.tempme.checkpoint.safe_checkpoint_loading`) is switched on
for the runs of this project's configs only, never at import: ``configs/_base_/
default_runtime.py`` selects this runner with ``runner_type='mmaction.TempMeRunner'`` (the
scope lets mmengine's root registry find it before any default scope is set), which
mmaction2's and mmengine's tools honour as well as ours. Every checkpoint such a run opens
(``load_from``, ``resume``, ``init_cfg``) is loaded with ``weights_only=True`` and the
project's allow-list; other runners in the same process keep mmengine's loaders.
"""
from typing import Any, Dict

import torch.nn as nn
from mmaction.registry import RUNNERS
from mmengine.runner import Runner

from ..checkpoint import latest_checkpoint, safe_checkpoint_loading

__all__ = ['TempMeRunner']


@RUNNERS.register_module()
class TempMeRunner(Runner):
    """:class:`mmengine.runner.Runner` that loads checkpoints safely.

    ``train`` covers the model's ``init_cfg`` as well as ``load_from`` / ``resume``;
    ``val`` and ``test`` load through :meth:`load_checkpoint`. Automatic resume reads only
    checkpoints inside the work dir.
    """

    def train(self) -> nn.Module:
        with safe_checkpoint_loading():
            return super().train()

    def load_or_resume(self) -> None:
        """Resume (``resume=True`` without a path) from the checkpoint ``last_checkpoint``
        names, resolved inside the work dir (:func:`latest_checkpoint`)."""
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = latest_checkpoint(self.work_dir)
        super().load_or_resume()

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        with safe_checkpoint_loading():
            return super().load_checkpoint(*args, **kwargs)

    def resume(self, *args: Any, **kwargs: Any) -> None:
        with safe_checkpoint_loading():
            super().resume(*args, **kwargs)
