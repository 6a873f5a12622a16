"""Gradient caching: the contrastive loss of a large batch with the memory of a small one.

The contrastive loss couples every sample of the (global) batch, so the batch cannot
simply be split into accumulation steps: each piece would see other negatives. Caching
the embedding gradients gives the exact gradient of the whole batch's loss instead:

1. encode the batch in chunks without keeping activations;
2. compute the loss over all embeddings (gathered from every process, as the normal
   step does) and its gradient with respect to each embedding (and the temperature);
3. re-encode each chunk with activations and back-propagate the cached embedding
   gradients through it (``sum(embedding * cached_gradient)``), one chunk at a time.

Peak activation memory is that of one chunk; the cost is one extra forward pass. Under
DDP every chunk but the last runs inside ``no_sync`` so gradients are all-reduced once.
Random state is replayed per chunk, so layers that draw random numbers (dropout) give
the second pass the same activations as the first.
"""
from contextlib import nullcontext
from typing import Callable, ContextManager, Dict, List

import torch
from mmengine.optim import OptimWrapper

__all__ = ['chunk_slices', 'cached_contrastive_step']


def chunk_slices(batch: int, chunk_size: int) -> List[slice]:
    """Consecutive slices of at most ``chunk_size`` samples covering ``range(batch)``."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f'train_chunk_size must be an integer >= 1, got {chunk_size!r}')
    return [slice(i, min(i + chunk_size, batch)) for i in range(0, batch, chunk_size)]


def _take(inputs: Dict[str, torch.Tensor], part: slice) -> Dict[str, torch.Tensor]:
    return {k: v[part] for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == 'cuda' else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_contrastive_step(model: torch.nn.Module, forward: Callable, data: dict,
                            optim_wrapper: OptimWrapper, chunk_size: int,
                            no_sync: Callable[[], ContextManager] = nullcontext
                            ) -> Dict[str, torch.Tensor]:
    """One optimizer step of ``model`` on ``data`` with gradient caching.

    Args:
        model: the retriever (``data_preprocessor``, ``loss``, ``parse_losses``,
            ``logit_scale``), unwrapped.
        forward: what encodes a chunk, ``forward(inputs=..., mode='tensor') -> (text,
            video)``: the model itself, or its DDP wrapper so that gradients are reduced.
        data: a batch as the data loader gives it.
        optim_wrapper: steps, clips and scales as in the normal step; gradient
            accumulation (``accumulative_counts > 1``) is not combined with caching.
        chunk_size: samples encoded at once on this process.
        no_sync: the wrapper's ``no_sync`` (DDP), entered for all chunks but the last.

    Returns:
        The log variables of the normal step (``loss``, ``logit_scale``).
    """
    if getattr(optim_wrapper, '_accumulative_counts', 1) != 1:
        raise ValueError('model.train_chunk_size (gradient caching) already gives the gradient '
                         'of the whole batch; it cannot be combined with '
                         'optim_wrapper.accumulative_counts > 1')
    with optim_wrapper.optim_context(forward):
        data = model.data_preprocessor(data, training=True)
    inputs = data['inputs']
    batch = inputs['video'].shape[0]
    if inputs['text'].shape[0] != batch:
        raise ValueError('training batches need exactly one caption per video, got '
                         f'{inputs["text"].shape[0]} captions for {batch} videos')
    device = inputs['video'].device
    parts = chunk_slices(batch, chunk_size)

    states, texts, videos = [], [], []
    with torch.no_grad():
        for part in parts:
            states.append(_rng_state(device))
            with optim_wrapper.optim_context(forward):
                text, video = forward(inputs=_take(inputs, part), mode='tensor')
            texts.append(text)
            videos.append(video)
    text = torch.cat(texts).requires_grad_()
    video = torch.cat(videos).requires_grad_()
    loss, log_vars = model.parse_losses(model.loss(text, video))
    if not bool(torch.isfinite(loss.detach()).all()):
        optim_wrapper.update_params(loss)  # the wrapper stops or skips the step
        return log_vars

    scale = model.logit_scale
    targets = [text, video] + ([scale] if scale.requires_grad else [])
    grads = torch.autograd.grad(loss, targets)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        _set_rng_state(states[i], device)
        with nullcontext() if last else no_sync():
            with optim_wrapper.optim_context(forward):
                text, video = forward(inputs=_take(inputs, part), mode='tensor')
            surrogate = (text * grads[0][part]).sum() + (video * grads[1][part]).sum()
            if last and len(grads) == 3:
                surrogate = surrogate + (scale * grads[2]).sum()
            if last:
                optim_wrapper.update_params(surrogate)
            else:
                optim_wrapper.backward(optim_wrapper.scale_loss(surrogate))
    return log_vars
