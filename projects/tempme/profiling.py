"""Measuring the cost of encoders: operation counts, peak memory and interleaved timing.

Kept free of models and configs so each measure can be tested on toy functions.
"""
import copy
import os
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from projects.tempme_cli import UserError


def count_gmacs(module: nn.Module, *inputs: torch.Tensor) -> float:
    """Multiply-accumulates (GMACs) of one forward pass; FLOPs are twice this."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() / 2e9


def video_gmacs(encoder: nn.Module) -> float:
    """GMACs per video of a video encoder as it is deployed: one video of its
    ``input_shape``, in eval mode, with LoRA folded into the weights.

    The one counting rule of every tool (benchmark, demo, visualisation, deployment
    benchmark): LoRA adapters are folded for inference (:func:`~.models.lora.merge_lora`,
    as the ONNX export does), so whether a model was trained with LoRA does not change its
    cost; counting the unfolded adapters would add about 0.35% for ViT-B/32.
    """
    from .models.lora import is_lora_parameter, merge_lora
    if any(is_lora_parameter(name) for name, _ in encoder.named_parameters()):
        encoder = merge_lora(copy.deepcopy(encoder))
    was_training = encoder.training
    encoder.eval()
    try:
        return count_gmacs(encoder, torch.zeros(1, *encoder.input_shape))
    finally:
        encoder.train(was_training)


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device: ``auto`` is CUDA when available; a CUDA device on a
    machine without one, or a name torch does not know, is a one-line user error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f'--device {name}: {err}') from err
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {name}: no CUDA GPU is available to torch '
                        f'{torch.__version__} on this machine; use --device cpu')
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f'--device {name}: this machine has {torch.cuda.device_count()} '
                        'CUDA device(s)')
    return device


def cpu_peak_allocated(fn: Callable[[], object]) -> int:
    """Peak bytes of CPU tensor memory allocated by ``fn`` above what was live before it.

    The CPU counterpart of CUDA's ``max_memory_allocated`` after a reset: every
    allocation and free of the CPU allocator is recorded by the torch profiler and
    replayed in time order. Unlike process RSS it is exact and repeatable (it ignores
    allocator caching, the Python heap and other threads).
    """
    from torch.profiler import ProfilerActivity, profile

    # libkineto logs every start/stop, and on a machine without a GPU an error from its
    # device query; read when the profiler first starts, so set before it does
    os.environ.setdefault('KINETO_LOG_LEVEL', '6')
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory_bytes(fn: Callable[[], object], device: torch.device,
                      resident: int = 0) -> int:
    """Peak tensor memory while ``fn`` runs: what is already ``resident`` plus its peak.

    CUDA reads ``max_memory_allocated`` (which already includes resident tensors);
    CPU adds :func:`cpu_peak_allocated` to ``resident``.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return resident + cpu_peak_allocated(fn)


def tensor_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes held by distinct storages among ``tensors`` (shared storages count once)."""
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def interleaved_timings(fns: Dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                        synchronize: Callable[[], None] = lambda: None
                        ) -> Dict[str, List[float]]:
    """Seconds per call of each function, run in turn (a, b, c, a, b, c, ...).

    Interleaving exposes every method to the same drift of a shared machine, so ratios
    taken within a round (see :func:`median_ratio`) are far steadier than ratios of
    separately measured means.
    """
    if rounds < 1:
        raise ValueError(f'rounds must be >= 1, got {rounds}')
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of ``times[i] / baseline[i]``."""
    if len(times) != len(baseline) or not times:
        raise ValueError('need the same, non-zero number of rounds for both')
    return statistics.median(t / b for t, b in zip(times, baseline))
