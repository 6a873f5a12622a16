"""Index folders and video folders are data handed over: bad contents are refused in one
line naming the file and field, at load, never a hang or a silently wrong ranking.

No model is built here; the export and service cases are in tests/test_deployment.py
(they share its module-scoped export).
"""
import json
import os
import socket
import threading

import numpy as np
import pytest

from projects.tempme_deploy.search import FileStat, Moment, VideoIndex, scan_videos
from projects.tempme_deploy.tokenizer import is_empty_query
from tests.conftest import write_circle_video
from tools import search as search_tool

CONFIG = 'configs/tempme_tiny.py'


def _saved_index(tmp_path, rows=4, dim=8):
    rng = np.random.default_rng(0)
    files = [FileStat(f'/v/{i}.mp4', i, i) for i in range(rows)]
    index = VideoIndex(str(tmp_path / 'idx'), dict(fingerprint='f'), files,
                       rng.standard_normal((rows, dim)).astype(np.float32))
    index.save()
    manifest = json.loads((tmp_path / 'idx' / 'manifest.json').read_text())
    return tmp_path / 'idx', manifest, tmp_path / 'idx' / manifest['embeddings']


def _rewrite(path, array):
    with open(path, 'wb') as f:
        np.save(f, array, allow_pickle=False)


@pytest.mark.parametrize('scale,message', [
    (np.nan, r'row 2 \(/v/2.mp4\) is not finite'),
    (np.inf, r'row 2 \(/v/2.mp4\) is not finite'),
    (408.0, r'row 2 \(/v/2.mp4\) is of norm 408, not 1'),
    (0.0, r'row 2 \(/v/2.mp4\) is of norm 0, not 1'),
])
def test_rows_that_are_not_finite_unit_vectors_are_refused_at_load(tmp_path, scale, message):
    """A NaN row drops out of every ranking, a long one outranks everything: neither loads."""
    folder, _, embeddings_path = _saved_index(tmp_path)
    embeddings = np.load(embeddings_path)
    embeddings[2] *= scale
    _rewrite(embeddings_path, embeddings)
    with pytest.raises(ValueError, match=rf'{embeddings_path}: {message} \(bad rows: 1 of 4\); '
                       'rebuild the index'):
        VideoIndex.load(str(folder))


def test_embeddings_that_disagree_with_the_manifest_are_refused(tmp_path):
    folder, manifest, embeddings_path = _saved_index(tmp_path)
    good = np.load(embeddings_path)
    _rewrite(embeddings_path, good.astype(np.float64))
    with pytest.raises(ValueError, match=r'npy: holds float64 of shape \(4, 8\), not float32'):
        VideoIndex.load(str(folder))
    _rewrite(embeddings_path, good)
    for key, value, message in [('dim', 16, r'rows of 8 numbers, the manifest says dim=16'),
                                ('num_videos', 5, r'4 rows for 4 files \(num_videos 5\)'),
                                ('files', manifest['files'][:3], '4 rows for 3 files'),
                                ('files', [dict(manifest['files'][0], size='1')] * 4,
                                 'manifest.json: files.0 is not'),
                                ('model', 'abc', 'manifest.json: model has the wrong type'),
                                ('embeddings', '../elsewhere.npy',
                                 'must name a file in the index folder')]:
        (folder / 'manifest.json').write_text(json.dumps(dict(manifest, **{key: value})))
        with pytest.raises(ValueError, match=message):
            VideoIndex.load(str(folder))
    (folder / 'manifest.json').write_text(json.dumps(manifest))
    assert len(VideoIndex.load(str(folder))) == 4


@pytest.mark.parametrize('which', ['manifest', 'embeddings'])
def test_index_files_linking_outside_the_folder_are_refused(tmp_path, which):
    folder, _, embeddings_path = _saved_index(tmp_path)
    target = folder / 'manifest.json' if which == 'manifest' else embeddings_path
    elsewhere = tmp_path / f'elsewhere_{target.name}'
    target.rename(elsewhere)
    target.symlink_to(elsewhere)
    with pytest.raises(ValueError, match=rf'{target}: a link to .*elsewhere.*outside the index'):
        VideoIndex.load(str(folder))


def test_an_empty_index_still_loads(tmp_path):
    VideoIndex(str(tmp_path / 'idx'), dict(fingerprint='f')).save()
    assert len(VideoIndex.load(str(tmp_path / 'idx'))) == 0


def test_an_embedding_load_would_refuse_is_never_added(tmp_path):
    index = VideoIndex(str(tmp_path), dict(fingerprint='f'))
    rows = np.ones((2, 4), np.float32)
    rows[1, 0] = np.nan
    with pytest.raises(ValueError, match=r'/v/b.mp4: its embedding is not finite or zero'):
        index.add([FileStat('/v/a.mp4', 1, 1), FileStat('/v/b.mp4', 1, 1)], rows)
    assert len(index) == 0


def test_the_cli_names_a_nan_index_in_one_line(tmp_path):
    folder, _, embeddings_path = _saved_index(tmp_path)
    embeddings = np.load(embeddings_path)
    embeddings[0, 0] = np.nan
    _rewrite(embeddings_path, embeddings)
    # tools/search.py prints `error: ` and this message, refused before any model is built
    with pytest.raises(ValueError) as refused:
        search_tool.main(['query', str(folder), 'a dog'])
    assert str(refused.value) == (f'{embeddings_path}: row 0 (/v/0.mp4) is not finite '
                                  '(bad rows: 1 of 4); rebuild the index (--rebuild)')


# -- video folders --------------------------------------------------------------------------------
def _hostile_video_folder(root):
    """Regular videos plus things named like videos that are not regular files."""
    (root / 'sub').mkdir(parents=True)
    (root / 'a.mp4').write_bytes(b'x' * 3)
    (root / 'folder.mp4').mkdir()  # a directory named like a video: searched, not a video
    (root / 'folder.mp4' / 'b.mp4').write_bytes(b'x' * 5)
    os.mkfifo(root / 'fifo.mp4')
    os.symlink('/dev/null', root / 'device.mkv')
    os.symlink(root / 'nowhere', root / 'sub' / 'broken.avi')
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / 'sock.webm'))
    return listener


def test_scan_lists_only_regular_files_and_says_what_it_skipped(tmp_path):
    listener = _hostile_video_folder(tmp_path)
    try:
        skipped = {}
        found = scan_videos(str(tmp_path), skipped=skipped)
    finally:
        listener.close()
    assert [os.path.relpath(f.path, tmp_path) for f in found] == ['a.mp4', 'folder.mp4/b.mp4']
    assert {os.path.relpath(p, tmp_path): r for p, r in skipped.items()} == {
        'fifo.mp4': 'not a regular file (FIFO)',
        'device.mkv': 'not a regular file (character device)',
        'sock.webm': 'not a regular file (socket)',
        'sub/broken.avi': 'cannot be read (No such file or directory)'}
    assert [f.path for f in scan_videos(str(tmp_path))] == [f.path for f in found]


def test_indexing_a_folder_with_a_fifo_named_like_a_video_finishes_and_says_so(
        tmp_path, capsys):
    """Opening the FIFO would block the decoder forever, holding the index lock."""
    videos = tmp_path / 'videos'
    write_circle_video(videos / 'red.mp4', (0, 0, 255))
    os.mkfifo(videos / 'stream.mp4')
    done = []
    worker = threading.Thread(target=lambda: done.append(search_tool.main(
        ['index', str(videos), '--config', CONFIG, '--index', str(tmp_path / 'index'),
         '--workers', '0', '--no-progress'])), daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert done, 'indexing did not finish: it opened the FIFO'
    assert (done[0]['indexed'], done[0]['skipped']) == (1, 1)
    printed = capsys.readouterr()
    assert f'skipped {videos / "stream.mp4"}: not a regular file (FIFO)' in printed.err
    assert '1 videos; 1 encoded' in printed.out and '1 skipped' in printed.out
    assert [f.path for f in VideoIndex.load(str(tmp_path / 'index')).files] == \
        [str(videos / 'red.mp4')]


# -- queries ------------------------------------------------------------------------------------
def test_a_query_of_only_invisible_characters_is_empty(tmp_path):
    for text in ('', '   ', '\x00\x00', '\u200b\u200c\ufeff', '\u00a0\u3000\t', '\u200d\x07'):
        assert is_empty_query(text), repr(text)
        # refused before any index or model is read
        with pytest.raises(ValueError, match='the query is empty'):
            search_tool.query_index(str(tmp_path / 'nowhere'), text)
    for text in ('a', 'a\u200bdog', '猫', '😀', '42'):
        assert not is_empty_query(text), repr(text)


def test_a_contact_sheet_never_opens_a_fifo_the_index_names(tmp_path):
    """The paths of a hit come from the index folder: a FIFO there gets a grey row."""
    os.mkfifo(tmp_path / 'hit.mp4')
    worker = threading.Thread(target=search_tool.draw_contact_sheet, daemon=True, args=(
        [Moment(str(tmp_path / 'hit.mp4'), 0.0, 12.0, 0.5)], 'a dog', str(tmp_path / 'sheet.png')))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), 'the contact sheet opened the FIFO'
    assert (tmp_path / 'sheet.png').stat().st_size > 0


def test_a_video_the_model_gives_a_nan_embedding_is_reported_not_stored(tmp_path, monkeypatch):
    """Stored, such a row would make the whole index refuse to load."""
    videos = tmp_path / 'videos'
    write_circle_video(videos / 'blue.mp4', (255, 0, 0))
    write_circle_video(videos / 'red.mp4', (0, 0, 255))
    real_encode = search_tool.encode_videos

    def nan_for_the_first(loaded, frames):
        feats = real_encode(loaded, frames)
        feats[0] = float('nan')
        return feats

    monkeypatch.setattr(search_tool, 'encode_videos', nan_for_the_first)
    stats = search_tool.build_index(str(videos), str(tmp_path / 'index'), CONFIG,
                                    progress=False)
    assert (stats['encoded'], stats['failed'], stats['indexed']) == (1, 1, 1)
    index = VideoIndex.load(str(tmp_path / 'index'))
    assert index.failed == {str(videos / 'blue.mp4'): 'the model gave a non-finite or zero '
                            'embedding'}
