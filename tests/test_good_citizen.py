"""Importing the plugin changes nothing for code that is not ours.

A probe process loads checkpoints through mmengine and torch the way another mmaction2
project would, once without and once after ``import projects.tempme``; everything it sees
(results, exception types and messages, mmengine's log lines, torch's allow-list, which
warning filters were set and by whom) must be identical. The package layout is checked too:
``projects`` stays a namespace package next to mmaction2's own ``projects/``, and the wheel
installs neither ``tools`` nor ``projects/__init__.py``.
"""
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

PROBE = r'''
import json, os, sys, traceback, warnings

mode, folder, url = sys.argv[1:4]
filter_callers = []


def _spy(function):
    def spied(*args, **kwargs):
        filter_callers.append(os.path.abspath(sys._getframe(1).f_code.co_filename))
        return function(*args, **kwargs)
    return spied


warnings.filterwarnings = _spy(warnings.filterwarnings)
warnings.simplefilter = _spy(warnings.simplefilter)

import torch
import torch._dynamo  # noqa: F401  (torch allow-lists its own types when these load)
import torch.distributed.tensor  # noqa: F401
from mmengine.logging import MMLogger
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

if mode == 'with':
    import projects.tempme  # noqa: F401
    import mmaction.models  # noqa: F401  (what building a recognizer imports)

MMLogger.get_instance('probe', log_level='INFO')
results = {}


def attempt(name, call):
    try:
        value = call()
        results[name] = ['ok', sorted(value) if isinstance(value, dict) else repr(value)]
    except BaseException as exc:  # the outcome is what is compared
        results[name] = [type(exc).__module__ + '.' + type(exc).__qualname__,
                         [c.__name__ for c in type(exc).__mro__], str(exc)]


join = lambda name: os.path.join(folder, name)  # noqa: E731
if os.path.isdir(join('payload_ran')):
    os.rmdir(join('payload_ran'))
attempt('missing file', lambda: CheckpointLoader.load_checkpoint(join('missing.pth')))
attempt('refused pickle', lambda: CheckpointLoader.load_checkpoint(join('evil.pth')))
attempt('payload ran', lambda: os.path.exists(join('payload_ran')))
attempt('numpy by plain torch.load', lambda: torch.load(join('numpy.pth')))
attempt('numpy through mmengine', lambda: CheckpointLoader.load_checkpoint(join('numpy.pth')))
attempt('url with check_hash', lambda: mm_checkpoint.load_url(
    url + '/weights-0123abcd.pth', model_dir=join('hub_' + mode), check_hash=True,
    progress=False))
attempt('good url', lambda: CheckpointLoader.load_checkpoint(
    url + '/weights-0123abcd.pth', map_location='cpu'))
results['local loader'] = CheckpointLoader._schemes[''].__module__
results['load_url'] = mm_checkpoint.load_url.__module__
results['safe globals'] = sorted(
    repr(entry) if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'
    for entry in torch.serialization.get_safe_globals())
results['filters set by'] = sorted({path for path in filter_callers
                                    if path.startswith(sys.argv[4])})
print('RESULT ' + json.dumps(results))
'''


class _Payload:

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker, ))


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """Checkpoints on disk and a local HTTP server for the URL cases."""
    folder = tmp_path_factory.mktemp('host')
    torch.save({'state_dict': {'w': _Payload(str(folder / 'payload_ran'))}},
               folder / 'evil.pth')
    torch.save({'meta': {'history': np.arange(3)}}, folder / 'numpy.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}}, folder / 'weights-0123abcd.pth')
    assert not hashlib.sha256((folder / 'weights-0123abcd.pth').read_bytes()).hexdigest(
    ).startswith('0123abcd')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def _probe(mode, folder, url, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    environ.update(env, TORCH_HOME=str(tmp_path / f'torch_{mode}'), OMP_NUM_THREADS='1')
    run = subprocess.run(
        [sys.executable, '-c', PROBE, mode, str(folder), url, str(ROOT / 'projects')],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split('RESULT ', 1)[1])
    logs = [line.split(' - ', 1)[-1] for line in run.stdout.splitlines()
            if 'Loads checkpoint' in line]
    return result, logs


@pytest.mark.parametrize('env', [{}, {'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'}],
                         ids=['default', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'])
def test_importing_the_plugin_changes_no_checkpoint_loading(served, tmp_path, env):
    folder, url = served
    without, logs_without = _probe('without', folder, url, tmp_path, **env)
    with_plugin, logs_with = _probe('with', folder, url, tmp_path, **env)
    for key in ('url with check_hash', 'good url'):  # the cache folder differs by design
        for result in (without, with_plugin):
            result[key] = result[key][:2]
    assert with_plugin == without
    assert logs_with == logs_without and len(logs_with) >= 3
    # What the two runs agree on is mmengine's and torch's own behaviour:
    assert without['missing file'][0] == 'builtins.FileNotFoundError'
    assert without['url with check_hash'][0] == 'builtins.RuntimeError'
    assert without['local loader'] == 'mmengine.runner.checkpoint'
    assert without['load_url'] == 'torch.hub'
    assert without['filters set by'] == []
    if env:  # torch's switch back to unrestricted loading works as before
        assert without['numpy through mmengine'][0] == 'ok'
        assert without['payload ran'] == ['ok', 'True']
    else:
        assert without['refused pickle'][0] == '_pickle.UnpicklingError'
        assert without['numpy by plain torch.load'][0] == '_pickle.UnpicklingError'
        assert without['payload ran'] == ['ok', 'False']


def test_projects_is_shared_with_an_mmaction2_checkout(tmp_path):
    """From an mmaction2 source tree (its ``projects/`` has no ``__init__.py``) both its
    projects and ours import."""
    example = tmp_path / 'projects' / 'example_project'
    example.mkdir(parents=True)
    (example / '__init__.py').write_text('NAME = "example"\n')
    code = ('import projects.tempme, projects.example_project as e; '
            'print(e.NAME, projects.tempme.__name__)')
    run = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ['example', 'projects.tempme']


def test_wheel_installs_no_generic_packages(tmp_path):
    build = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel, = tmp_path.glob('mmaction_tempme-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'projects/tempme/__init__.py' in names
    assert 'projects/tempme_data/conversion.py' in names
    assert 'projects/__init__.py' not in names
    top_level = {name.split('/')[0] for name in names if '.dist-info' not in name}
    assert top_level == {'projects'}
