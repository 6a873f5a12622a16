"""Build open_clip CLIP models offline and load local weights in every common format.

Architectures come from open_clip, by name (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ...)
or as a config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) for tiny test models.
Weights come only from a local file; nothing here touches the network.

Supported weight files:

* OpenAI TorchScript archives (``ViT-B-32.pt`` as released by OpenAI), read as data
  without running their code (:mod:`.torchscript_weights`);
* plain state dicts in ``.pt``/``.pth``/``.bin`` (OpenAI or open_clip key names);
* ``.safetensors``;
* open_clip training checkpoints (``{'state_dict': ...}``, ``module.`` prefixes).
"""
import os
from typing import Dict, Optional, Union

import open_clip
import torch
from open_clip.factory import load_state_dict
from open_clip.model import resize_pos_embed

from ..checkpoint import compare_state_dicts
from .torchscript_weights import is_torchscript_archive, read_torchscript_state_dict

#: Where the configs look for CLIP weights unless told otherwise.
DEFAULT_WEIGHTS = {
    'ViT-B-32': 'checkpoints/clip/ViT-B-32.pt',
    'ViT-B-16': 'checkpoints/clip/ViT-B-16.pt',
    'ViT-L-14': 'checkpoints/clip/ViT-L-14.pt',
}
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def build_open_clip(arch: Union[str, dict] = 'ViT-B-32', weights: Optional[str] = None,
                    quick_gelu: bool = True, image_size: Optional[int] = None
                    ) -> open_clip.CLIP:
    """Build an open_clip ``CLIP`` and load ``weights`` from a local file.

    Args:
        arch: an open_clip model name, or a config dict with ``embed_dim``,
            ``vision_cfg`` and ``text_cfg`` (and optionally ``quick_gelu``).
        weights: a local weight file; ``None`` keeps the random initialisation.
        quick_gelu: use QuickGELU, as OpenAI's CLIP weights (and TempMe) require.
        image_size: override the input resolution (position embeddings of loaded
            weights are interpolated by open_clip).
    """
    if weights is not None and not os.path.isfile(weights):
        hint = DEFAULT_WEIGHTS.get(arch if isinstance(arch, str) else '', 'a local path')
        raise FileNotFoundError(
            f'CLIP weights not found: {weights!r}. Put the OpenAI/open_clip checkpoint for '
            f'{arch if isinstance(arch, str) else "this model"} there (e.g. {hint}), or set '
            '`model.clip.weights` with --cfg-options; this project never downloads weights.')
    if isinstance(arch, dict):
        cfg = dict(arch)
        cfg.setdefault('quick_gelu', quick_gelu)
        if image_size is not None:
            cfg['vision_cfg'] = dict(cfg['vision_cfg'], image_size=image_size)
        model = open_clip.CLIP(**cfg)
    else:
        if arch not in open_clip.list_models():
            raise ValueError(f'unknown CLIP architecture {arch!r} (model.clip.arch); open_clip '
                             'knows e.g. ViT-B-32, ViT-B-16, ViT-L-14')
        kwargs = {'force_image_size': image_size} if image_size is not None else {}
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu,
                                       **kwargs)
    if weights is not None:
        load_clip_weights(model, weights)
    return model.float()


def read_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a CLIP state dict from any supported local file."""
    if is_torchscript_archive(path):
        # OpenAI's release format; read as data, never with torch.jit.load (which runs code)
        state_dict = read_torchscript_state_dict(path)
    else:
        try:
            state_dict = load_state_dict(path, device='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise RuntimeError(f'cannot read CLIP weights from {path!r}: {err}') from err
    for key in _OPENAI_EXTRA_KEYS:  # OpenAI's scalars, in archives and state dicts alike
        state_dict.pop(key, None)
    return state_dict


def load_clip_weights(model: torch.nn.Module, path: str) -> None:
    """Load a local weight file into an open_clip ``CLIP``, failing on any mismatch."""
    state_dict = read_clip_state_dict(path)
    if 'logit_scale' in state_dict:
        state_dict['logit_scale'] = state_dict['logit_scale'].reshape(model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    for name, _ in model.named_buffers():  # e.g. the causal mask, stored by TorchScript
        state_dict.pop(name, None)
    mismatch = compare_state_dicts(model.state_dict(), state_dict)
    if mismatch:
        raise RuntimeError(
            f'CLIP weights {path!r} do not fit the configured architecture:\n'
            f'  missing keys: {_head(sorted(mismatch.missing))}\n'
            f'  unexpected keys: {_head(sorted(mismatch.unexpected))}\n'
            f'  shape mismatches (file, model): {_head(sorted(mismatch.shapes))}')
    model.load_state_dict(state_dict, strict=False)


def _head(items: list, n: int = 10) -> str:
    return f'{items[:n]}{f" ... ({len(items)} in all)" if len(items) > n else ""}'
