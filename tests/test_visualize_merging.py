"""Source tracking through ImgMe and ClipMe, and the merge visualisation drawn from it."""
import cv2
import numpy as np
import pytest
import torch
from mmaction.registry import MODELS

from projects.tempme.merging import bipartite_soft_matching, group_clips, merge_source
from projects.tempme.merging.source import (initial_source, source_to_assignment,
                                            tokens_per_frame_reached)
from tools.analysis.visualize_merging import (BACKGROUND, LINE_COLOUR, compose_grid, paint_tokens,
                                              spanning_tokens, token_palette, visualize)

PLAIN = dict(merge_layers=(), clips_per_merge=(), imgme_r=0)
TOME_ONLY = dict(merge_layers=(), clips_per_merge=(), imgme_r=3)
CLIPME_EARLY = dict(merge_layers=(0, 2), clips_per_merge=(4, 3), cross_clip_ratio=0.5)


# -- pure source tracking -------------------------------------------------------------------
def test_cross_frame_merge_on_hand_made_tokens():
    # 2 frames of CLS + 4 patches; patch 1 of frame 0 equals patch 2 of frame 1.
    source = initial_source(1, 2, 5)
    assert source.shape == (2, 5, 10)
    assert torch.equal(source.reshape(10, 10), torch.eye(10))
    metric = torch.eye(10).view(2, 5, 10).clone()
    metric[1, 2] = metric[0, 1]
    grouped = group_clips(metric, 2, 1)  # [cls0, cls1, f0 p1-p4, f1 p1-p4]
    merge = bipartite_soft_matching(grouped, 1, num_cls=2)
    merged = merge_source(merge, group_clips(source, 2, 1))
    assert merged.shape == (1, 9, 10)
    # sources are patches at even patch positions (f0p1, f0p3, f1p1, f1p3), destinations
    # the odd ones; f0p1 joins f1p2; layout [cls0, cls1, f0p3, f1p1, f1p3, f0p2, f0p4,
    # f1p2, f1p4]
    assignment = source_to_assignment(merged, 1)
    assert assignment.tolist() == [[0, 7, 5, 2, 6, 1, 3, 7, 4, 8]]
    assert tokens_per_frame_reached(assignment, 2).tolist() == [[4, 4]]


def test_assignment_rejects_a_token_lost_or_duplicated():
    source = initial_source(1, 1, 4)
    with pytest.raises(ValueError, match='1 original tokens'):
        source_to_assignment(source[:, :3], 1)
    doubled = source.clone()
    doubled[0, 1, 2] = 1
    with pytest.raises(ValueError, match='exactly one'):
        source_to_assignment(doubled, 1)


# -- the encoder ------------------------------------------------------------------------------
def _encoder(tiny_clip, schedule):
    torch.manual_seed(0)
    return MODELS.build(dict(type='TempMeViT', clip=tiny_clip, **schedule)).eval()


def _video(b=2, seed=0):
    return torch.randn(b, 12, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('schedule', [dict(), PLAIN, TOME_ONLY, CLIPME_EARLY])
def test_every_input_token_reaches_exactly_one_output_token(tiny_clip, schedule):
    encoder = _encoder(tiny_clip, schedule)
    sizes = []
    encoder.blocks[-1].register_forward_hook(lambda m, i, out: sizes.append(out[1]))
    video = _video()
    with torch.no_grad():
        plain = encoder(video)
        features, source = encoder.forward_with_source(video)
    assert torch.equal(features, plain)
    out_tokens = encoder.schedule.output_tokens_per_video
    assert source.shape == (2, 12, 50) and source.dtype == torch.long
    for b in range(2):
        counts = torch.bincount(source[b].flatten(), minlength=out_tokens)
        assert len(counts) == out_tokens and bool((counts > 0).all())
        if sizes[-1] is not None:
            # what the encoder weighted each output token by = patches it holds
            torch.testing.assert_close(counts.float(), sizes[-1].reshape(2, -1)[b])
    # CLS tokens are never merged: frame f's CLS is output token f of the last clip layout
    last = encoder.schedule.layers[-1]
    cls_index = [(f // last.cls_out) * last.tokens_out + f % last.cls_out for f in range(12)]
    assert source[:, :, 0].tolist() == [cls_index, cls_index]


def test_plain_schedule_is_the_identity(tiny_clip):
    with torch.no_grad():
        _, source = _encoder(tiny_clip, PLAIN).forward_with_source(_video())
    assert torch.equal(source, torch.arange(600).view(1, 12, 50).expand(2, -1, -1))


def test_only_clipme_merges_tokens_across_frames(tiny_clip):
    video = _video(b=1)
    with torch.no_grad():
        _, tome = _encoder(tiny_clip, TOME_ONLY).forward_with_source(video)
        _, tempme = _encoder(tiny_clip, dict()).forward_with_source(video)
    assert spanning_tokens(tome[0, :, 1:].numpy()) == 0
    spanning = spanning_tokens(tempme[0, :, 1:].numpy())
    assert 0 < spanning < 97


# -- drawing ----------------------------------------------------------------------------------
def test_palette_colours_are_distinct_and_never_line_or_background():
    palette = token_palette(600)
    colours = {tuple(c) for c in palette.tolist()}
    assert len(colours) == 600
    assert LINE_COLOUR not in colours and BACKGROUND not in colours


def _colours(panel):
    return {tuple(p) for p in panel.reshape(-1, 3).tolist()} - {LINE_COLOUR}


def test_token_panel_has_one_colour_per_token_and_lines_between_tokens():
    labels = np.array([[0, 0, 1], [2, 0, 1], [2, 2, 3]])
    panel = paint_tokens(labels, token_palette(4), cell=8)
    assert panel.shape == (24, 24, 3)
    assert len(_colours(panel)) == 4
    assert tuple(panel[3, 15]) == LINE_COLOUR      # between token 0 and token 1
    assert tuple(panel[3, 7]) != LINE_COLOUR       # inside token 0


def test_grid_keeps_token_colours_across_frames():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    labels = np.array([[[0, 1], [0, 2]], [[0, 3], [3, 3]], [[4, 4], [4, 4]]])
    canvas, layout = compose_grid(frames, labels, cols=2, scale=2)
    assert canvas.shape == (layout.height, layout.width, 3)
    panels = [canvas[y0:y1, x0:x1] for y0, x0, y1, x1 in layout.token_boxes]
    assert [len(_colours(p)) for p in panels] == [3, 2, 1]
    # token 0 spans frames 0 and 1: same colour in both
    assert tuple(panels[0][2, 2]) == tuple(panels[1][2, 2])


def _write_video(path, frames=20, size=(96, 80)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, size)
    for k in range(frames):
        img = np.full((size[1], size[0], 3), 30, np.uint8)
        cv2.rectangle(img, (5 + 3 * k, 20), (30 + 3 * k, 50), (0, 200, 255), -1)
        cv2.circle(img, (70, 60 - k), 8, (255, 60, 0), -1)
        writer.write(img)
    writer.release()


@pytest.mark.parametrize('options,merged', [(None, True), (
    {f'model.video_encoder.{k}': v for k, v in PLAIN.items()}, False)])
def test_visualize_png_shows_each_frames_tokens(tmp_path, options, merged):
    video, out = tmp_path / 'clip.mp4', tmp_path / 'merge.png'
    _write_video(video)
    result = visualize('configs/tempme_tiny.py', str(video), str(out), cfg_options=options,
                       cols=4)
    image = cv2.imread(str(out))
    layout = result['layout']
    assert image.shape[:2] == (layout.height, layout.width)
    # 5 caption lines, 3 rows of (title, frame, token panel) with 112 px frames shown at 224
    assert image.shape[:2] == (5 * 18 + 6 + 3 * (16 + 2 * 224 + 6) + 6, 6 + 4 * (224 + 6))
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    labels = result['labels']
    for k, (y0, x0, y1, x1) in enumerate(layout.token_boxes):
        assert len(_colours(image[y0:y1, x0:x1])) == len(np.unique(labels[k]))
    assert result['tokens_per_frame'] == [len(np.unique(f)) for f in labels]
    header = '\n'.join(result['header'])
    assert 'random init' in header and 'GMACs' in header and 'GFLOPs' in header
    if merged:
        assert result['output_tokens'] == 97
        assert max(result['tokens_per_frame']) < 49
    else:
        assert result['output_tokens'] == 600 and result['tokens_per_frame'] == [49] * 12
        assert 'no merging' in header
