"""Compute cost of encoders, counted by ``torch.utils.flop_counter``."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_gmacs(module: nn.Module, *inputs: torch.Tensor) -> float:
    """Multiply-accumulates (GMACs) of one forward pass; FLOPs are twice this."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() / 2e9


def video_gmacs(encoder: nn.Module, image_size: int) -> float:
    """GMACs per video of a video encoder taking (1, frames, 3, size, size)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return count_gmacs(encoder, torch.zeros(1, encoder.num_frames, 3, image_size,
                                                image_size))
    finally:
        encoder.train(was_training)
