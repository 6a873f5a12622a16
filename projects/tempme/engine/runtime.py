"""Runner settings that let the same configs run distributed on CPU-only machines.

mmengine 0.10.7 assumes CUDA under a distributed launcher: ``init_dist`` calls
``torch.cuda.set_device`` and the DDP wrapper gets ``device_ids=[LOCAL_RANK]``. Without
CUDA we start the gloo process group ourselves (mmengine then leaves it alone) and wrap
with ``device_ids=None``, as DDP requires for CPU modules.
"""
import torch
import torch.distributed as dist
from mmengine.config import Config


def adapt_to_device(cfg: Config) -> Config:
    """Switch a config to gloo and CPU DDP when no GPU is available."""
    if torch.cuda.is_available():
        return cfg
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('launcher', 'none') == 'none':
        return cfg
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    return cfg
