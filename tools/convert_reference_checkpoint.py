"""Convert a checkpoint saved by the published TempMe code into one of ours.

The reference saves ``VTRModel.state_dict()`` (``clip.`` + OpenAI CLIP names, LoRA as
``TVPt_LoRA_a/b``); its schedule lives in its command-line arguments, so pass the same
values here. The converted weights are checked by loading them strictly into a model
built with that schedule, then saved (atomically) in mmengine's checkpoint format for
``tools/test.py`` or ``tools/train.py --resume``-free fine-tuning (``load_from``).

Example::

    python tools/convert_reference_checkpoint.py output/pytorch_model.bin.best \\
        work_dirs/tempme_from_reference.pth --merge-layer 8-9-10 --merge-frame-num 2-2-3
"""
import argparse
import os
import sys

import torch

from projects.tempme.checkpoint import safe_load_checkpoint
from projects.tempme.known_warnings import ignore_known_warnings
from projects.tempme.models import TempMeRetriever
from projects.tempme.reference import (convert_reference_state_dict, geometry_from_state_dict,
                                       reference_model_config)
from projects.tempme_deploy.fileio import atomic_write


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='state dict saved by the reference code')
    parser.add_argument('out', help='where to write our checkpoint (.pth)')
    parser.add_argument('--merge-layer', default='8-9-10',
                        help="the reference's --merge_layer: ClipMe layers, dash-separated")
    parser.add_argument('--merge-frame-num', default='2-2-3',
                        help="the reference's --merge_frame_num: clips grouped per ClipMe layer")
    parser.add_argument('--merge-token-proportion', default='30-10',
                        help="the reference's --merge_token_proportion: cross-clip and intra-clip "
                        'merge percentages')
    parser.add_argument('--tome-r', type=int, default=2,
                        help='tokens merged per ImgMe layer (the reference\'s --tome_r)')
    parser.add_argument('--frame-pos', type=int, default=1,
                        help='1: temporal position embeddings on the ClipMe layers (--frame_pos)')
    parser.add_argument('--tome-propattn', type=int, default=1,
                        help='1: proportional attention (--tome_propattn)')
    parser.add_argument('--lora-dim', type=int, default=8,
                        help='LoRA rank the checkpoint was trained with (--lora_dim)')
    parser.add_argument('--max-frames', type=int, default=12,
                        help='frames per video (--max_frames)')
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> dict:
    """Convert, verify by a strict load, and return the mmengine-style checkpoint."""
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f'reference checkpoint not found: {args.checkpoint!r}')
    state_dict = safe_load_checkpoint(args.checkpoint)
    if isinstance(state_dict, dict) and 'state_dict' in state_dict:
        state_dict = state_dict['state_dict']
    reference_args = dict(
        merge_layer=args.merge_layer, merge_frame_num=args.merge_frame_num,
        merge_token_proportion=args.merge_token_proportion, tome_r=args.tome_r,
        frame_pos=args.frame_pos, tome_propattn=bool(args.tome_propattn),
        lora_dim=args.lora_dim, max_frames=args.max_frames,
        **geometry_from_state_dict(state_dict))
    cfg = reference_model_config(reference_args)
    cfg.pop('type')
    model = TempMeRetriever(**cfg, data_preprocessor=None)
    converted = convert_reference_state_dict(state_dict, lora=args.lora_dim > 0)
    result = model.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f'{args.checkpoint!r} does not fit the schedule given on the command line:\n'
            f'  missing keys: {result.missing_keys[:10]}\n'
            f'  unexpected keys: {result.unexpected_keys[:10]}')
    return dict(meta=dict(converted_from=os.path.abspath(args.checkpoint),
                          video_encoder=cfg['video_encoder'], lora=cfg['lora']),
                state_dict=model.state_dict())


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoint = convert(args)
    atomic_write(args.out, lambda tmp: torch.save(checkpoint, tmp))
    enc = checkpoint['meta']['video_encoder']
    print(f'saved {args.out}\nevaluate with a config whose model.video_encoder has: '
          f'merge_layers={enc["merge_layers"]}, clips_per_merge={enc["clips_per_merge"]}, '
          f'cross_clip_ratio={enc["cross_clip_ratio"]}, '
          f'intra_clip_ratio={enc["intra_clip_ratio"]}, '
          f'imgme_r={enc["imgme_r"]}, temporal_embedding={enc["temporal_embedding"]}, '
          f'prop_attn={enc["prop_attn"]}')
    return 0


if __name__ == '__main__':
    with ignore_known_warnings():
        sys.exit(main())
