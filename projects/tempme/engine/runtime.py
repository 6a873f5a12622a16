"""Building the runner, with settings that let configs run distributed on CPU-only machines.

mmengine 0.10.7 assumes CUDA under a distributed launcher: ``init_dist`` calls
``torch.cuda.set_device`` and the DDP wrapper gets ``device_ids=[LOCAL_RANK]``. Without
CUDA we start the gloo process group ourselves (mmengine then leaves it alone) and wrap
with ``device_ids=None``, as DDP requires for CPU modules.
"""
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def adapt_to_device(cfg: Config) -> Config:
    """Switch a config to gloo and CPU DDP when no GPU is available."""
    if torch.cuda.is_available():
        return cfg
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('launcher', 'none') == 'none':
        return cfg
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type``, as mmaction2's tools build it) on this device."""
    cfg = adapt_to_device(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
