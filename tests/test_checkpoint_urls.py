"""Checkpoint URLs are downloaded, then loaded weights-only: a crafted file never runs.

A local HTTP server stands in for the network; torch.hub's cache is a temporary folder.
"""
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from projects.tempme.apis.inference import load_retriever_checkpoint
from projects.tempme.checkpoint import (CheckpointLoadError, cached_checkpoint_path,
                                        safe_checkpoint_loading, safe_load_checkpoint,
                                        safe_load_url)

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling it creates a folder: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker, ))


@pytest.fixture
def served(tmp_path):
    """``(base URL, folder served, marker path)`` with a good and a crafted checkpoint."""
    folder = tmp_path / 'served'
    folder.mkdir()
    marker = tmp_path / 'payload_ran'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {}}, folder / 'good.pth')
    torch.save({'state_dict': {'w': _Payload(str(marker))}}, folder / 'evil.pth')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', folder, marker
    server.shutdown()


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    yield tmp_path / 'hub'
    torch.hub.set_dir(old)


def test_mmengine_url_loader_refuses_a_crafted_file(served, hub_dir):
    url, _, marker = served
    with safe_checkpoint_loading(), \
            pytest.raises(CheckpointLoadError, match=r'evil.pth.*posix.mkdir'):
        CheckpointLoader.load_checkpoint(f'{url}/evil.pth')
    assert not marker.exists()
    with safe_checkpoint_loading():
        good = CheckpointLoader.load_checkpoint(f'{url}/good.pth')
    assert torch.equal(good['state_dict']['w'], torch.ones(2))
    assert Path(cached_checkpoint_path(f'{url}/good.pth')).is_file()  # in torch.hub's folder


def test_crafted_file_already_in_the_cache_is_refused(served, hub_dir):
    _, folder, marker = served
    for url in ('http://127.0.0.1:9/model.pth', 'https://example.invalid/model.pth'):
        cached = Path(cached_checkpoint_path(url))
        assert cached.parent.parent == hub_dir / 'checkpoints'
        cached.parent.mkdir(parents=True)
        cached.write_bytes((folder / 'evil.pth').read_bytes())
    # nothing listens on port 9: the cached file is all there is
    with safe_checkpoint_loading(), pytest.raises(CheckpointLoadError, match='model.pth'):
        CheckpointLoader.load_checkpoint('http://127.0.0.1:9/model.pth')
    with pytest.raises(CheckpointLoadError, match='model.pth'):
        safe_load_checkpoint('https://example.invalid/model.pth')
    assert not marker.exists()


def test_the_cache_is_keyed_by_the_whole_url(served, hub_dir):
    url, folder, _ = served
    for sub, value in (('a', 1.0), ('b', 2.0)):
        (folder / sub).mkdir()
        torch.save({'state_dict': {'w': torch.full((2, ), value)}}, folder / sub / 'best.pth')
    first = safe_load_url(f'{url}/a/best.pth')['state_dict']['w']
    second = safe_load_url(f'{url}/b/best.pth')['state_dict']['w']
    assert first.tolist() == [1.0, 1.0] and second.tolist() == [2.0, 2.0]


def test_check_hash_refuses_a_file_whose_hash_differs(served, hub_dir):
    url, folder, _ = served
    data = (folder / 'good.pth').read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (folder / f'good-{digest[:10]}.pth').write_bytes(data)
    (folder / 'good-0123abcd.pth').write_bytes(data)
    loaded = safe_load_url(f'{url}/good-{digest[:10]}.pth', check_hash=True)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    with pytest.raises(CheckpointLoadError, match=r'good-0123abcd.pth.*does not match'):
        safe_load_url(f'{url}/good-0123abcd.pth', check_hash=True)
    with pytest.raises(CheckpointLoadError, match='carries no hash'):
        safe_load_url(f'{url}/good.pth', check_hash=True)
    # without check_hash the name is only a name
    assert 'state_dict' in safe_load_url(f'{url}/good-0123abcd.pth')


def test_unreachable_url_names_the_url(hub_dir):
    with pytest.raises(CheckpointLoadError,
                       match=r"cannot download checkpoint 'http://127.0.0.1:9/x.pth'"):
        safe_load_checkpoint('http://127.0.0.1:9/x.pth')


def test_inference_api_loads_urls_weights_only(served, hub_dir):
    url, _, marker = served
    with pytest.raises(CheckpointLoadError, match='evil.pth'):
        load_retriever_checkpoint(torch.nn.Linear(1, 1), f'{url}/evil.pth')
    assert not marker.exists()


def _tool(args, hub_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', TORCH_HOME=str(hub_dir))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize('entry', ['test', 'load_from', 'resume'])
def test_tools_refuse_a_crafted_checkpoint_url(entry, served, hub_dir, data_root, tmp_path):
    url, _, marker = served
    data = [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')]
    evil = f'{url}/evil.pth'
    if entry == 'test':
        args = ['tools/test.py', 'configs/tempme_tiny.py', evil, '--cfg-options', *data]
    elif entry == 'load_from':
        args = ['tools/train.py', 'configs/tempme_tiny.py', '--cfg-options', *data,
                f'load_from={evil}']
    else:
        args = ['tools/train.py', 'configs/tempme_tiny.py', '--resume', evil,
                '--cfg-options', *data]
    proc = _tool([*args[:2], '--work-dir', str(tmp_path / 'work'), *args[2:]], hub_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'refused to load checkpoint' in output and 'evil.pth' in output, output[-3000:]
    assert not marker.exists()


def test_a_crafted_last_checkpoint_stops_resume_in_one_line(data_root, tmp_path, hub_dir):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'last_checkpoint').write_text('http://127.0.0.1:9/epoch_9.pth')
    data = [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')]
    proc = _tool(['tools/train.py', 'configs/tempme_tiny.py', '--work-dir', str(work),
                  '--resume', '--cfg-options', *data], hub_dir)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: CheckpointLoadError: {work / 'last_checkpoint'}: names "
        "'http://127.0.0.1:9/epoch_9.pth'; resume reads checkpoints inside the work dir "
        'only, not URLs')
