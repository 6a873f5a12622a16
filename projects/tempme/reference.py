"""Translate the published TempMe code's arguments and weights into this project's.

The reference (LunarShen/TempMe, ``VTRModel``) keeps OpenAI CLIP names under ``clip.``
with LoRA as ``attn.TVPt_LoRA_a`` (rank x width) / ``attn.TVPt_LoRA_b`` (3 width x
rank) and the temporal embeddings as ``TVPt_Video_Positional_embedding``
(1 x clips x 1 x width). Its schedule arguments are dash-separated strings.
"""
import re
from typing import Dict, Optional

import torch

_ARCH_NAMES = {'ViT-B/32': 'ViT-B-32', 'ViT-B/16': 'ViT-B-16', 'ViT-L/14': 'ViT-L-14'}
_GEOMETRY_KEYS = ('width', 'vision_heads', 'text_width', 'text_heads', 'text_layers', 'patch',
                  'image_size', 'embed', 'vocab', 'context_length')
_TOWER_ROOTS = {
    'visual.transformer.resblocks.': 'video_encoder.blocks.',
    'visual.': 'video_encoder.',
    'transformer.resblocks.': 'text_encoder.blocks.',
}
_TEXT_TOP = ('token_embedding.', 'positional_embedding', 'ln_final.', 'text_projection')
_BLOCK_RENAMES = (
    ('attn.in_proj_weight', 'attn.qkv.{base}weight'),
    ('attn.in_proj_bias', 'attn.qkv.{base}bias'),
    ('attn.TVPt_LoRA_a', 'attn.qkv.lora_A.default.weight'),
    ('attn.TVPt_LoRA_b', 'attn.qkv.lora_B.default.weight'),
    ('TVPt_Video_Positional_embedding', 'temporal_embedding'),
)


def _ints(value) -> list:
    if isinstance(value, str):
        return [int(v) for v in value.split('-') if v]
    return [int(v) for v in value]


def reference_model_config(args: dict, weights: Optional[str] = None) -> dict:
    """A ``TempMeRetriever`` config equivalent to the reference's arguments.

    ``args`` holds the reference's options (``merge_layer``, ``merge_frame_num``,
    ``merge_token_proportion``, ``tome_r``, ``lora_dim``, ``max_frames``, ``frame_pos``,
    ``tome_propattn``, ``base_encoder``); if it also holds the model geometry (``width``,
    ``patch``, ...), a CLIP of that geometry is configured instead of the named one.
    """
    if all(k in args for k in _GEOMETRY_KEYS):
        arch = dict(
            embed_dim=args['embed'],
            vision_cfg=dict(image_size=args['image_size'], patch_size=args['patch'],
                            width=args['width'], layers=args.get('vision_layers', 12),
                            head_width=args['width'] // args['vision_heads']),
            text_cfg=dict(context_length=args['context_length'], vocab_size=args['vocab'],
                          width=args['text_width'], heads=args['text_heads'],
                          layers=args['text_layers']))
    else:
        encoder = args.get('base_encoder', 'ViT-B/32')
        if encoder not in _ARCH_NAMES:
            raise ValueError(f'unknown reference base_encoder {encoder!r}')
        arch = _ARCH_NAMES[encoder]
    cross, intra = (p / 100 for p in _ints(args.get('merge_token_proportion', '30-10')))
    lora_dim = int(args.get('lora_dim', 8))
    return dict(
        type='TempMeRetriever',
        clip=dict(arch=arch, weights=weights),
        video_encoder=dict(
            type='TempMeViT', num_frames=int(args.get('max_frames', 12)),
            merge_layers=_ints(args.get('merge_layer', '8-9-10')),
            clips_per_merge=_ints(args.get('merge_frame_num', '2-2-3')),
            cross_clip_ratio=cross, intra_clip_ratio=intra, imgme_r=int(args.get('tome_r', 2)),
            temporal_embedding=bool(int(args.get('frame_pos', 1))),
            prop_attn=bool(args.get('tome_propattn', True))),
        head=dict(type='MeanCLSHead'),
        lora=dict(rank=lora_dim) if lora_dim > 0 else None)


def geometry_from_state_dict(state_dict: Dict[str, torch.Tensor]) -> dict:
    """The model geometry keys of :func:`reference_model_config`, read off the weights."""
    sd = {re.sub(r'^(module\.)?(clip\.)?', '', k): v for k, v in state_dict.items()}
    width, _, patch, _ = sd['visual.conv1.weight'].shape
    grid = round((sd['visual.positional_embedding'].shape[0] - 1) ** 0.5)
    text_width = sd['ln_final.weight'].shape[0]

    def layers(prefix: str) -> int:
        return len({k.split('.')[len(prefix.split('.')) - 1] for k in sd if k.startswith(prefix)})

    return dict(width=width, vision_heads=width // 64, vision_layers=layers(
        'visual.transformer.resblocks.'), patch=patch, image_size=patch * grid,
        text_width=text_width, text_heads=text_width // 64,
        text_layers=layers('transformer.resblocks.'), embed=sd['text_projection'].shape[1],
        vocab=sd['token_embedding.weight'].shape[0],
        context_length=sd['positional_embedding'].shape[0])


def convert_reference_state_dict(state_dict: Dict[str, torch.Tensor],
                                 lora: bool = True) -> Dict[str, torch.Tensor]:
    """Rename reference weights to ``TempMeRetriever`` names (values cast to fp32)."""
    out = {}
    base = 'base_layer.' if lora else ''
    for key, value in state_dict.items():
        key = re.sub(r'^(module\.)?(clip\.)?', '', key)
        new = _rename(key, base)
        if new is None:
            raise KeyError(f'unexpected reference weight {key!r}')
        if new.endswith('temporal_embedding'):
            value = value.reshape(value.shape[1], value.shape[-1])
        out[new] = value.float()
    return out


def _rename(key: str, base: str) -> Optional[str]:
    if key == 'logit_scale':
        return key
    if key.startswith(_TEXT_TOP):
        return 'text_encoder.' + key
    for old, new in _TOWER_ROOTS.items():
        if key.startswith(old):
            key = new + key[len(old):]
            for block_old, block_new in _BLOCK_RENAMES:
                if key.endswith(block_old):
                    key = key[:-len(block_old)] + block_new.format(base=base)
            return key
    return None
