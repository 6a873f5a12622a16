"""Draw which tokens TempMe merges: every patch of every frame coloured by its output token.

Decodes a video with the config's test pipeline, runs the video encoder with source
tracking (``TempMeViT.forward_with_source``) and draws a grid: each sampled frame as the
model sees it, and below it the same frame with every patch painted in the colour of
the output token it was merged into. Colours follow tokens, not frames: a patch in
frame 2 and one in frame 7 with the same colour ended up in the same token (ClipMe
merged them across frames). Lines separate different tokens.

Examples::

    python tools/analysis/visualize_merging.py configs/tempme_msrvtt.py video.mp4 --out merge.png
    python tools/analysis/visualize_merging.py configs/tempme_tiny.py video.mp4 \
        --checkpoint work_dirs/tempme_tiny/epoch_2.pth --out merge.png
"""
import argparse
import colorsys
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import DictAction  # no torch: --help and argument errors answer at once

#: Colour of the lines between tokens; the palette never produces it.
LINE_COLOUR = (24, 24, 24)
BACKGROUND = (255, 255, 255)
GOLDEN = 0.6180339887498949


# -- pure drawing ---------------------------------------------------------------------------
def token_palette(n: int) -> np.ndarray:
    """``n`` distinct bright uint8 RGB colours; neighbouring indices differ strongly in hue.

    Hues step by the golden ratio, saturation and value cycle in three levels (the first
    colours are pale), and any
    colour that rounds onto an earlier one is nudged, so all ``n`` are distinct and none
    is dark enough to be confused with :data:`LINE_COLOUR`.
    """
    colours, seen = [], set()
    for i in range(n):
        hue = (i * GOLDEN) % 1.0
        sat = (0.35, 0.9, 0.6)[(i // 3) % 3]
        val = (0.95, 0.8, 0.65)[i % 3]
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        while rgb in seen or rgb == BACKGROUND:
            hue = (hue + 1e-3) % 1.0
            rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        seen.add(rgb)
        colours.append(rgb)
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


def paint_tokens(labels: np.ndarray, palette: np.ndarray, cell: int,
                 frame: Optional[np.ndarray] = None, alpha: float = 1.0) -> np.ndarray:
    """One frame's token panel: (gh, gw) token ids -> (gh * cell, gw * cell, 3) uint8.

    Each patch is a ``cell``-pixel square of its token's colour (blended with ``frame``
    when ``alpha`` < 1), with a 1-pixel line on every edge between different tokens.
    No anti-aliasing: with ``alpha`` = 1 a panel holds exactly one colour per token
    plus the line colour.
    """
    gh, gw = labels.shape
    panel = np.repeat(np.repeat(palette[labels], cell, axis=0), cell, axis=1)
    if frame is not None and alpha < 1.0:
        panel = (alpha * panel + (1 - alpha) * frame.astype(np.float32)).round().astype(np.uint8)
    for i in range(gh):
        for j in range(gw):
            if j + 1 < gw and labels[i, j] != labels[i, j + 1]:
                panel[i * cell:(i + 1) * cell, (j + 1) * cell - 1] = LINE_COLOUR
            if i + 1 < gh and labels[i, j] != labels[i + 1, j]:
                panel[(i + 1) * cell - 1, j * cell:(j + 1) * cell] = LINE_COLOUR
    return panel


@dataclass
class GridLayout:
    """Where things are in the drawn grid, in pixels of the saved image."""

    width: int
    height: int
    frame_boxes: List[Tuple[int, int, int, int]] = field(default_factory=list)  # y0, x0, y1, x1
    token_boxes: List[Tuple[int, int, int, int]] = field(default_factory=list)
    header_height: int = 0
    title_height: int = 0


def layout_grid(num_frames: int, frame_size: int, cols: int, header_lines: int,
                gap: int = 6, line_height: int = 18, title_height: int = 16) -> GridLayout:
    """Grid of ``cols`` frames per row; each frame has its token panel under it."""
    cols = max(1, min(cols, num_frames))
    rows = -(-num_frames // cols)
    header = header_lines * line_height + gap
    block = title_height + 2 * frame_size + gap
    layout = GridLayout(width=gap + cols * (frame_size + gap), height=header + rows * block + gap,
                        header_height=header, title_height=title_height)
    for k in range(num_frames):
        r, c = divmod(k, cols)
        x0 = gap + c * (frame_size + gap)
        y0 = header + r * block + title_height
        layout.frame_boxes.append((y0, x0, y0 + frame_size, x0 + frame_size))
        layout.token_boxes.append((y0 + frame_size, x0, y0 + 2 * frame_size, x0 + frame_size))
    return layout


def compose_grid(frames: np.ndarray, labels: np.ndarray, cols: int = 6, scale: int = 1,
                 header_lines: int = 4, alpha: float = 1.0) -> Tuple[np.ndarray, GridLayout]:
    """Canvas (H, W, 3) uint8 with frames and token panels; text goes in the blank margins.

    Args:
        frames: (T, H, W, 3) uint8 RGB, square, as the model sees them.
        labels: (T, gh, gw) output-token id of every patch.
        scale: integer upsampling of every frame (nearest), so small frames stay visible.
    """
    t, h, w, _ = frames.shape
    gh, gw = labels.shape[1:]
    if h != w or gh != gw or h % gh:
        raise ValueError(f'need square frames and patch grids, got frames {h}x{w}, '
                         f'grid {gh}x{gw}')
    size = h * scale
    cell = size // gh
    layout = layout_grid(t, size, cols, header_lines)
    # The largest tokens (often background) get the first, palest colours.
    counts = np.bincount(labels.ravel())
    rank = np.empty_like(counts)
    rank[np.argsort(-counts, kind='stable')] = np.arange(len(counts))
    palette = token_palette(len(counts))[rank]
    canvas = np.full((layout.height, layout.width, 3), BACKGROUND, dtype=np.uint8)
    for k in range(t):
        big = np.repeat(np.repeat(frames[k], scale, axis=0), scale, axis=1)
        y0, x0, y1, x1 = layout.frame_boxes[k]
        canvas[y0:y1, x0:x1] = big
        y0, x0, y1, x1 = layout.token_boxes[k]
        canvas[y0:y1, x0:x1] = paint_tokens(labels[k], palette, cell, big, alpha)
    return canvas, layout


def save_grid(path: str, canvas: np.ndarray, layout: GridLayout, header: Sequence[str],
              titles: Sequence[str]) -> None:
    """Write the canvas pixel for pixel (no resampling) with text in the margins."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    dpi = 100
    fig = plt.figure(figsize=(layout.width / dpi, layout.height / dpi), dpi=dpi)
    fig.figimage(canvas, 0, 0, origin='upper', resize=False)
    line = (layout.header_height - 6) / max(len(header), 1)
    for i, text in enumerate(header):
        fig.text(6 / layout.width, 1 - (6 + (i + 0.75) * line) / layout.height, text,
                 fontsize=9 if i else 10, weight='bold' if i == 0 else 'normal',
                 family='DejaVu Sans', va='baseline')
    for (y0, x0, _, _), title in zip(layout.frame_boxes, titles):
        fig.text(x0 / layout.width, 1 - (y0 - 4) / layout.height, title, fontsize=8,
                 va='baseline')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def spanning_tokens(labels: np.ndarray) -> int:
    """How many output tokens hold patches of more than one frame."""
    frames_of = {}
    for k, frame in enumerate(labels):
        for token in np.unique(frame):
            frames_of.setdefault(int(token), set()).add(k)
    return sum(len(f) > 1 for f in frames_of.values())


def describe_schedule(schedule) -> str:
    """One line for humans: what merges where."""
    plans = schedule.layers
    imgme = [p for p in plans[:schedule.num_imgme_layers] if p.intra_r > 0]
    clipme = [p for p in plans if p.group > 1]
    later = [p.index for p in plans[schedule.num_imgme_layers:] if p.intra_r > 0]
    parts = []
    if imgme:
        rs = '/'.join(str(r) for r in sorted({p.intra_r for p in imgme}))
        parts.append(f'ImgMe r={rs} on layers {_span([p.index for p in imgme])}')
    if clipme:
        parts.append('ClipMe at layers ' + ','.join(str(p.index) for p in clipme)
                     + ' grouping ' + ','.join(str(p.group) for p in clipme) + ' clips')
    if later:
        parts.append(f'intra-clip merging on layers {_span(later)}')
    return '; '.join(parts) if parts else 'no merging (plain per-frame CLIP)'


def _span(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f'{layers[0]}-{layers[-1]}'
    return ','.join(map(str, layers))


# -- model glue -----------------------------------------------------------------------------
def visualize(config: str, video: str, out: str, checkpoint: Optional[str] = None,
              cfg_options: Optional[dict] = None, cols: int = 6, scale: int = 0,
              alpha: float = 1.0, device: str = 'cpu') -> dict:
    """Draw the merge grid of ``video`` into ``out``; returns labels, layout and counts."""
    import torch

    from projects.tempme.apis.inference import (VideoReader, check_frames, init_retriever,
                                                preprocess_videos)
    from projects.tempme.console import quiet_console
    from projects.tempme.known_warnings import ignore_known_warnings
    from projects.tempme.profiling import video_gmacs
    quiet_console()  # mmengine's file-backend notices, logged when the video is opened
    with ignore_known_warnings():
        loaded = init_retriever(config, checkpoint, device=device, cfg_options=cfg_options)
    frames = VideoReader(loaded.cfg)(video)
    check_frames(loaded.encoder.input_shape, frames, video)
    encoder = loaded.encoder
    inputs = preprocess_videos(loaded, [frames])
    with torch.no_grad():
        _, source = encoder.forward_with_source(inputs)
    gmacs = video_gmacs(encoder)

    schedule = encoder.schedule
    t, tokens = schedule.num_frames, schedule.tokens_per_frame
    grid = int(round((tokens - 1) ** 0.5))
    labels = source[0, :, 1:].reshape(t, grid, grid).cpu().numpy()
    frames_np = frames.permute(0, 2, 3, 1).numpy()
    scale = scale or max(1, -(-160 // frames_np.shape[1]))
    canvas, layout = compose_grid(frames_np, labels, cols, scale, header_lines=5, alpha=alpha)

    out_tokens = schedule.output_tokens_per_video
    per_frame = [len(np.unique(f)) for f in labels]
    header = [
        f'{osp.basename(video)}  |  {osp.basename(config)}  |  {loaded.weights}',
        f'tokens in: {t * tokens} ({t} frames x {tokens}, 1 CLS each)  ->  tokens out: '
        f'{out_tokens} ({schedule.output_clips} clip(s) x '
        f'{schedule.layers[-1].tokens_out}, CLS included)',
        f'video encoder: {gmacs:.3f} GMACs = {2 * gmacs:.3f} GFLOPs per video '
        '(1 multiply-add = 2 FLOPs; torch.utils.flop_counter)',
        f'schedule: {describe_schedule(schedule)}; {spanning_tokens(labels)} of {out_tokens} '
        'output tokens hold patches of several frames',
        'below each frame: one colour per output token, the same colour in other frames '
        '= the same token; lines = token boundaries; CLS tokens not drawn',
    ]
    titles = [f'frame {k}: {n} tokens' for k, n in enumerate(per_frame)]
    save_grid(out, canvas, layout, header, titles)
    return dict(labels=labels, layout=layout, tokens_per_frame=per_frame,
                output_tokens=out_tokens, gmacs=gmacs, header=header)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file (its test pipeline decodes the video)')
    parser.add_argument('video', help='any video file decord can read')
    parser.add_argument('--checkpoint', help='trained checkpoint (whole or adapter-only); '
                        'default: the configured CLIP weights')
    parser.add_argument('--out', default='merge.png', help='output PNG')
    parser.add_argument('--cols', type=int, default=6, help='frames per row')
    parser.add_argument('--scale', type=int, default=0,
                        help='integer upscaling of frames (default: at least 160 px)')
    parser.add_argument('--alpha', type=float, default=1.0,
                        help='token colour opacity over the frame (1 = flat colours)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from projects.tempme_cli import UserError, require_file
    require_file(args.config, 'config file')
    if os.path.isdir(args.video):
        raise UserError(f'{args.video} is a folder; give one video file '
                        '(tools/search.py indexes folders)')
    if args.checkpoint and '://' not in args.checkpoint:
        require_file(args.checkpoint, 'checkpoint')
    from projects.tempme.datasets import probe_video
    probe = probe_video(args.video)
    if not probe.ok:
        raise UserError(f'{probe.path}: {probe.reason}')
    result = visualize(args.config, args.video, args.out, args.checkpoint, args.cfg_options,
                       args.cols, args.scale, args.alpha, args.device)
    for line in result['header']:
        print(line)
    print(f'saved {args.out} ({result["layout"].width} x {result["layout"].height} px)')
    return result


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    run_tool(main)
