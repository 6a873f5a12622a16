"""Indexing shared by 2 gloo ranks (tools/dist_index.sh) gives the single-process index, and
a run whose rank was killed is completed by the next run, which encodes only what is missing."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from projects.tempme_deploy.search import VideoIndex
from tests.conftest import write_circle_video
from tests.test_search_moments import write_long_video
from tools import search as search_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/tempme_tiny.py'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _launch(videos, index):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1')
    return subprocess.Popen(
        ['tools/dist_index.sh', CONFIG, str(videos), str(index), '2', '--workers', '0',
         '--no-progress', '--save-every', '1', '--batch-size', '2'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _parents() -> dict:
    """pid -> parent pid of every process (from /proc)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            parents[int(pid)] = int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1]
                                    .split()[1])
        except OSError:
            continue
    return parents


def _rank_pid(launcher: int, rank: int):
    """The pid of the launcher's descendant that runs ``rank`` (read from /proc)."""
    parents = _parents()
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, launcher):
            ancestor = parents.get(ancestor)
        if ancestor != launcher:
            continue
        try:
            environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if f'RANK={rank}'.encode() in environ and b'LOCAL_RANK=' + str(rank).encode() in environ:
            return pid
    return None


def test_two_ranks_give_the_single_process_index_and_survive_a_killed_rank(tmp_path):
    videos = tmp_path / 'videos'
    write_long_video(videos / 'a.mp4', 40)  # 6 windows
    write_long_video(videos / 'b.mp4', 25)  # 4 windows
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0)]):
        write_circle_video(videos / f'c{i}.mp4', colour)
    (videos / 'broken.mp4').write_bytes(b'not a video')
    single = search_tool.build_index(str(videos), str(tmp_path / 'one'), CONFIG, progress=False)
    assert (single['indexed'], single['rows'], single['failed']) == (5, 13, 1)

    # rank 1 is killed once it has saved its first partial file
    index = tmp_path / 'two'
    run = _launch(videos, index)
    launcher = run.pid
    deadline = time.monotonic() + 240
    killed = False
    while time.monotonic() < deadline and run.poll() is None and not killed:
        parts = list(index.glob('partial-*/1-*.npz'))
        pid = _rank_pid(launcher, 1) if parts else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    run.communicate(timeout=240)
    assert killed and run.returncode != 0
    assert not VideoIndex.exists(str(index))  # rank 0 never merged a partial result
    saved = len(list(index.glob('partial-*/*.npz')))
    assert saved >= 1

    run = _launch(videos, index)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    encoded_now = int(out.split(' windows, ')[1].split(' encoded now')[0])
    assert encoded_now < 13  # the partial files of the killed run were used
    assert not list(index.glob('partial-*'))  # merged, then removed

    one, two = VideoIndex.load(str(tmp_path / 'one')), VideoIndex.load(str(index))
    assert two.files == one.files and two.failed.keys() == one.failed.keys()
    np.testing.assert_array_equal(two.rows, one.rows)
    np.testing.assert_allclose(two.embeddings, one.embeddings, atol=1e-6, rtol=0)
    assert two.windows == one.windows and two.model['fingerprint'] == one.model['fingerprint']
