"""Bad videos, annotations and features: each is caught early with a message naming it."""
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List

import cv2
import numpy as np
import pytest
import torch
from mmaction.registry import DATASETS
from mmengine.logging import MMLogger

from projects.tempme.datasets import (AnnotationError, VideoCheckError, VideoLoadError,
                                      VideoTextRetrievalDataset, caption_token_count, probe_video,
                                      probe_videos, truncated_captions)
from projects.tempme.datasets.transforms import clip_tokenizer
from projects.tempme.datasets.video_check import resolve_video_path, shard, unshard
from projects.tempme.evaluation import RetrievalMetric
from tests.conftest import video_text_pipeline
from tools.analysis import check_dataset

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
CONTEXT = 32

# ---------------------------------------------------------------------------------------
# Generated videos: frame k is one flat colour whose red channel encodes k.


def frame_rgb(k: int) -> np.ndarray:
    return np.array([20 + 10 * k, 230 - 10 * k, 60], dtype=np.uint8)


def write_video(path: Path, num_frames: int, noise: bool = False) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for k in range(num_frames):
        frame = np.empty((48, 64, 3), np.uint8)
        frame[:] = frame_rgb(k)[::-1]  # BGR
        if noise:  # incompressible frames: a damaged stretch hits frame data
            frame = rng.integers(0, 255, frame.shape, dtype=np.uint8)
        writer.write(frame)
    writer.release()


def decoded_frame_ids(video: torch.Tensor) -> List[int]:
    mean_rgb = video.float().mean(dim=(2, 3))
    return torch.round((mean_rgb[:, 0] - 20) / 10).long().tolist()


_CONTAINER_ATOMS = {b'moov', b'trak', b'mdia', b'minf', b'stbl'}


def _atoms(buf: bytes, start: int, end: int) -> Iterator[tuple]:
    pos = start
    while pos < end:
        size = int.from_bytes(buf[pos:pos + 4], 'big')
        yield bytes(buf[pos + 4:pos + 8]), pos, size
        pos += size


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, pos, size in _atoms(moov, start, end):
        if kind in _CONTAINER_ATOMS:
            _shift_chunk_offsets(moov, pos + 8, pos + size, delta)
        elif kind == b'stco':
            for k in range(int.from_bytes(moov[pos + 12:pos + 16], 'big')):
                at = pos + 16 + 4 * k
                offset = int.from_bytes(moov[at:at + 4], 'big') + delta
                moov[at:at + 4] = offset.to_bytes(4, 'big')


def index_first(data: bytes) -> bytes:
    """Move the mp4 index (moov) before the frame data, as streaming-ready files have it.

    OpenCV writes the index last, so cutting its file removes the index and decord
    refuses to open it; a cut index-first file opens and fails only at the lost frames.
    """
    top = {kind: (pos, size) for kind, pos, size in _atoms(data, 0, len(data))}
    (mdat, _), (moov_at, moov_size) = top[b'mdat'], top[b'moov']
    moov = bytearray(data[moov_at:moov_at + moov_size])
    _shift_chunk_offsets(moov, 8, moov_size, moov_size)
    return data[:mdat] + bytes(moov) + data[mdat:moov_at] + data[moov_at + moov_size:]


#: name -> expected probe reason (None: readable).
VIDEOS = {
    'good.mp4': None,
    'short.mp4': None,
    'missing.mp4': 'file not found',
    'empty.mp4': 'empty file (0 bytes)',
    'truncated.mp4': 'cannot be opened as a video (truncated, or not a video file)',
    'text.mp4': 'cannot be opened as a video (truncated, or not a video file)',
    # decord indexes every packet when it opens a file, so a cut is found even when
    # the index survives.
    'cut_index_first.mp4': 'cannot be opened as a video (truncated, or not a video file)',
}
#: Zeroed bytes in the middle: decoding the 12 sampled frames always fails. Whether the
#: two-frame probe sees it varies from run to run (decord's decoder thread reads ahead),
#: so the load-time tests turn the probe off to reach the load-time fallback for sure.
DAMAGED = 'damaged_middle.mp4'


@pytest.fixture(scope='module')
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('bad_videos')
    videos = root / 'videos'
    videos.mkdir()
    (root / 'folder.mp4').mkdir()
    write_video(videos / 'good.mp4', 20)
    write_video(videos / 'short.mp4', 5)
    (videos / 'empty.mp4').write_bytes(b'')
    data = (videos / 'good.mp4').read_bytes()
    (videos / 'truncated.mp4').write_bytes(data[:len(data) // 2])
    (videos / 'text.mp4').write_text('this is a text file, not a video\n' * 20)
    write_video(videos / 'noise.mp4', 20, noise=True)
    noise = index_first((videos / 'noise.mp4').read_bytes())
    (videos / 'noise.mp4').unlink()
    (videos / 'cut_index_first.mp4').write_bytes(noise[:len(noise) * 2 // 3])
    damaged = bytearray(noise)
    damaged[len(noise) // 3:len(noise) // 2] = bytes(len(noise) // 2 - len(noise) // 3)
    (videos / DAMAGED).write_bytes(bytes(damaged))
    return root


class LogRecords(logging.Handler):
    """Collect the records of the current MMLogger (the one the dataset writes to)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.INFO) -> str:
        return '\n'.join(r.getMessage() for r in self.records if r.levelno >= level)


_LOGGER_IDS = itertools.count()


@pytest.fixture
def logs() -> Iterator[LogRecords]:
    # A new instance is the current one, which the dataset and the metric write to.
    logger = MMLogger.get_instance(f'test_bad_input_{next(_LOGGER_IDS)}', log_level='INFO')
    handler = LogRecords()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def build(root: Path, annotation: Dict[str, List[str]], test_mode: bool = False,
          **kwargs) -> VideoTextRetrievalDataset:
    ann = root / f'ann_{abs(hash(json.dumps(annotation, sort_keys=True)))}.json'
    ann.write_text(json.dumps(annotation))
    return DATASETS.build(dict(
        type='VideoTextRetrievalDataset', ann_file=ann.name, data_root=str(root),
        data_prefix=dict(video='videos'), pipeline=video_text_pipeline(test_mode),
        test_mode=test_mode, **kwargs))


def all_videos_annotation() -> Dict[str, List[str]]:
    return {name: [f'caption of {name}', f'another caption of {name}'] for name in VIDEOS}


BAD = [name for name, reason in VIDEOS.items() if reason is not None]

# ---------------------------------------------------------------------------------------
# Part 1: videos.


def test_probe_gives_one_reason_per_kind_of_bad_file(video_dir: Path) -> None:
    for name, expected in VIDEOS.items():
        probe = probe_video(str(video_dir / 'videos' / name))
        assert probe.path == str(video_dir / 'videos' / name)
        if expected is None:
            assert probe.ok and probe.reason is None, (name, probe.reason)
        else:
            assert not probe.ok and probe.reason.startswith(expected), (name, probe.reason)
    assert probe_video(str(video_dir / 'videos' / 'good.mp4')).num_frames == 20
    assert probe_video(str(video_dir / 'videos' / 'short.mp4')).num_frames == 5
    # decord's message is kept, without its build-path prefix.
    assert probe_video(str(video_dir / 'videos' / 'text.mp4')).reason.endswith(
        'RuntimeError: decord cannot open it')
    reason = probe_video(str(video_dir / 'videos' / 'cut_index_first.mp4')).reason
    assert reason.endswith('DECORDError: Error: av_read_frame failed with 1094995529'), reason
    # A folder is not a video; a bare name gets '.mp4', as DecordInit does.
    assert probe_video(str(video_dir / 'folder.mp4')).reason == 'not a regular file'
    assert resolve_video_path('a/b') == 'a/b.mp4'
    assert resolve_video_path('a/b.avi') == 'a/b.avi'
    assert probe_video(str(video_dir / 'videos' / 'good')).ok


def test_probe_videos_keeps_order_with_threads(video_dir: Path) -> None:
    files = [str(video_dir / 'videos' / name) for name in VIDEOS] * 2
    seen = []
    serial = probe_videos(files, num_threads=1)
    threaded = probe_videos(files, num_threads=3, on_done=seen.append)
    assert threaded == serial
    assert [p.reason is None for p in serial] == [r is None for r in VIDEOS.values()] * 2
    assert Counter(seen) == Counter(serial)
    with pytest.raises(ValueError, match='num_threads'):
        probe_videos(files, num_threads=0)


@pytest.mark.parametrize('total', [0, 1, 5, 9])
@pytest.mark.parametrize('world_size', [1, 2, 4])
def test_shards_cover_every_video_once_and_merge_back(total: int, world_size: int) -> None:
    items = [f'v{i}' for i in range(total)]
    parts = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert unshard(parts, total) == items


def test_unshard_rejects_a_rank_with_missing_results() -> None:
    with pytest.raises(ValueError, match='rank 1 returned 1 results, expected 2'):
        unshard([['a', 'c'], ['b']], 4)
    with pytest.raises(ValueError, match='rank must lie'):
        shard(['a'], 2, 2)


def test_ranks_agree_on_the_bad_videos(video_dir: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """Two ranks each probe half of the videos, share them and keep the same videos."""
    from projects.tempme.datasets import video_text_dataset as module

    single = build(video_dir, all_videos_annotation(), on_bad_video='skip')
    files = [str(video_dir / 'videos' / name) for name in VIDEOS]
    parts = [probe_videos(shard(files, rank, 2)) for rank in (0, 1)]
    kept = {}
    for rank in (0, 1):
        probed = []

        def gather(mine: list, rank: int = rank) -> list:
            probed.append(mine)
            return [mine if r == rank else parts[r] for r in (0, 1)]

        monkeypatch.setattr(module, 'get_dist_info', lambda rank=rank: (rank, 2))
        monkeypatch.setattr(module, 'all_gather_object', gather)
        dataset = build(video_dir, all_videos_annotation(), on_bad_video='skip')
        assert probed == [parts[rank]]
        assert len(parts[rank]) == len(range(rank, len(VIDEOS), 2))
        kept[rank] = (dataset.videos, dataset.skipped_videos)
    assert kept[0] == kept[1] == (single.videos, single.skipped_videos)
    assert len(single.skipped_videos) == len(BAD)


def _rank_builds_dataset(rank: int, world_size: int, init_file: str, ann_file: str,
                         out: str) -> None:
    import torch.distributed as dist
    from mmengine.registry import DefaultScope

    import projects.tempme  # noqa: F401

    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world_size)
    try:
        with DefaultScope.overwrite_default_scope('mmaction'):
            dataset = DATASETS.build(dict(
                type='VideoTextRetrievalDataset', ann_file=ann_file,
                data_prefix=dict(video=str(Path(ann_file).parent / 'videos')),
                pipeline=video_text_pipeline(False), on_bad_video='skip'))
        Path(out, f'{rank}.json').write_text(json.dumps(
            dict(videos=dataset.videos, skipped=dataset.skipped_videos)))
    finally:
        dist.destroy_process_group()


def test_two_real_ranks_keep_the_same_videos(video_dir: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ann = video_dir / 'two_ranks.json'
    ann.write_text(json.dumps(all_videos_annotation()))
    # Forked ranks start with everything imported (spawned ones would take ~25 s here).
    mp.start_processes(_rank_builds_dataset, nprocs=2, join=True, start_method='fork',
                       args=(2, str(tmp_path / 'init'), str(ann), str(tmp_path)))
    rank0, rank1 = (json.loads((tmp_path / f'{r}.json').read_text()) for r in (0, 1))
    assert rank0 == rank1
    assert rank0['videos'] == [name for name in VIDEOS if VIDEOS[name] is None]
    assert [Path(path).name for path, _ in rank0['skipped']] == BAD


def test_error_mode_lists_every_bad_video_with_its_reason(video_dir: Path,
                                                          logs: LogRecords) -> None:
    with pytest.raises(VideoCheckError) as err:
        build(video_dir, all_videos_annotation())
    message = str(err.value)
    assert f'{len(BAD)} of {len(VIDEOS)} videos cannot be read' in message
    for name, reason in VIDEOS.items():
        path = str(video_dir / 'videos' / name)
        if reason is None:
            assert path not in message
        else:
            assert f'{path}: {reason}' in message
            assert f'{path}: {reason}' in logs.text(logging.ERROR)
    assert "on_bad_video='skip'" in message and 'check_dataset.py' in message


def test_error_message_is_bounded_but_the_log_lists_all(video_dir: Path,
                                                        logs: LogRecords) -> None:
    annotation = {f'absent_{i}.mp4': ['a caption'] for i in range(25)}
    annotation['good.mp4'] = ['a caption']
    with pytest.raises(VideoCheckError) as err:
        build(video_dir, annotation)
    assert '... and 5 more' in str(err.value)
    assert str(err.value).count('file not found') == 20
    assert logs.text(logging.ERROR).count('file not found') == 25


def test_wrong_video_folder_says_so(video_dir: Path) -> None:
    with pytest.raises(VideoCheckError, match=r"none exists: check data_root and data_prefix"):
        build(video_dir, {'nowhere_a.mp4': ['x'], 'nowhere_b.mp4': ['y']},
              on_bad_video='skip')


def test_skip_mode_leaves_bad_videos_out_counted_and_logged(video_dir: Path,
                                                            logs: LogRecords) -> None:
    dataset = build(video_dir, all_videos_annotation(), on_bad_video='skip')
    kept = [name for name in VIDEOS if VIDEOS[name] is None]
    assert dataset.videos == kept
    assert len(dataset) == 2 * len(kept)
    assert dataset.caption_to_video.tolist() == [v for v in range(len(kept)) for _ in '12']
    assert dataset.metainfo['num_skipped_videos'] == len(BAD)
    assert [path for path, _ in dataset.skipped_videos] == [
        str(video_dir / 'videos' / name) for name in BAD]
    warning = logs.text(logging.WARNING)
    assert f'{len(BAD)} of {len(VIDEOS)} videos cannot be read' in warning
    assert f'their {2 * len(BAD)} captions out' in warning
    for name in BAD:
        assert str(video_dir / 'videos' / name) in warning
    assert 'PARTIAL SPLIT' not in warning
    # Every kept training item of a probe-passing video loads.
    for idx in (0, 1, 2, 3):
        assert dataset[idx]['inputs']['video'].shape == (12, 3, SIZE, SIZE)


def test_skipping_evaluation_videos_warns_loudly(video_dir: Path, logs: LogRecords) -> None:
    dataset = build(video_dir, all_videos_annotation(), test_mode=True, on_bad_video='skip')
    assert len(dataset) == len(VIDEOS) - len(BAD)
    assert (f'EVALUATION ON A PARTIAL SPLIT: {len(BAD)} of {len(VIDEOS)} videos skipped'
            in logs.text(logging.WARNING))


def test_check_runs_when_the_pipeline_decodes_videos(video_dir: Path) -> None:
    annotation = {'missing.mp4': ['a caption'], 'good.mp4': ['another']}
    ann = video_dir / 'auto.json'
    ann.write_text(json.dumps(annotation))
    common = dict(type='VideoTextRetrievalDataset', ann_file=str(ann),
                  data_prefix=dict(video=str(video_dir / 'videos')))
    # No DecordInit, nothing decoded: nothing to check (caption-only uses, samplers).
    assert len(DATASETS.build(dict(common, pipeline=[]))) == 2
    with pytest.raises(VideoCheckError, match='missing.mp4: file not found'):
        DATASETS.build(dict(common, pipeline=[], check_videos=True))
    dataset = DATASETS.build(dict(common, pipeline=video_text_pipeline(False),
                                  check_videos=False))
    assert len(dataset) == 2
    with pytest.raises(ValueError, match="on_bad_video must be one of"):
        DATASETS.build(dict(common, pipeline=[], on_bad_video='ignore'))
    with pytest.raises(ValueError, match='check_threads'):
        DATASETS.build(dict(common, pipeline=[], check_threads=0))


def test_load_failure_names_the_file_in_error_mode(video_dir: Path) -> None:
    dataset = build(video_dir, {'good.mp4': ['a'], DAMAGED: ['b']}, test_mode=True,
                    check_videos=False)
    assert len(dataset) == 2
    assert dataset[0]['data_samples'].video_index == 0
    with pytest.raises(VideoLoadError) as err:
        dataset[1]
    path = str(video_dir / 'videos' / DAMAGED)
    assert f'{path} (dataset item 1) failed to load' in str(err.value)
    assert err.value.__cause__ is not None  # the decoder's own error stays attached


def test_load_failure_in_skip_mode_is_replaced_deterministically(video_dir: Path,
                                                                 logs: LogRecords) -> None:
    annotation = {'good.mp4': ['a', 'b'], DAMAGED: ['c', 'd'], 'short.mp4': ['e']}
    dataset = build(video_dir, annotation, test_mode=True, on_bad_video='skip',
                    check_videos=False)
    # Item 1 (the damaged video) is replaced by item 2, the next one of another video,
    # every time; the file is logged once and not decoded again.
    for count in (1, 2):
        sample = dataset[1]['data_samples']
        assert (sample.video_index, sample.caption_indices) == (2, [4])
        assert dataset.num_load_failures == count
    assert dataset[0]['data_samples'].caption_indices == [0, 1]  # others are untouched
    path = str(video_dir / 'videos' / DAMAGED)
    warnings = [r.getMessage() for r in logs.records
                if r.levelno == logging.WARNING and path in r.getMessage()]
    assert len(warnings) == 1
    assert (f'EVALUATION ON A PARTIAL SPLIT: {path} failed to load; its items are '
            'replaced') in warnings[0]
    assert '1 failed videos in this process' in warnings[0]


def test_load_failure_replacement_gives_up_when_everything_fails(video_dir: Path) -> None:
    dataset = build(video_dir, {DAMAGED: ['a', 'b'], 'text.mp4': ['c']}, test_mode=True,
                    on_bad_video='skip', check_videos=False)
    with pytest.raises(VideoLoadError, match=r'no other video could replace it \(2 videos '
                       r'failed in this process, 1 while looking for a replacement\)'):
        dataset[0]


def test_short_video_frames_repeat_in_time_order(video_dir: Path, logs: LogRecords) -> None:
    annotation = {'short.mp4': ['a short clip'], 'good.mp4': ['a longer clip']}
    evaluation = build(video_dir, annotation, test_mode=True)
    # the reference rule: np.linspace(0, 4, 12, dtype=int), in training too (no jitter)
    repeated = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert decoded_frame_ids(evaluation[0]['inputs']['video']) == repeated
    assert ('1 of 2 videos have fewer than the 12 frames an item samples; their frames '
            'are repeated in time order') in logs.text()
    training = build(video_dir, annotation)
    assert decoded_frame_ids(training[0]['inputs']['video']) == repeated


def test_training_stops_before_the_first_step(video_dir: Path, tmp_path: Path) -> None:
    (video_dir / 'train.json').write_text(json.dumps(all_videos_annotation()))
    for split in ('val', 'test'):
        (video_dir / f'{split}.json').write_text(json.dumps({'good.mp4': ['a caption']}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/tempme_tiny.py', '--work-dir',
         str(tmp_path), '--cfg-options', *[f'{split}_dataloader.dataset.data_root={video_dir}'
                                           for split in ('train', 'val', 'test')]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'VideoCheckError' in output
    for name in BAD:
        assert str(video_dir / 'videos' / name) in output
    assert 'Epoch(train)' not in output
    assert not list(tmp_path.glob('**/*.pth'))


def test_check_dataset_tool_lists_every_bad_video(video_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    tool = check_dataset
    (video_dir / 'train.json').write_text(json.dumps(all_videos_annotation()))
    (video_dir / 'val.json').write_text(json.dumps({'good.mp4': ['a caption']}))
    options = [f'{split}_dataloader.dataset.data_root={video_dir}'
               for split in ('train', 'val', 'test')] + [
                   'test_dataloader.dataset.ann_file=val.json']
    report = tmp_path / 'report.json'
    code = tool.main(['configs/tempme_tiny.py', '--split', 'all', '--out', str(report),
                      '--cfg-options', *options])
    out = capsys.readouterr().out
    assert code == 1
    assert (f'[train] {video_dir}/train.json: {len(VIDEOS)} videos, {len(BAD)} unreadable'
            in out)
    for name in BAD:
        assert f'{video_dir / "videos" / name}: {VIDEOS[name]}' in out
    assert '[val] ' in out and '1 videos, 0 unreadable' in out
    assert '[test] same data as val' in out
    saved = json.loads(report.read_text())
    assert [b['path'] for b in saved['train']['bad_videos']] == [
        str(video_dir / 'videos' / name) for name in BAD]
    assert saved['val']['ok'] and not saved['train']['ok']
    assert "or set on_bad_video='skip'" in out and f'report written to {report}' in out

    assert tool.main(['configs/tempme_tiny.py', '--split', 'val', '--cfg-options',
                      *options]) == 0
    assert 'all checked data is usable' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Part 2: annotations. Malformed JSON, an entry without captions, an empty caption and
# duplicate keys through the dataset: tests/test_datasets.py::test_bad_annotation_*.


def test_non_utf8_annotation_names_the_entry(tmp_path: Path) -> None:
    ann = tmp_path / 'latin1.json'
    content = b'{"ok.mp4": ["fine"],\n "x.mp4": ["a caption", "caf\xe9 au lait"]}'
    ann.write_bytes(content)
    with pytest.raises(AnnotationError) as err:
        DATASETS.build(dict(type='VideoTextRetrievalDataset', ann_file=str(ann), pipeline=[]))
    message = str(err.value)
    assert str(ann) in message
    byte = content.index(b'\xe9')
    assert f"not valid UTF-8 (byte {byte}, line 2, video 'x.mp4', caption 1)" in message
    assert 're-save the file as UTF-8' in message


@pytest.mark.parametrize('content, expected', [
    (b'{"a.mp4": ["x"], "b.mp4": ["y"]', 'malformed JSON at line 1'),
    (b'{"a.mp4": ["x"], "b.mp4": []}', "video 'b.mp4' has no captions"),
    (b'{"a.mp4": ["x", ""]}', "video 'a.mp4', caption 1 is empty"),
    (b'{"a.mp4": ["x"], "a.mp4": ["y"]}', "video 'a.mp4' appears more than once"),
    (b'{"a.mp4": ["\xff"]}', "video 'a.mp4', caption 0"),
])
def test_check_dataset_tool_reports_bad_annotations(tmp_path: Path, content: bytes,
                                                    expected: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    (tmp_path / 'train.json').write_bytes(content)
    tool = check_dataset
    code = tool.main(['configs/tempme_tiny.py', '--split', 'train', '--cfg-options',
                      f'train_dataloader.dataset.data_root={tmp_path}'])
    out = capsys.readouterr().out
    assert code == 1
    assert f'[train] FAILED: AnnotationError: {tmp_path}/train.json: ' in out
    assert expected in out
    assert 'on_bad_video' not in out  # skipping videos cannot fix an annotation


LONG = ' '.join(['word'] * 40)


def test_long_captions_are_counted_and_reported_at_load(video_dir: Path,
                                                        logs: LogRecords) -> None:
    annotation = {'good.mp4': ['short one', LONG, 'fine'],
                  'short.mp4': [LONG + ' again', 'ok']}
    dataset = build(video_dir, annotation, test_mode=True)
    assert dataset.metainfo['num_truncated_captions'] == 2
    warning = logs.text(logging.WARNING)
    assert (f'2 of 5 captions are longer than {CONTEXT - 2} tokens and are truncated to '
            f"context_length={CONTEXT} (first: video 'good.mp4', caption 1: ") in warning
    text = dataset[0]['inputs']['text']
    assert text.shape == (3, CONTEXT)
    assert int(text[1, -1]) == 49407  # EOT kept as the last token of the cut caption
    fits = build(video_dir, {'good.mp4': ['a caption that fits']})
    assert fits.metainfo['num_truncated_captions'] == 0


def test_token_count_matches_the_tokenizer() -> None:
    captions = ["a man's car isn't red.", 'café &amp; crème brûlée', 'ﬁne ligature',
                'hello,world!!  multiple   spaces', '日本語のテキスト です', 'emoji 🎉🎉 party',
                'tab\tand\nnewline', "don't stop-believing (1999)", LONG]
    tokenizer = clip_tokenizer()
    assert [caption_token_count(c) for c in captions] == [
        len(tokenizer.encode(c)) for c in captions]
    assert caption_token_count(LONG) == 40
    assert truncated_captions(captions, 42) == []
    assert truncated_captions(captions, 41) == [8]
    assert truncated_captions(captions, 8) == [0, 1, 4, 7, 8]


# ---------------------------------------------------------------------------------------
# Part 6: evaluation.


def samples(videos: torch.Tensor, texts: List[torch.Tensor]) -> List[dict]:
    return [dict(video_feat=v, text_feats=t, video_index=i)
            for i, (v, t) in enumerate(zip(videos, texts))]


def test_empty_split_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r'no videos were evaluated \(empty split\?\)'):
        RetrievalMetric().compute_metrics([])
    ann = tmp_path / 'empty.json'
    ann.write_text('{}')
    with pytest.raises(AnnotationError, match='the annotation has no videos'):
        DATASETS.build(dict(type='VideoTextRetrievalDataset', ann_file=str(ann), pipeline=[]))


def test_one_video_split_is_trivially_perfect_and_says_so(logs: LogRecords) -> None:
    metric = RetrievalMetric()
    metric.process(None, samples(torch.randn(1, 8), [torch.randn(3, 8)]))
    out = metric.compute_metrics(metric.results)
    for side in ('t2v', 'v2t'):
        assert out[f'{side}_R1'] == 100.0 and out[f'{side}_MdR'] == 1.0
    assert 'only 1 video (3 captions) was evaluated' in logs.text(logging.WARNING)


@pytest.mark.parametrize('num_videos', [4, 15])
def test_constant_model_gets_the_worst_ranks(num_videos: int, logs: LogRecords) -> None:
    feature = torch.randn(16)
    metric = RetrievalMetric(dsl=True)
    metric.process(None, samples(feature.expand(num_videos, 16),
                                 [feature.expand(2, 16)] * num_videos))
    out = metric.compute_metrics(metric.results)
    assert out['t2v_R1'] == 0.0 and out['v2t_R1'] == 0.0
    assert out['t2v_MdR'] == num_videos and out['t2v_MnR'] == num_videos
    # v2t: the best own caption ties with the best caption of every other video.
    assert out['v2t_MdR'] == out['v2t_MnR'] == num_videos
    assert out['dsl_t2v_R1'] == 0.0 and out['dsl_v2t_R1'] == 0.0
    assert out['t2v_R10'] == (100.0 if num_videos <= 10 else 0.0)
    warning = logs.text(logging.WARNING)
    assert f'all {num_videos} video features are identical' in warning
    assert f'all {2 * num_videos} caption features are identical' in warning


def test_features_equal_up_to_scale_are_flagged(logs: LogRecords) -> None:
    """Scaled copies differ by rounding after normalisation: no exact ties, but a warning."""
    feature = torch.randn(16, generator=torch.Generator().manual_seed(0))
    metric = RetrievalMetric()
    metric.process(None, samples(torch.stack([feature * (i + 1) for i in range(15)]),
                                 [torch.stack([feature * 0.5, feature * 3])] * 15))
    out = metric.compute_metrics(metric.results)
    assert out['t2v_R1'] < 50.0 and out['t2v_MdR'] > 1
    assert 'all 15 video features are identical (within 1e-05' in logs.text(logging.WARNING)
    metric = RetrievalMetric()
    metric.process(None, samples(torch.eye(4), [torch.eye(4)[i:i + 1] for i in range(4)]))
    logs.records.clear()
    metric.compute_metrics(metric.results)
    assert 'identical' not in logs.text(logging.WARNING)


def test_non_finite_features_name_how_many_videos_and_captions() -> None:
    videos = torch.randn(4, 8)
    texts = [torch.randn(2, 8) for _ in range(4)]
    videos[2, 3] = float('nan')
    texts[1][0, 0] = float('inf')
    texts[3][1, 5] = float('nan')
    metric = RetrievalMetric()
    metric.process(None, samples(videos, texts))
    with pytest.raises(ValueError) as err:
        metric.compute_metrics(metric.results)
    assert ('non-finite (NaN or inf) features: 1 of 4 videos (first dataset indices [2]) '
            'and 2 of 8 captions (of videos [1, 3])') in str(err.value)


def test_metric_flags_a_partial_split(logs: LogRecords) -> None:
    metric = RetrievalMetric()
    metric.dataset_meta = dict(num_videos=5, num_captions=10, num_skipped_videos=2)
    metric.process(None, samples(torch.eye(4), [torch.eye(4)[i:i + 1] for i in range(4)]))
    out = metric.compute_metrics(metric.results)
    assert out['t2v_R1'] == 100.0
    warning = logs.text(logging.WARNING)
    assert ('EVALUATION ON A PARTIAL SPLIT: 4 of the 5 videos of the split were '
            'evaluated') in warning
    assert 'the dataset check skipped 2 unreadable videos' in warning
    complete = RetrievalMetric()
    complete.dataset_meta = dict(num_videos=4, num_captions=4, num_skipped_videos=0)
    logs.records.clear()
    complete.process(None, samples(torch.eye(4), [torch.eye(4)[i:i + 1] for i in range(4)]))
    complete.compute_metrics(complete.results)
    assert 'PARTIAL' not in logs.text(logging.WARNING)


def _tiny_video(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (16, 16))
    for k in range(20):
        writer.write(np.full((16, 16, 3), 10 * k, np.uint8))
    writer.release()


def test_a_video_decord_decodes_to_six_channels_fails_the_probe(tmp_path: Path) -> None:
    _tiny_video(tmp_path / 'tiny16.mp4')
    probe = probe_video(str(tmp_path / 'tiny16.mp4'))
    assert not probe.ok and 'not (H, W, 3) RGB' in probe.reason


@pytest.mark.parametrize('what', ['six_channels', 'folder', 'missing'])
def test_visualize_merging_names_a_bad_video_without_a_traceback(tmp_path: Path, what) -> None:
    target = {'six_channels': tmp_path / 'tiny16.mp4', 'folder': tmp_path,
              'missing': tmp_path / 'nope.mp4'}[what]
    _tiny_video(tmp_path / 'tiny16.mp4')
    done = subprocess.run(
        [sys.executable, 'tools/analysis/visualize_merging.py', 'configs/tempme_tiny.py',
         str(target), '--out', str(tmp_path / 'out.png')], cwd=ROOT, capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-2000:]
    expected = {'six_channels': 'not (H, W, 3) RGB', 'folder': 'is a folder',
                'missing': 'file not found'}[what]
    assert expected in done.stderr and not (tmp_path / 'out.png').exists()


@pytest.mark.parametrize('key', ['/etc/passwd', '../outside.mp4', 'a/../../outside.mp4', '..'])
def test_annotation_keys_outside_the_video_folder_are_refused(video_dir: Path, key) -> None:
    (video_dir / 'outside.json').write_text(json.dumps({key: ['a caption']}))
    with pytest.raises(AnnotationError, match='points outside the video folder'):
        DATASETS.build(dict(type='VideoTextRetrievalDataset', ann_file='outside.json',
                            data_root=str(video_dir), data_prefix=dict(video='videos'),
                            pipeline=[], check_videos=False))


def test_paths_outside_the_root_can_be_allowed(video_dir: Path) -> None:
    key = str(video_dir / 'videos' / 'good.mp4')
    (video_dir / 'absolute.json').write_text(json.dumps({key: ['a caption'],
                                                         'sub/../good.mp4': ['another']}))
    dataset = DATASETS.build(dict(type='VideoTextRetrievalDataset', ann_file='absolute.json',
                                  data_root=str(video_dir), data_prefix=dict(video='videos'),
                                  pipeline=[], allow_paths_outside_root=True))
    assert dataset.get_data_info(0)['filename'] == key


def test_a_video_linking_outside_the_video_folder_is_refused(video_dir: Path,
                                                             tmp_path: Path) -> None:
    secret = tmp_path / 'secret.mp4'
    shutil.copy(video_dir / 'videos' / 'good.mp4', secret)
    (video_dir / 'videos' / 'link.mp4').symlink_to(secret)
    (video_dir / 'linked.json').write_text(json.dumps({'link.mp4': ['a caption'],
                                                       'good.mp4': ['another']}))
    config = dict(type='VideoTextRetrievalDataset', ann_file='linked.json',
                  data_root=str(video_dir), data_prefix=dict(video='videos'), pipeline=[],
                  check_videos=False)
    with pytest.raises(AnnotationError, match=r"'link.mp4' is a link to .*secret.mp4"):
        DATASETS.build(config)
    assert len(DATASETS.build(dict(config, allow_paths_outside_root=True))) == 2
    # a linked video folder is the usual layout and stays fine
    (tmp_path / 'root').mkdir()
    (tmp_path / 'root' / 'videos').symlink_to(video_dir / 'videos')
    (tmp_path / 'root' / 'ann.json').write_text(json.dumps({'good.mp4': ['a caption']}))
    assert len(DATASETS.build(dict(config, ann_file='ann.json',
                                   data_root=str(tmp_path / 'root')))) == 1
