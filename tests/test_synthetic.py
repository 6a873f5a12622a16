"""Tests of the synthetic order-sensitive benchmark and its generator script."""
import json
import os
import re
from pathlib import Path

import decord
import numpy as np
import pytest

from projects.tempme_data import synthetic as syn
from tools.data import make_synthetic as cli

ROOT = Path(__file__).resolve().parents[1]


TINY = ['--num-train', '6', '--num-val', '4', '--num-test', '16', '--frames', '8',
        '--size', '64', '--captions-per-video', '3', '--seed', '3']
FRAMES, SIZE = 8, 64


def _decode(path):
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _mask(frame, colour, tol=80):
    diff = np.abs(frame.astype(int) - np.array(syn.COLOURS[colour]))
    return (diff < tol).all(-1)


def _present(frame, colour, min_pixels=40):
    return int(_mask(frame, colour).sum()) >= min_pixels


def _centroid(frame, colour):
    ys, xs = np.nonzero(_mask(frame, colour))
    return np.array([xs.mean(), ys.mean()])


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp('synthetic')
    assert cli.main(['--out', str(out)] + TINY) == 0
    return out


def test_videos_decode_with_the_requested_frames_and_size(generated):
    for split, count in (('train', 6), ('val', 4), ('test', 16)):
        ann = json.loads((generated / f'{split}.json').read_text())
        assert len(ann) == count
        for name, captions in ann.items():
            assert name.startswith(f'{split}_') and name.endswith('.mp4')
            assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
            frames = _decode(generated / 'videos' / name)
            assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert len(list((generated / 'videos').iterdir())) == 26


def test_meta_layout(generated):
    meta = json.loads((generated / 'meta.json').read_text())
    assert meta['seed'] == 3
    assert meta['config']['num_test'] == 16 and meta['config']['frames'] == FRAMES
    assert meta['chance_t2v_R1'] == pytest.approx(100 / 16)
    test = meta['splits']['test']
    assert meta['order_blind_ceiling_t2v_R1'] == test['order_blind_ceiling_t2v_R1']
    # round(0.5 * 16) videos have a twin and every video has 3 captions
    assert test['num_videos_with_twin'] == 8
    assert test['order_blind_ceiling_t2v_R1'] == pytest.approx(50.0)
    assert test['order_dependent_captions'], 'twins must yield order-dependent captions'
    assert meta['order_dependent_ceiling_t2v_R1'] == 0.0
    captions = [c for cs in json.loads((generated / 'test.json').read_text()).values()
                for c in cs]
    assert test['num_captions'] == len(captions) == 48
    assert all(0 <= i < len(captions) for i in test['order_dependent_captions'])


def _parse_then(text):
    """Segments of a 'X, then Y' caption: [(colour, shape, verb phrase), ...]."""
    text = text[len('first '):] if text.startswith('first ') else text
    left, sep, right = text.partition(', then ')
    if not sep:
        return None
    colour, shape, verb = re.fullmatch(r'a (\w+) (\w+) (.+)', left).groups()
    second = re.fullmatch(r'a (\w+) (\w+) (.+)', right)
    if second:
        return [(colour, shape, verb), second.groups()]
    right = right[len('it '):] if right.startswith('it ') else right
    right = f'moves {right}' if right in syn.DIRECTIONS else right
    after = verb.split()[1] if verb.startswith('turns ') else colour
    return [(colour, shape, verb), (after, shape, right)]


def _check_segment(frames, colour, verb):
    first, last = frames[0], frames[-1]
    if verb.startswith('moves '):
        assert _present(first, colour) and _present(last, colour)
        shift = _centroid(last, colour) - _centroid(first, colour)
        dx, dy = syn.DIRECTIONS[verb.split()[1]]
        assert shift @ np.array([dx, dy]) >= 5, (verb, shift)
        assert abs(shift @ np.array([dy, dx])) <= 2, (verb, shift)
    elif verb == 'appears':
        assert not _present(first, colour) and _present(last, colour)
    elif verb == 'disappears':
        assert _present(first, colour) and not _present(last, colour)
    elif verb.startswith('turns '):
        new = verb.split()[1]
        assert _present(first, colour) and not _present(first, new)
        assert _present(last, new) and not _present(last, colour)
    else:
        raise AssertionError(f'unexpected verb {verb!r}')


def test_then_captions_match_decoded_pixels(generated):
    checked = 0
    for split in ('train', 'val', 'test'):
        for name, captions in json.loads((generated / f'{split}.json').read_text()).items():
            frames = _decode(generated / 'videos' / name)
            halves = (frames[:FRAMES // 2], frames[FRAMES // 2:])
            for caption in captions:
                parsed = _parse_then(caption)
                if parsed is None:
                    continue
                for half, (colour, _, verb) in zip(halves, parsed):
                    _check_segment(half, colour, verb)
                checked += 1
    assert checked >= 10


def test_hand_made_scene_caption_and_pixels(tmp_path):
    red = syn.Segment('square', 'red', 32, 'move', 6, start=(70, 40), step=(-5, 0))
    blue = syn.Segment('circle', 'blue', 32, 'appear', 6, start=(40, 75), switch=3)
    scene = syn.Scene('pair', (red, blue))
    texts = {c.template: c.text for c in syn.all_captions(scene)}
    assert texts['then'] == 'a red square moves left, then a blue circle appears'
    assert texts['after'] == 'a blue circle appears after a red square moves left'
    assert texts['objects'] == 'a blue circle and a red square'
    path = tmp_path / 'scene.mp4'
    syn.write_video(str(path), syn.render_scene(scene, 112), fps=1)
    frames = _decode(path)
    assert frames.shape == (12, 112, 112, 3)
    first, last = frames[0], frames[-1]
    # the red square fills its box at (54..85, 24..55) in the first frame only
    assert _mask(first[28:52, 58:82], 'red').mean() > 0.95
    assert not _present(first, 'blue') and not _present(last, 'red')
    assert _mask(last[65:85, 30:50], 'blue').mean() > 0.95
    assert _centroid(frames[5], 'red')[0] == pytest.approx(70 - 25, abs=1.0)
    assert not _present(frames[8], 'blue') and _present(frames[9], 'blue')
    reversed_texts = {c.template: c.text for c in syn.all_captions(syn.reverse_scene(scene))}
    assert reversed_texts['then'] == 'a blue circle disappears, then a red square moves right'


@pytest.mark.parametrize('frames', [7, 12])
def test_rearrangements_keep_frames_and_change_order(frames):
    rng = np.random.default_rng(0)
    for kind in ('single', 'pair') * 10:
        scene = syn.sample_scene(rng, kind, frames, 112)
        video = syn.render_scene(scene, 112)
        assert video.shape == (frames, 112, 112, 3)
        backwards = syn.render_scene(syn.reverse_scene(scene), 112)
        np.testing.assert_array_equal(backwards, video[::-1])
        if kind == 'pair':
            cut = scene.segments[0].length
            swapped = syn.render_scene(syn.swap_scene(scene), 112)
            np.testing.assert_array_equal(swapped, np.concatenate([video[cut:], video[:cut]]))


def test_order_twins_share_a_frame_multiset(generated):
    meta = json.loads((generated / 'meta.json').read_text())
    ann = json.loads((generated / 'test.json').read_text())
    # the script's test split is sample_split with the generator seeded [seed, 2]
    videos = syn.sample_split(np.random.default_rng([3, 2]), 16, prefix='test', frames=FRAMES,
                              size=SIZE, captions_per_video=3, twin_fraction=0.5,
                              unique_captions=True)
    assert syn.annotation(videos) == ann
    by_name = {v.name: v for v in videos}
    raw = {v.name: syn.render_scene(v.scene, SIZE) for v in videos}
    multisets = {name: syn.frame_multiset(f) for name, f in raw.items()}
    groups = meta['splits']['test']['twin_groups']
    assert groups and sum(len(g) for g in groups) == 8
    grouped = {name for g in groups for name in g}
    for group in groups:
        assert len({multisets[n] for n in group}) == 1
        assert len({raw[n].tobytes() for n in group}) == len(group)  # other order
        then = {next(c.text for c in syn.all_captions(by_name[n].scene) if c.template == 'then')
                for n in group}
        assert len(then) == len(group)
        # the decoded files agree: each frame of a twin has a near copy in the other
        a, b = (_decode(generated / 'videos' / n).astype(int) for n in group[:2])
        for frame in a:
            assert min(np.abs(frame - other).mean() for other in b) < 2.0
    others = [multisets[n] for n in ann if n not in grouped]
    assert len(set(others)) == len(others)
    assert not set(others) & {multisets[n] for n in grouped}
    # order-dependent captions all belong to videos that have a twin
    owner = [name for name, captions in ann.items() for _ in captions]
    assert {owner[i] for i in meta['splits']['test']['order_dependent_captions']} <= grouped


def test_ceiling_on_a_hand_made_gallery():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = np.full((1, 4, 4, 3), 9, np.uint8)
    videos = [np.concatenate(x) for x in ([a, b], [b, a], [a, a], [b, b])]
    multisets = [syn.frame_multiset(v) for v in videos]
    assert multisets[0] == multisets[1] and len(set(multisets)) == 3
    caption_to_video = [0, 0, 1, 1, 2, 2, 3, 3]
    assert syn.order_blind_ceiling(multisets, caption_to_video) == pytest.approx(50.0)
    # uneven captions: videos 2 and 3 own 3 + 1 of the 7 captions
    uneven = [0, 1, 1, 2, 2, 2, 3]
    assert syn.order_blind_ceiling(multisets, uneven) == pytest.approx(400 / 7)
    assert syn.order_blind_ceiling(multisets, uneven, captions=[0, 1, 2]) == 0.0
    assert syn.order_blind_ceiling(multisets, uneven, captions=[2, 6]) == pytest.approx(50.0)
    # a three-way tie: only the untied video can be retrieved
    assert syn.order_blind_ceiling(['x', 'x', 'x', 'y'], [0, 1, 2, 3]) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        syn.order_blind_ceiling(multisets, uneven, captions=[])


def test_order_dependent_ids_skip_captions_true_for_the_twin():
    scene = syn.Scene('pair', (
        syn.Segment('square', 'red', 32, 'move', 6, start=(70, 40), step=(-5, 0)),
        syn.Segment('circle', 'blue', 32, 'disappear', 6, start=(40, 75), switch=3)))
    lone = syn.Scene('single', (
        syn.Segment('triangle', 'green', 30, 'appear', 6, start=(50, 50), switch=3),
        syn.Segment('triangle', 'green', 30, 'move', 6, start=(50, 50), step=(0, 4))))

    def caps(s, *templates):
        return tuple(c for c in syn.all_captions(s) if c.template in templates)

    videos = [syn.Video('a.mp4', scene, caps(scene, 'then', 'objects'), 0),
              syn.Video('b.mp4', syn.swap_scene(scene), caps(syn.swap_scene(scene), 'then'), 0),
              syn.Video('c.mp4', lone, caps(lone, 'then', 'after'), 1)]
    multisets = [syn.frame_multiset(syn.render_scene(v.scene, 112)) for v in videos]
    assert syn.order_dependent_caption_ids(videos, multisets) == [0, 2]
    stats = syn.split_statistics(videos, multisets)
    assert stats['order_blind_ceiling_t2v_R1'] == pytest.approx(40.0)
    assert stats['order_dependent_ceiling_t2v_R1'] == 0.0
    assert stats['twin_groups'] == [['a.mp4', 'b.mp4']]
    assert stats['num_order_free_captions'] == 1


def _snapshot(out):
    files = ['train.json', 'val.json', 'test.json', 'meta.json']
    return {f: (out / f).read_bytes() for f in files}


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    small = ['--num-train', '3', '--num-val', '2', '--num-test', '5', '--frames', '6',
             '--size', '56']
    runs = {}
    for name, seed in (('a', '7'), ('b', '7'), ('c', '8')):
        out = tmp_path / name
        assert cli.main(['--out', str(out), '--seed', seed] + small) == 0
        runs[name] = out
    assert _snapshot(runs['a']) == _snapshot(runs['b'])
    for video in (runs['a'] / 'videos').iterdir():
        np.testing.assert_array_equal(_decode(video), _decode(runs['b'] / 'videos' / video.name))
    assert _snapshot(runs['a'])['test.json'] != _snapshot(runs['c'])['test.json']
    assert _snapshot(runs['a'])['meta.json'] != _snapshot(runs['c'])['meta.json']


def test_existing_data_is_reused_unless_forced_or_changed(tmp_path, capsys):
    out = tmp_path / 'data'
    small = ['--out', str(out), '--num-train', '3', '--num-val', '2', '--num-test', '4',
             '--frames', '6', '--size', '56']
    assert cli.main(small) == 0
    marker = out / 'test.json'
    os.utime(marker, ns=(1, 1))
    capsys.readouterr()
    assert cli.main(small) == 0
    assert 'skipping' in capsys.readouterr().out
    assert marker.stat().st_mtime_ns == 1
    assert cli.main(small + ['--force']) == 0
    assert 'skipping' not in capsys.readouterr().out
    assert marker.stat().st_mtime_ns > 1
    # an interrupted run leaves no meta.json, and such a directory is regenerated
    (out / 'meta.json').unlink()
    os.utime(marker, ns=(1, 1))
    assert cli.main(small) == 0
    assert marker.stat().st_mtime_ns > 1 and (out / 'meta.json').is_file()
    # other arguments regenerate and drop the videos the new run does not make
    assert cli.main(small[:-2] + ['--size', '56', '--num-train', '1']) == 0
    assert 'skipping' not in capsys.readouterr().out
    assert sorted(p.name for p in (out / 'videos').iterdir() if p.name.startswith('train')) == [
        'train_00000.mp4']
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['config']['num_train'] == 1


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        cli.parse_args(['--size', '57'])
    path = tmp_path / 'v.mp4'
    syn.write_video(str(path), np.zeros((5, 64, 64, 3), np.uint8), fps=1)
    cli.check_decodable(path, 5, 64)
    with pytest.raises(RuntimeError, match='expected'):
        cli.check_decodable(path, 6, 64)
