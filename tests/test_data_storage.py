"""Compressed videos, the frame cache and the data benchmark, on the fixture videos."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest
import torch
from mmaction.registry import TRANSFORMS

from projects.tempme.datasets import (FrameCacheError, LoadCachedFrames, VideoTextRetrievalDataset,
                                      grid_frame_indices)
from projects.tempme.datasets.frame_cache import MANIFEST, cache_rule, read_manifest, update_cache
from tools.analysis import check_pipeline

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT / 'tests/data/videos'
NAMES = sorted(p.name for p in VIDEOS.glob('*.mp4'))
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')


def _compress(src, dst, *args):
    return subprocess.run([sys.executable, 'tools/data/compress_videos.py', str(src), str(dst),
                           '--no-progress', *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope='module')
def compressed(tmp_path_factory):
    dst = tmp_path_factory.mktemp('compressed')
    done = _compress(VIDEOS, dst)
    assert done.returncode == 0, done.stderr
    return dst


def test_compressed_videos_keep_time_stems_and_sources(compressed):
    expected = {'long_30fps_320x240.mp4': (48, (224, 298)),  # 16 s at 3 fps
                'ntsc_29.97fps_240x320.mp4': (41, (298, 224)),  # 13.4 s, portrait
                'short_25fps_176x144.mp4': (21, (144, 176))}  # 7 s, never upscaled
    for name, (frames, size) in expected.items():
        raw, small = decord.VideoReader(str(VIDEOS / name)), decord.VideoReader(
            str(compressed / name))
        assert (len(small), small[0].shape[:2], small.get_avg_fps()) == (frames, size, 3.0)
        # with 12 or more seconds, the reference rule picks the same moments (to within a
        # source frame); a shorter video is spread over all frames, which are 3 per second
        # after compression: the moments then differ by up to about half a second
        raw_times = grid_frame_indices(len(raw), raw.get_avg_fps(), 12) / raw.get_avg_fps()
        small_times = grid_frame_indices(len(small), 3.0, 12) / 3.0
        gap = np.abs(raw_times - small_times).max()
        bound = 1 / 25 if len(raw) / raw.get_avg_fps() >= 12 else 0.5
        assert gap <= bound + 1e-6, (name, raw_times, small_times)
        assert (compressed / name).stat().st_size < (VIDEOS / name).stat().st_size / 2


def test_compressed_videos_seek_to_keyframes_without_b_frames(compressed):
    """What keeps decoding cheap: the 1 fps grid lands on keyframes, nothing is reordered."""
    import av
    from av.video.frame import PictureType
    for name in NAMES:
        with av.open(str(compressed / name)) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
            keys = [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts))
                    if p.is_keyframe]
            assert [p.pts for p in packets] == sorted(p.pts for p in packets), name
        assert set(range(0, len(packets), 3)) <= set(keys), name  # each second at 3 fps
        with av.open(str(compressed / name)) as container:
            types = {PictureType(frame.pict_type).name for frame in container.decode(video=0)}
        assert types <= {'I', 'P'}, (name, types)


def test_compression_resumes_reports_bad_files_and_never_touches_sources(tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(VIDEOS, src)
    (src / 'nested').mkdir()
    (src / 'nested' / 'broken.avi').write_bytes(b'not a video')
    before = {p: p.stat().st_mtime_ns for p in src.rglob('*') if p.is_file()}
    dst = tmp_path / 'dst'
    (dst).mkdir()
    (dst / '.short_25fps_176x144.mp4.abc.tmp').write_bytes(b'killed mid-write')
    done = _compress(src, dst)
    assert done.returncode == 1
    assert f'failed {src / "nested" / "broken.avi"}' in done.stderr
    assert '3 compressed, 0 already there, 1 failed' in done.stdout
    assert sorted(p.name for p in dst.glob('*.mp4')) == NAMES  # the killed run's file is gone
    assert {p: p.stat().st_mtime_ns for p in src.rglob('*') if p.is_file()} == before
    assert not list(dst.glob('.*'))  # the killed run's temporary file is gone
    again = _compress(src, dst)
    assert '0 compressed, 3 already there, 1 failed' in again.stdout
    other = _compress(src, dst, '--crf', '20')  # never mixed with another encoding
    assert other.returncode == 2 and 'compressed with' in other.stderr
    assert "'crf': 30" in other.stderr and "'crf': 20" in other.stderr


# -- the frame cache ------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path):
    root = tmp_path / 'cache'
    stats = update_cache(str(root), [(n, str(VIDEOS / n)) for n in NAMES], cache_rule(12, 1),
                         progress=False)
    assert (stats['cached'], stats['failed']) == (3, 0)
    return root


def _decoded(name):
    results = dict(filename=str(VIDEOS / name), start_index=0, modality='RGB')
    for step in (dict(type='DecordInit'), dict(type='FpsGridSample', clip_len=12),
                 dict(type='DecordDecode')):
        results = TRANSFORMS.build(step)(results)
    return results


def test_cached_clips_are_bit_identical_to_decoding(cache):
    load = LoadCachedFrames(str(cache), clip_len=12)
    for name in NAMES:
        cached = load(dict(filename=str(VIDEOS / name), video=name))
        decoded = _decoded(name)
        assert np.array_equal(np.stack(cached['imgs']), np.stack(decoded['imgs']))
        assert cached['frame_inds'].tolist() == decoded['frame_inds'].tolist()
        assert cached['imgs'][0].dtype == np.uint8


def test_the_cache_folder_is_the_datasets_unless_the_step_names_one(cache, tmp_path):
    (tmp_path / 'ann.json').write_text(json.dumps({NAMES[0]: ['a caption']}))
    dataset = VideoTextRetrievalDataset(
        'ann.json', pipeline=[dict(type='LoadCachedFrames', clip_len=12)],
        data_root=str(tmp_path), data_prefix=dict(video=str(VIDEOS), frame_cache='cache'),
        test_mode=True, check_videos=False)
    assert dataset.get_data_info(0)['frame_cache'] == str(cache)
    assert np.array_equal(np.stack(dataset[0]['imgs']), np.stack(_decoded(NAMES[0])['imgs']))
    item = dict(filename=str(VIDEOS / NAMES[0]), video=NAMES[0])
    with pytest.raises(KeyError, match=r"no cache_root and the dataset no data_prefix\['frame"):
        LoadCachedFrames(clip_len=12)(dict(item))
    # a step's own cache_root wins over the dataset's folder
    with pytest.raises(FrameCacheError, match='no frame cache in'):
        LoadCachedFrames(str(tmp_path / 'elsewhere'), clip_len=12)(
            dict(item, frame_cache=str(cache)))


def test_evaluation_cache_holds_the_final_clips_bit_for_bit(tmp_path):
    root = tmp_path / 'eval_cache'
    update_cache(str(root), [(n, str(VIDEOS / n)) for n in NAMES], cache_rule(12, 1, 224),
                 progress=False)
    load = LoadCachedFrames(str(root), clip_len=12, size=224)
    resize = TRANSFORMS.build(dict(type='PILResizeCenterCrop', size=224))
    for name in NAMES:
        cached = resize(load(dict(filename=str(VIDEOS / name), video=name)))
        decoded = resize(_decoded(name))
        assert np.array_equal(np.stack(cached['imgs']), np.stack(decoded['imgs']))
    with pytest.raises(FrameCacheError, match='size=224, interpolation=bicubic, the config '
                       'asks for .*size=None'):
        LoadCachedFrames(str(root), clip_len=12)(dict(filename='x', video=NAMES[0]))


def test_evaluation_cache_resizes_as_the_pipeline_does_or_is_refused(tmp_path):
    root = tmp_path / 'eval_cache'
    update_cache(str(root), [(NAMES[0], str(VIDEOS / NAMES[0]))],
                 cache_rule(12, 1, 64, 'bilinear'), progress=False)
    resize = dict(type='PILResizeCenterCrop', size=64, interpolation='bilinear')
    cached = LoadCachedFrames(str(root), clip_len=12, size=64, interpolation='bilinear')(
        dict(filename=str(VIDEOS / NAMES[0]), video=NAMES[0]))
    decoded = TRANSFORMS.build(resize)(_decoded(NAMES[0]))
    assert np.array_equal(np.stack(cached['imgs']), np.stack(decoded['imgs']))
    with pytest.raises(FrameCacheError, match='interpolation=bilinear, the config asks for '
                       '.*interpolation=bicubic'):
        LoadCachedFrames(str(root), clip_len=12, size=64)(
            dict(filename=str(VIDEOS / NAMES[0]), video=NAMES[0]))
    # a resize after an evaluation cache that would not be applied stops the dataset early
    (tmp_path / 'ann.json').write_text(json.dumps({NAMES[0]: ['a caption']}))
    for size, interpolation in ((64, 'bicubic'), (32, 'bilinear')):
        with pytest.raises(ValueError, match=f'resizes with size={size}, '
                           f'interpolation={interpolation} after LoadCachedFrames'):
            VideoTextRetrievalDataset(
                'ann.json', data_root=str(tmp_path), test_mode=True, check_videos=False,
                pipeline=[dict(type='LoadCachedFrames', cache_root=str(root), size=64,
                               interpolation='bilinear'),
                          dict(resize, size=size, interpolation=interpolation)])


def test_cache_resumes_and_follows_the_frame_rule(cache):
    videos = [(n, str(VIDEOS / n)) for n in NAMES]
    assert update_cache(str(cache), videos, cache_rule(12, 1), progress=False)['unchanged'] == 3
    stats = update_cache(str(cache), videos, cache_rule(8, 1), progress=False)  # another rule
    assert (stats['cached'], stats['unchanged']) == (3, 0)
    assert read_manifest(str(cache))['clip_len'] == 8


def test_cache_refuses_another_rule_a_missing_video_and_a_changed_source(cache, tmp_path):
    with pytest.raises(FrameCacheError, match='holds clip_len=12, frame_rate=1.0, size=None, '
                       'interpolation=None, the config asks for clip_len=64'):
        LoadCachedFrames(str(cache), clip_len=64)(dict(filename='x.mp4', video='x.mp4'))
    load = LoadCachedFrames(str(cache), clip_len=12)
    with pytest.raises(FrameCacheError, match='other.mp4 is not in the frame cache'):
        load(dict(filename=str(tmp_path / 'other.mp4'), video='other.mp4'))
    copy = tmp_path / 'videos'
    shutil.copytree(VIDEOS, copy)
    update_cache(str(cache), [(n, str(copy / n)) for n in NAMES], cache_rule(12, 1),
                 progress=False)
    os.utime(copy / NAMES[0], ns=(1, 2))
    with pytest.raises(FrameCacheError, match='changed since it was cached'):
        load(dict(filename=str(copy / NAMES[0]), video=NAMES[0]))


def test_cached_config_matches_the_published_loader(cache, tmp_path, capsys):
    """Training cache (frames as decoded) and evaluation cache (final 224 px clips)."""
    evaluation = tmp_path / 'eval_cache'
    update_cache(str(evaluation), [(n, str(VIDEOS / n)) for n in NAMES], cache_rule(12, 1, 224),
                 progress=False)
    config = tmp_path / 'cached.py'
    # the config's own caches are data_prefix folders; absolute ones stand for themselves
    config.write_text(f"_base_ = ['{ROOT / 'configs/tempme_msrvtt_cached.py'}']\n"
                      'train_dataloader = dict(dataset=dict(data_prefix=dict('
                      f"frame_cache='{cache}')))\n"
                      'val_dataloader = dict(dataset=dict(data_prefix=dict('
                      f"frame_cache='{evaluation}')))\n"
                      'test_dataloader = val_dataloader\n')
    code = check_pipeline.main([str(config), str(ROOT / 'tests/data/reference_pipeline.pt'),
                                '--videos', str(VIDEOS), '--split', 'all'])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count('same    0.000      0  ok') == 6


# -- the tiny config trains and tests on each storage ----------------------------------------
@pytest.mark.parametrize('storage', ['compressed', 'cache'])
def test_tiny_config_trains_and_tests_on_each_storage(storage, data_root, tmp_path):
    base = ROOT / 'configs/tempme_tiny.py'
    if storage == 'compressed':
        folder = tmp_path / 'compressed'
        assert _compress(data_root / 'videos', folder).returncode == 0
        body = f"video_prefix = dict(video='{folder}')\n" + ''.join(
            f'{s}_dataloader = dict(dataset=dict(data_prefix=video_prefix))\n'
            for s in ('train', 'val', 'test'))
    else:
        # the cache is a data_prefix folder: moving data_root on the command line moves it too
        body = ("load_cached = dict(type='LoadCachedFrames', clip_len=12, frame_rate=1)\n"
                "cache_prefix = dict(frame_cache='frame_cache')\n"
                'train_dataloader = dict(dataset=dict(pipeline=[load_cached] + '
                '_base_.train_pipeline[3:], data_prefix=cache_prefix))\n' + ''.join(
                    f'{s}_dataloader = dict(dataset=dict(pipeline=[load_cached] + '
                    '_base_.test_pipeline[3:], data_prefix=cache_prefix))\n'
                    for s in ('val', 'test')))
        data_root = Path(shutil.copytree(data_root, tmp_path / 'moved'))
    config = tmp_path / f'tiny_{storage}.py'
    config.write_text(f"_base_ = ['{base}']\n" + body)
    data = [f'{s}_dataloader.dataset.data_root={data_root}' for s in ('train', 'val', 'test')]
    if storage == 'cache':
        done = subprocess.run([sys.executable, 'tools/data/cache_frames.py', str(config),
                               '--no-progress', '--cfg-options', *data], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert '16 videos; 16 cached' in done.stdout
        assert (data_root / 'frame_cache' / MANIFEST).is_file()
    work = tmp_path / 'work'
    done = subprocess.run([sys.executable, 'tools/train.py', str(config), '--work-dir',
                           str(work), '--cfg-options', *data, 'train_cfg.max_epochs=1'],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, 'tools/test.py', str(config), str(work / 'epoch_1.pth'),
                           '--work-dir', str(work), '--out', str(work / 'metrics.json'),
                           '--cfg-options', *data], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'R_sum' in json.loads((work / 'metrics.json').read_text())


def test_data_benchmark_reports_every_storage(tmp_path):
    out = tmp_path / 'bench.json'
    done = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark_data.py', '--num-videos', '3', '--config',
         'configs/tempme_tiny.py', '--work-dir', str(tmp_path / 'work'), '--workers', '1',
         '--prepare-workers', '1', '--encoder-batch', '2', '--encoder-rounds', '1', '--out',
         str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report['storages']) == {'raw', 'compressed', 'cache'}
    for storage in report['storages'].values():
        for key in ('videos_per_s_core_train', 'videos_per_s_core_test', 'pixel_mean_diff',
                    'videos_per_cpu_s_train', 'videos_per_cpu_s_test',
                    'bytes_per_video', 'videos_per_s_loader'):
            assert isinstance(storage[key], float) and storage[key] >= 0, key
    cache, compressed = report['storages']['cache'], report['storages']['compressed']
    assert cache['bit_identical'] and cache['pixel_mean_diff'] == 0.0
    assert cache['feature_cosine_min'] == pytest.approx(1.0)
    # differences come from re-encoding and, for clips under 12 s, from moments up to half a
    # second apart (the generated texture drifts a pixel per frame)
    assert 0 < compressed['pixel_mean_diff'] < 60 and compressed['feature_cosine_min'] > 0.9
    assert set(report['encoder_videos_per_s']) == {'plain', 'tempme'}
    augment = report['augment']
    assert augment['ms_per_clip'] > 0
    assert len(augment['ms_per_clip_by_op']) == 15 and 'Rotate' in augment['ms_per_clip_by_op']
    assert (tmp_path / 'bench.png').stat().st_size > 5000
    assert '| cache |' in (tmp_path / 'bench.md').read_text()
    assert 'each operation when drawn: ' in (tmp_path / 'bench.md').read_text()
    assert torch.isfinite(torch.tensor(report['encoder_videos_per_s']['tempme']))


def test_bare_video_keys_are_cached_and_read_as_decord_opens_them(tmp_path):
    from mmengine.config import Config

    from tools.data.cache_frames import cache_jobs
    stem = NAMES[0][:-len('.mp4')]
    (tmp_path / 'ann.json').write_text(json.dumps({stem: ['a caption']}))
    step = dict(type='LoadCachedFrames', cache_root=str(tmp_path / 'cache'), clip_len=12)
    cfg = Config(dict(test_dataloader=dict(dataset=dict(
        data_root=str(tmp_path), ann_file='ann.json', data_prefix=dict(video=str(VIDEOS)),
        pipeline=[step]))))
    (root, (rule, videos)), = cache_jobs(cfg, ['test']).items()
    assert videos == [(stem, str(VIDEOS / NAMES[0]))]  # DecordInit appends .mp4 too
    assert update_cache(root, videos, rule, progress=False)['cached'] == 1
    results = LoadCachedFrames(root)(dict(filename=str(VIDEOS / stem), video=stem))
    assert len(results['imgs']) == 12


@pytest.mark.parametrize('key', ['../outside', '/tmp/abs_key', 'a/../../outside'])
def test_cache_writer_never_writes_outside_the_cache(tmp_path, key):
    from mmengine.config import Config

    from tools.data.cache_frames import cache_jobs
    victim = tmp_path / 'outside.npy'
    victim.write_text('a file of the user')
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'ann.json').write_text(json.dumps({key: ['a caption']}))
    step = dict(type='LoadCachedFrames', cache_root=str(tmp_path / 'data' / 'cache'),
                clip_len=12)
    for allow in (False, True):  # the dataset's opt-in does not extend to the cache
        cfg = Config(dict(test_dataloader=dict(dataset=dict(
            data_root=str(tmp_path / 'data'), ann_file='ann.json', pipeline=[step],
            data_prefix=dict(video=str(VIDEOS)), allow_paths_outside_root=allow))))
        with pytest.raises(SystemExit, match='outside'):
            cache_jobs(cfg, ['test'])
    with pytest.raises(FrameCacheError, match='outside the frame cache'):
        update_cache(str(tmp_path / 'data' / 'cache'), [(key, str(VIDEOS / NAMES[0]))],
                     cache_rule(12, 1), progress=False)
    assert victim.read_text() == 'a file of the user'


@pytest.mark.parametrize('field, value, message', [
    ('frames', [0, 1, 2, 3, 4], 'expected 12 frame indices'),
    ('frames', [], 'expected 12 frame indices'),
    ('frames', 'abc', 'expected 12 frame indices'),
    ('frames', list(range(1000, 1012)), r'in \[0, num_frames'),
    ('shape', [5, 64, 64, 3], r'expected \[12, H, W, 3\]'),
    ('num_frames', -1, 'not a non-negative integer'),
    ('fps', 'fast', 'not a frame rate'),
])
def test_a_tampered_cache_manifest_is_refused_naming_the_field(cache, field, value, message):
    manifest = json.loads((cache / 'cache.json').read_text())
    manifest['videos'][NAMES[0]][field] = value
    (cache / 'cache.json').write_text(json.dumps(manifest))
    load = LoadCachedFrames(str(cache), clip_len=12)
    with pytest.raises(FrameCacheError, match=rf'cache.json: {NAMES[0]}\.{field}: .*{message}'):
        load(dict(filename=str(VIDEOS / NAMES[1]), video=NAMES[1]))


def test_a_cache_entry_linking_outside_the_cache_is_refused(cache, tmp_path):
    outside = tmp_path / 'elsewhere.npy'
    shutil.copy(cache / f'{NAMES[0]}.npy', outside)
    (cache / f'{NAMES[0]}.npy').unlink()
    (cache / f'{NAMES[0]}.npy').symlink_to(outside)
    load = LoadCachedFrames(str(cache), clip_len=12)
    with pytest.raises(FrameCacheError, match='leads outside the frame cache'):
        load(dict(filename=str(VIDEOS / NAMES[0]), video=NAMES[0]))
    assert len(load(dict(filename=str(VIDEOS / NAMES[1]), video=NAMES[1]))['imgs']) == 12
