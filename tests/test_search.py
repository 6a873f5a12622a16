"""Video search: manifest diffing, exact ranking, the on-disk index and tools/search.py."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from projects.tempme.apis.inference import describe, encode_texts, init_retriever
from projects.tempme.file_configs import UnsafeFileConfigError
from projects.tempme_deploy.search import (FileStat, IndexBusyError, IndexModelMismatch, VideoIndex,
                                           plan_update, scan_videos)
from projects.tempme_deploy.search import store as store_module
from projects.tempme_deploy.search import top_k
from tests.conftest import write_circle_video
from tools import search as search_tool

CONFIG = 'configs/tempme_tiny.py'


# -- pure logic -------------------------------------------------------------------------------
def test_plan_update_keeps_unchanged_and_reencodes_new_and_changed():
    old = [FileStat('/v/a.mp4', 10, 1), FileStat('/v/b.mp4', 10, 1), FileStat('/v/c.mp4', 10, 1)]
    now = [FileStat('/v/a.mp4', 10, 1), FileStat('/v/c.mp4', 11, 2), FileStat('/v/d.mp4', 5, 1)]
    plan = plan_update(old, now)
    assert plan.keep == [0]
    assert [f.path for f in plan.encode] == ['/v/c.mp4', '/v/d.mp4']
    assert plan.removed == ['/v/b.mp4'] and plan.changed == ['/v/c.mp4']
    touched = plan_update(old[:1], [FileStat('/v/a.mp4', 10, 2)])  # same size, new mtime
    assert touched.keep == [] and touched.changed == ['/v/a.mp4']


def test_scan_finds_video_extensions_recursively(tmp_path):
    for name in ('a.mp4', 'sub/b.MKV', 'sub/deeper/c.webm', 'd.avi', 'e.mov', 'notes.txt',
                 'f.mp4.part'):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x' * 3)
    found = scan_videos(str(tmp_path))
    assert [os.path.relpath(f.path, tmp_path) for f in found] == [
        'a.mp4', 'd.avi', 'e.mov', 'sub/b.MKV', 'sub/deeper/c.webm']
    assert all(f.size == 3 for f in found)


def _brute_force(embeddings, query, k):
    q = query / np.linalg.norm(query)
    scores = [(-float(np.dot(e, q)), i) for i, e in enumerate(embeddings)]
    return [i for _, i in sorted(scores)[:k]]


def test_top_k_equals_a_brute_force_ranking_with_ties():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((200, 16)).astype(np.float32)
    emb[50] = emb[7]  # a tie: the earlier row ranks first
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    query = emb[7] * 3 + 0.01 * rng.standard_normal(16).astype(np.float32)
    rows, scores = top_k(emb, query, 10)
    assert rows.tolist() == _brute_force(emb, query, 10)
    assert rows[:2].tolist() == [7, 50]
    np.testing.assert_allclose(scores, emb[rows] @ (query / np.linalg.norm(query)), rtol=1e-5)
    assert top_k(emb, query, 500)[0].tolist() == _brute_force(emb, query, 500)
    assert top_k(emb[:0], query, 3)[0].tolist() == []


def _index(tmp_path, rows=3, fingerprint='abc'):
    files = [FileStat(f'/v/{i}.mp4', i, i) for i in range(rows)]
    emb = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + 1
    return VideoIndex(str(tmp_path / 'idx'), dict(fingerprint=fingerprint), files, emb)


def test_index_round_trip_and_atomic_saves(tmp_path, monkeypatch):
    index = _index(tmp_path)
    index.save()
    loaded = VideoIndex.load(index.directory)
    assert loaded.files == index.files
    np.testing.assert_allclose(np.linalg.norm(loaded.embeddings, axis=1), 1, rtol=1e-6)
    index.keep_files([2, 0])
    index.save()
    assert sorted(os.listdir(index.directory))[0].startswith('embeddings-')
    assert len(os.listdir(index.directory)) == 3  # the old array files are gone

    # a save that dies while writing leaves the last saved index as it was
    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    index.keep_files([0])
    monkeypatch.setattr(store_module.np, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        index.save()
    survivor = VideoIndex.load(index.directory)
    assert [f.path for f in survivor.files] == ['/v/2.mp4', '/v/0.mp4']
    assert len(os.listdir(index.directory)) == 3  # no temporary file left behind


def test_index_refuses_another_model(tmp_path):
    index = _index(tmp_path, fingerprint='abc')
    index.check_model(dict(fingerprint='abc'))
    with pytest.raises(IndexModelMismatch, match='--rebuild'):
        index.check_model(dict(fingerprint='xyz', config='other.py'))


# -- with the tiny model and generated videos -------------------------------------------------
@pytest.fixture
def videos(tmp_path):
    root = tmp_path / 'videos'
    write_circle_video(root / 'red.mp4', (0, 0, 255))
    write_circle_video(root / 'nested' / 'green.mkv', (0, 255, 0))
    write_circle_video(root / 'nested' / 'blue.avi', (255, 0, 0))
    (root / 'broken.mp4').write_bytes(b'not a video')
    return root


def test_nothing_to_encode_draws_no_progress_bar(capsys):
    assert list(search_tool.encode_jobs([], None, None, batch_size=2, workers=0,
                                        progress=True)) == []
    assert capsys.readouterr().err == ''


def test_index_is_incremental_and_reports_unreadable_videos(tmp_path, videos, capsys):
    index_dir = str(tmp_path / 'index')
    stats = search_tool.build_index(str(videos), index_dir, CONFIG, batch_size=2,
                                    save_every=1, progress=False)
    assert (stats['encoded'], stats['failed'], stats['indexed']) == (3, 1, 3)
    assert str(videos / 'broken.mp4') in capsys.readouterr().err
    first = VideoIndex.load(index_dir)
    assert first.failed.keys() == {str(videos / 'broken.mp4')}

    again = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    assert (again['encoded'], again['unchanged'], again['failed']) == (0, 3, 1)
    np.testing.assert_array_equal(VideoIndex.load(index_dir).embeddings, first.embeddings)

    write_circle_video(videos / 'red.mp4', (0, 255, 255), frames=20)
    os.utime(videos / 'red.mp4', ns=(1, 10**18))
    os.remove(videos / 'nested' / 'blue.avi')
    updated = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    assert (updated['encoded'], updated['changed'], updated['removed'],
            updated['unchanged'], updated['indexed']) == (1, 1, 1, 1, 2)
    index = VideoIndex.load(index_dir)
    assert sorted(os.path.basename(f.path) for f in index.files) == ['green.mkv', 'red.mp4']
    red = [f for f in index.files if f.path.endswith('red.mp4')][0]
    assert red.mtime_ns == 10**18


def test_query_ranks_by_cosine_and_prints_json_and_sheet(tmp_path, videos, capsys):
    index_dir = str(tmp_path / 'index')
    search_tool.main(['index', str(videos), '--config', CONFIG, '--index', index_dir,
                      '--workers', '0', '--no-progress'])
    capsys.readouterr()
    hits = search_tool.main(['query', index_dir, 'a red circle', '--top-k', '2', '--json',
                             '--sheet', str(tmp_path / 'sheet.png')])
    printed = json.loads(capsys.readouterr().out)
    assert [r['path'] for r in printed['results']] == [h.path for h in hits]
    assert all(r['start'] == 0 and r['end'] == pytest.approx(1.6) for r in printed['results'])
    assert [r['rank'] for r in printed['results']] == [1, 2]

    index = VideoIndex.load(index_dir)
    query = encode_texts(init_retriever(CONFIG), ['a red circle'])[0].numpy()
    expected = _brute_force(index.embeddings, query, 2)
    assert [h.path for h in hits] == [index.files[i].path for i in expected]
    np.testing.assert_allclose([h.score for h in hits], index.embeddings[expected] @ query,
                               rtol=1e-5)
    sheet = cv2.imread(str(tmp_path / 'sheet.png'))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 100


def test_index_of_another_model_needs_rebuild(tmp_path, videos):
    index_dir = str(tmp_path / 'index')
    search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    other = {'model.video_encoder.imgme_r': 1}
    with pytest.raises(IndexModelMismatch, match='--rebuild'):
        search_tool.build_index(str(videos), index_dir, CONFIG, cfg_options=other,
                                progress=False)
    rebuilt = search_tool.build_index(str(videos), index_dir, CONFIG, cfg_options=other,
                                      rebuild=True, progress=False)
    assert rebuilt['encoded'] == 3 and rebuilt['unchanged'] == 0
    # the query rebuilds the model the index records, options included
    assert len(search_tool.query_index(index_dir, 'a circle', top_k=5)) == 3


def test_adapter_only_checkpoint_loads_over_the_base_weights(tmp_path):
    base = init_retriever(CONFIG)
    trained = {n: p.detach() + 0.5 for n, p in base.model.named_parameters() if p.requires_grad}
    assert any('lora' in n for n in trained) and len(trained) < len(base.model.state_dict())
    path = tmp_path / 'adapter.pth'
    torch.save(dict(state_dict=trained, meta=dict(adapter_only=True)), path)
    loaded = init_retriever(CONFIG, str(path))
    state = loaded.model.state_dict()
    for name, value in base.model.state_dict().items():
        torch.testing.assert_close(state[name], trained.get(name, value), rtol=0, atol=0)
    assert 'adapter-only checkpoint' in loaded.weights
    assert describe(loaded)['fingerprint'] != describe(base)['fingerprint']

    whole = tmp_path / 'partial.pth'
    torch.save(dict(state_dict=trained), whole)  # not marked adapter-only: must be complete
    with pytest.raises(KeyError, match='missing keys'):
        init_retriever(CONFIG, str(whole))


def test_a_killed_indexing_run_resumes_from_its_last_save(tmp_path, videos, monkeypatch):
    index_dir = str(tmp_path / 'index')
    real_encode, calls = search_tool.encode_videos, []

    def dies_on_second_batch(loaded, frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_encode(loaded, frames)

    monkeypatch.setattr(search_tool, 'encode_videos', dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        search_tool.build_index(str(videos), index_dir, CONFIG, batch_size=1, save_every=1,
                                progress=False)
    assert len(VideoIndex.load(index_dir)) == 1
    monkeypatch.setattr(search_tool, 'encode_videos', real_encode)
    resumed = search_tool.build_index(str(videos), index_dir, CONFIG, progress=False)
    assert (resumed['unchanged'], resumed['encoded'], resumed['indexed']) == (1, 2, 3)


def test_cli_names_a_missing_index_without_a_traceback(tmp_path):
    missing = tmp_path / 'nowhere'
    done = subprocess.run([sys.executable, 'tools/search.py', 'query', str(missing), 'a dog'],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert f'error: no video index in {str(missing)!r}' in done.stderr
    assert 'Traceback' not in done.stderr


# -- an index folder is data: it never runs code, and bad contents are named ------------------
@pytest.fixture
def built(tmp_path, videos):
    index_dir = tmp_path / 'index'
    search_tool.build_index(str(videos), str(index_dir), CONFIG, progress=False)
    return index_dir


def test_query_never_runs_the_config_named_in_the_index(tmp_path, built):
    marker = tmp_path / 'config_ran'
    evil = tmp_path / 'evil_config.py'
    evil.write_text(f'import os\nos.mkdir({str(marker)!r})\n')
    manifest = json.loads((built / 'manifest.json').read_text())
    manifest['model']['config'] = str(evil)
    (built / 'manifest.json').write_text(json.dumps(manifest))
    hits = search_tool.query_index(str(built), 'a red circle', top_k=3)
    assert len(hits) == 3 and not marker.exists()
    # an index that records no resolved config asks for --config instead of guessing
    del manifest['model']['resolved_config']
    (built / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match='records no resolved config'):
        search_tool.query_index(str(built), 'a red circle')
    assert len(search_tool.query_index(str(built), 'a red circle', config=CONFIG)) == 3
    assert not marker.exists()


@pytest.mark.parametrize('field', ['resolved_config', 'cfg_options'])
def test_query_never_builds_a_type_named_in_the_index(tmp_path, built, field):
    """A crafted manifest naming ``os.makedirs`` as the model: refused in one line, not run."""
    marker = tmp_path / 'made'
    manifest = json.loads((built / 'manifest.json').read_text())
    if field == 'resolved_config':
        manifest['model']['resolved_config']['model'] = dict(type='os.makedirs', name=str(marker))
        config = []
    else:
        manifest['model']['cfg_options'] = {'model': dict(type='os.makedirs', name=str(marker))}
        config = ['--config', CONFIG]
    (built / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(UnsafeFileConfigError,
                       match=rf'manifest.json: model.{field}.model.type=.os.makedirs'):
        search_tool.query_index(str(built), 'a red circle', config=CONFIG if config else None)
    run = subprocess.run([sys.executable, 'tools/search.py', 'query', str(built), 'a red circle',
                          *config], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and 'Traceback' not in run.stderr
    assert run.stderr.strip().startswith('error: ') and '\n' not in run.stderr.strip()
    assert f'model.{field}.model.type' in run.stderr
    assert not marker.exists()


def test_a_second_indexing_process_is_refused(tmp_path, videos, built):
    with VideoIndex.lock(str(built)):
        with pytest.raises(IndexBusyError, match=f'pid {os.getpid()}'):
            search_tool.build_index(str(videos), str(built), CONFIG, progress=False)
    # released: the next run goes through
    assert search_tool.build_index(str(videos), str(built), CONFIG, progress=False)['indexed'] == 3


def test_corrupt_index_files_are_named(built):
    manifest = built / 'manifest.json'
    good = manifest.read_text()
    embeddings = built / json.loads(good)['embeddings']
    embeddings.write_bytes(embeddings.read_bytes()[:100])
    with pytest.raises(ValueError, match=f'{embeddings}: cannot read the index'):
        VideoIndex.load(str(built))
    manifest.write_text(good[:50])
    with pytest.raises(ValueError, match=f'{manifest}: not a readable index manifest'):
        VideoIndex.load(str(built))


def test_a_failed_save_names_the_index_and_keeps_the_last_one(built, monkeypatch):
    index = VideoIndex.load(str(built))
    before = (built / 'manifest.json').read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(store_module.np, 'save', disk_full)
    with pytest.raises(OSError, match=f'cannot write {built}/embeddings-.*npy: No space left'):
        index.save()
    assert (built / 'manifest.json').read_text() == before
    assert len(VideoIndex.load(str(built))) == 3


@pytest.mark.parametrize('args,message', [
    (['   '], 'the query is empty'),
    (['a dog', '--top-k', '0'], 'must be >= 1'),
    (['a dog', '--top-k', '-1'], 'must be >= 1'),
])
def test_cli_refuses_an_empty_query_and_a_bad_k(built, args, message):
    done = subprocess.run([sys.executable, 'tools/search.py', 'query', str(built), *args],
                          capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr and 'Traceback' not in done.stderr


def test_a_pipeline_that_cannot_feed_the_model_is_a_config_error(tmp_path, videos):
    from projects.tempme.config_checks import ConfigMismatchError
    with pytest.raises(ConfigMismatchError, match='pipeline.3.size=64'):
        search_tool.build_index(str(videos), str(tmp_path / 'index'), CONFIG, progress=False,
                                cfg_options={'test_dataloader.dataset.pipeline.3.size': 64})
    assert not VideoIndex.exists(str(tmp_path / 'index'))


def test_search_many_ranks_each_query_as_search_does(tmp_path):
    rng = np.random.default_rng(1)
    files = [FileStat(f'/v/{i}.mp4', 1, 1) for i in range(300)]
    index = VideoIndex(str(tmp_path), dict(fingerprint='f'), files,
                       rng.standard_normal((300, 16)).astype(np.float32))
    queries = rng.standard_normal((5, 16)).astype(np.float32) * 4
    ks = [1, 10, 300, 400, 7]
    for query, k, hits in zip(queries, ks, index.search_many(queries, ks)):
        alone = index.search(query, k)
        assert [h.path for h in hits] == [h.path for h in alone]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in alone], atol=1e-6)
    assert VideoIndex(str(tmp_path), dict(fingerprint='f')).search_many(queries, ks) == \
        [[]] * 5
