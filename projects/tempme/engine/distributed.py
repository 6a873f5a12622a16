"""The DDP wrapper of this project's configs: mmengine's, with the retriever's own step.

mmengine's ``MMDistributedDataParallel.train_step`` runs the module's forward and the
optimizer step itself and never calls the module's ``train_step``. The retriever's step
adds two things that must also happen under DDP: the temperature clamp after every step
and, with ``model.train_chunk_size``, gradient caching (whose chunks go through the DDP
forward, all but the last inside ``no_sync``, so gradients are all-reduced once).
"""
from typing import Dict, Union

import torch
from mmaction.registry import MODEL_WRAPPERS
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

from ..models.grad_cache import cached_contrastive_step

__all__ = ['RetrieverDistributedDataParallel']


@MODEL_WRAPPERS.register_module()
class RetrieverDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that keeps a retriever's training step whole.

    Modules without ``train_chunk_size`` / ``clamp_logit_scale_`` train exactly as with
    mmengine's wrapper.
    """

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        chunk_size = getattr(self.module, 'train_chunk_size', None)
        if chunk_size is None:
            log_vars = super().train_step(data, optim_wrapper)
        else:
            log_vars = cached_contrastive_step(self.module, self, data, optim_wrapper,
                                               chunk_size, no_sync=self.no_sync)
        clamp = getattr(self.module, 'clamp_logit_scale_', None)
        if clamp is not None:
            clamp()
        return log_vars
