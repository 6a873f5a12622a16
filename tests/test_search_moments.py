"""Search by moments: windows of long videos, suppression of overlapping hits, decoding each
video once, a model trained on the synthetic benchmark finding scenes at their time, and
the empty-folder refusal."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.tempme.apis.inference import VideoReader, init_retriever
from projects.tempme.apis.video_windows import WindowReader
from projects.tempme_deploy.search import (FileStat, VideoIndex, WindowSettings, plan_windows,
                                           shard_by_duration, suppress_overlaps)
from projects.tempme_deploy.search.moments import rank_moments
from projects.tempme_deploy.search.similarity import select_top_k
from tests.conftest import write_circle_video
from tools import search as search_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/tempme_tiny.py'
CLIP = WindowSettings(12.0, 6.0, 1.0)


# -- pure logic ---------------------------------------------------------------------------------
def test_windows_cover_a_long_video_on_the_grid_and_a_short_one_is_one_row():
    # 60 s at 30 fps: windows of 12 grid positions (30 frames apart) every 6, up to the end
    windows = plan_windows(1800, 30.0, CLIP)
    assert [(w.start, w.end) for w in windows] == [(s, s + 12.0) for s in range(0, 49, 6)]
    assert all(w.first == 30 * w.start and w.stop == 30 * w.end for w in windows)
    # 65 s: one more window, aligned to the end, so the last seconds are searched too
    tail = plan_windows(1950, 30.0, CLIP)
    assert [w.start for w in tail][-2:] == [48.0, 53.0] and tail[-1].end == 65.0
    # up to one window of grid positions: the whole file, one row, as without windows
    assert plan_windows(360, 30.0, CLIP) == [(0, 360, 0.0, 12.0)]
    assert plan_windows(16, 10.0, CLIP) == [(0, 16, 0.0, 1.6)]
    # an unknown frame rate counts grid positions as seconds at the sampler's rate
    assert plan_windows(30, float('nan'), CLIP)[1].start == 6.0
    other = plan_windows(1800, 30.0, WindowSettings(30.0, 10.0))
    assert [w.start for w in other] == [0.0, 10.0, 20.0, 30.0]


@pytest.mark.parametrize('seconds,stride,message', [
    (12.0, 13.0, 'longer than the window'), (0.2, 0.2, 'at least one grid position'),
    (-1.0, 1.0, 'positive number'), (12.0, float('nan'), 'positive number')])
def test_window_settings_refuse_gaps_and_empty_windows(seconds, stride, message):
    with pytest.raises(ValueError, match=message):
        WindowSettings(seconds, stride)


def test_overlapping_hits_of_a_video_are_one_moment():
    # rows: video 0 windows [0,12) [6,18) [12,24) [18,30); video 1 one row of unknown end
    row_files = np.array([0, 0, 0, 0, 1])
    spans = np.array([[0, 12], [6, 18], [12, 24], [18, 30], [0, np.nan]], float)
    ranked = [1, 2, 0, 4, 3]  # best first
    assert suppress_overlaps(ranked, row_files, spans, k=10) == [1, 4]
    # two moments of a video never overlap: [6,18) then [18,30), not [12,24) nor [0,12)
    assert suppress_overlaps(ranked, row_files, spans, k=10, per_video=2) == [1, 4, 3]
    assert suppress_overlaps(ranked, row_files, spans, k=1, per_video=2) == [1]
    with pytest.raises(ValueError, match='per_video'):
        suppress_overlaps(ranked, row_files, spans, k=1, per_video=0)


def test_ranking_moments_asks_for_more_candidates_only_when_suppression_needs_them():
    rng = np.random.default_rng(0)
    row_files = np.repeat(np.arange(10), 30)  # 10 videos of 30 windows, stride half a window
    starts = np.tile(np.arange(30) * 6.0, 10)
    spans = np.stack([starts, starts + 12], 1)
    scores = rng.standard_normal(300).astype(np.float32)
    scores[:30] += 10  # video 0 fills the first candidates
    asked = []

    def top(m):
        asked.append(m)
        return select_top_k(scores, m)

    picks, by_row = rank_moments(top, 300, row_files, spans, k=3)
    everything = suppress_overlaps(select_top_k(scores, 300)[0], row_files, spans, k=3)
    assert picks == everything and len(asked) > 1 and asked[0] < 300
    assert [row_files[p] for p in picks][0] == 0 and len(set(row_files[picks])) == 3
    assert by_row == {p: float(scores[p]) for p in picks}


def test_shards_are_balanced_by_duration_not_by_file_count():
    # one 10-minute video (99 windows of 12 s) and 100 clips of 2 s, for 4 ranks
    durations = [12.0] * 99 + [2.0] * 100
    shards = shard_by_duration(durations, 4)
    assert shards[0][0] == 0 and shards[-1][1] == len(durations)
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))  # contiguous, complete
    seconds = [sum(durations[lo:hi]) for lo, hi in shards]
    assert max(seconds) - min(seconds) <= 12.0  # within one window of each other
    assert shard_by_duration([], 3) == [(0, 0)] * 3
    assert shard_by_duration([5.0], 2) in ([(0, 1), (1, 1)], [(0, 0), (0, 1)])


# -- reading windows ----------------------------------------------------------------------------
def write_long_video(path, seconds, fps=5, size=(64, 48)):
    """A video whose frame k shows k in its colour and a disc crossing the frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
    for k in range(int(seconds * fps)):
        img = np.full((size[1], size[0], 3), (k * 7) % 255, np.uint8)
        cv2.circle(img, ((k * 3) % size[0], 24), 8, (0, 0, 255), -1)
        writer.write(img)
    writer.release()


def test_a_long_video_is_opened_and_decoded_once_one_seek_per_window(tmp_path, monkeypatch):
    import decord
    video = tmp_path / 'long.mp4'
    write_long_video(video, 40)
    reader = WindowReader(init_retriever(CONFIG).cfg)
    opened, batches = [], []
    real_init, real_batch = decord.VideoReader.__init__, decord.VideoReader.get_batch

    def counting_init(self, *args, **kwargs):
        opened.append(1)
        real_init(self, *args, **kwargs)

    def counting_batch(self, indices):
        batches.append(list(indices))
        return real_batch(self, indices)

    monkeypatch.setattr(decord.VideoReader, '__init__', counting_init)
    monkeypatch.setattr(decord.VideoReader, 'get_batch', counting_batch)
    windows = list(reader.read(str(video), CLIP))
    assert [(w.start, w.end) for _, w, _ in windows] == [(s, s + 12.0) for s in (0, 6, 12, 18,
                                                                                 24, 28)]
    assert len(opened) == 1 and len(batches) == len(windows)  # one seek per window
    decoded = [i for batch in batches for i in batch]
    assert len(decoded) == len(set(decoded)) == 40  # each grid frame once (5 fps: every 5th)
    assert sorted(decoded) == list(range(0, 200, 5))
    for _, window, frames in windows:  # the window's 12 grid frames, in order
        assert frames.shape == (12, 3, 112, 112)
    short = tmp_path / 'short.mp4'
    write_circle_video(short, (0, 0, 255))
    (_, _, alone), = reader.read(str(short), CLIP)
    plain = VideoReader(init_retriever(CONFIG).cfg)(str(short))
    assert np.array_equal(alone.numpy(), plain.numpy())  # as before windows existed


# -- indexing and querying ----------------------------------------------------------------------
def test_index_stores_windows_and_query_returns_moments(tmp_path, capsys):
    videos = tmp_path / 'videos'
    write_long_video(videos / 'long.mp4', 30)
    write_circle_video(videos / 'short.mp4', (0, 255, 0))
    index_dir = str(tmp_path / 'index')
    stats = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    index = VideoIndex.load(index_dir)
    assert (stats['indexed'], stats['rows'], len(index)) == (2, 5, 5)
    assert index.windows == dict(seconds=12.0, stride=6.0, frame_rate=1.0)
    assert [(f.path.split('/')[-1]) for f in index.files] == ['long.mp4', 'short.mp4']
    np.testing.assert_array_equal(index.spans[:4], [[0, 12], [6, 18], [12, 24], [18, 30]])
    assert index.spans[4].tolist() == [0.0, 1.6]

    capsys.readouterr()
    hits = search_tool.main(['query', index_dir, 'a red disc', '--json', '--per-video', '3',
                             '--top-k', '10', '--sheet', str(tmp_path / 'sheet.png')])
    printed = json.loads(capsys.readouterr().out)['results']
    assert [set(r) for r in printed] == [{'rank', 'path', 'start', 'end', 'score'}] * len(hits)
    longs = [(r['start'], r['end']) for r in printed if r['path'].endswith('long.mp4')]
    assert 1 <= len(longs) <= 3 and all(  # moments of one video never overlap
        a[1] <= b[0] or b[1] <= a[0] for i, a in enumerate(longs) for b in longs[i + 1:])
    one = search_tool.query_index(index_dir, 'a red disc', top_k=10)
    assert len(one) == len({h.path for h in one}) == 2  # one moment per video by default
    assert cv2.imread(str(tmp_path / 'sheet.png')) is not None

    # a changed long video re-encodes all its windows; the short one stays
    write_long_video(videos / 'long.mp4', 18)
    os.utime(videos / 'long.mp4', ns=(1, 10**18))
    again = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    assert (again['encoded'], again['windows'], again['unchanged'], again['rows']) == \
        (1, 2, 1, 3)
    # other windows than the index's need --rebuild
    with pytest.raises(ValueError, match='windows of 12 s every 6 s; pass --rebuild'):
        search_tool.build_index(str(videos), index_dir, CONFIG, progress=False, window=8.0)
    rebuilt = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False,
                                      window=8.0, rebuild=True)
    assert rebuilt['rows'] == 5 and VideoIndex.load(index_dir).windows['stride'] == 4.0
    assert VideoIndex.load(index_dir).spans[:4, 0].tolist() == [0, 4, 8, 10]


def test_a_folder_without_videos_is_refused_with_exit_code_2(tmp_path):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'notes.txt').write_text('no video here')
    done = subprocess.run([sys.executable, 'tools/search.py', 'index', str(tmp_path / 'empty'),
                           '--config', CONFIG, '--index', str(tmp_path / 'index')],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f'no videos found under {tmp_path / "empty"} (extensions: '
                                   'mp4, webm, mkv, avi, mov, m4v, mpg, mpeg, 3gp, 3g2, wmv, '
                                   'flv, ogv, mts, m2ts)')
    assert not (tmp_path / 'index').exists()


def test_rows_of_a_crafted_index_are_refused_by_name(tmp_path):
    files = [FileStat('/v/a.mp4', 1, 1), FileStat('/v/b.mp4', 1, 1)]
    index = VideoIndex(str(tmp_path / 'idx'), dict(fingerprint='f'))
    index.add(files, np.eye(3, 8, dtype=np.float32), spans=[[0, 12], [6, 18], [0, 2]],
              counts=[2, 1])
    index.save()
    manifest = json.loads((tmp_path / 'idx' / 'manifest.json').read_text())
    rows_path = tmp_path / 'idx' / manifest['rows']
    good = np.load(rows_path)
    for change, message in [(lambda r: r['file'].__setitem__(1, 2), 'each file needs its own'),
                            (lambda r: r['start'].__setitem__(0, -5), r'row 0 \(/v/a.mp4\) '
                             'spans -5.0-12.0 s'),
                            (lambda r: r['end'].__setitem__(1, 0.5), 'not 0 <= start <= end'),
                            (lambda r: r['list'].__setitem__(0, 3), 'rows name IVF lists')]:
        rows = good.copy()
        change(rows)
        with open(rows_path, 'wb') as f:
            np.save(f, rows, allow_pickle=False)
        with pytest.raises(ValueError, match=message):
            VideoIndex.load(str(tmp_path / 'idx'))
    with open(rows_path, 'wb') as f:
        np.save(f, good[['file', 'start']], allow_pickle=False)
    with pytest.raises(ValueError, match='not \\(rows,\\) records'):
        VideoIndex.load(str(tmp_path / 'idx'))


# -- a trained model finds each scene at its time ------------------------------------------------
@pytest.fixture(scope='module')
def synthetic_checkpoint(tmp_path_factory):
    """TempMe of configs/tempme_synthetic.py trained briefly on the synthetic benchmark (the
    demo's recipe, shortened: 256 videos, 4 epochs)."""
    root = tmp_path_factory.mktemp('synthetic_model')
    data, work = root / 'data', root / 'work'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    options = [f'{split}_dataloader.dataset.data_root={data}' for split in ('train', 'val',
                                                                            'test')]

    def run(*args):
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]

    run('tools/data/make_synthetic.py', '--out', str(data), '--num-train', '256', '--num-val',
        '4', '--num-test', '4', '--seed', '5')
    run('tools/data/cache_frames.py', 'configs/tempme_synthetic.py', '--split', 'train',
        '--no-progress', '--cfg-options', *options)
    epochs = 4
    run('tools/train.py', 'configs/tempme_synthetic.py', '--work-dir', str(work), '--seed', '0',
        '--cfg-options', *options, f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_begin={epochs + 1}', f'default_hooks.checkpoint.interval={epochs}')
    return str(work / f'epoch_{epochs}.pth')


def test_a_trained_model_finds_each_scene_of_a_long_video_at_its_time(tmp_path,
                                                                      synthetic_checkpoint):
    from tools.analysis import search_moments
    report = search_moments.evaluate('configs/tempme_synthetic.py', synthetic_checkpoint,
                                     str(tmp_path), videos=2, segments=5, seed=1)
    # two 60-s videos: 9 windows of 12 s every 6 s each, 5 scenes with their own captions
    assert (report['captions'], report['windows']) == (10, 18)
    print(f'scenes found at their time: {report["at_time"]:.0%} (a random window: '
          f'{report["chance_at_time"]:.0%}), first of the index: {report["top1"]:.0%}')
    assert report['at_time'] > 0.5 and report['at_time'] > report['chance_at_time'] + 0.2
