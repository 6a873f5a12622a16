"""`make try` runs as the README writes it: every tool once on the demo's own model.

The test runs ``tools/try_everything.sh`` on a smaller benchmark than ``--quick`` (the same
commands, other sizes), and checks that the README's "Try every tool" block names the same
tools with the same options as the script.
"""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tools' / 'try_everything.sh'
SMALL = ('--num-train 16 --num-val 4 --num-test 8 --epochs 1 --cfg-options '
         'train_dataloader.batch_size=2 val_dataloader.batch_size=4 test_dataloader.batch_size=4')


def _commands(text: str, prefix: str):
    """(tool, sorted options) of every ``prefix tools/...`` command, continuations joined."""
    joined = re.sub(r'\\\n\s*', ' ', text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith(prefix + ' tools/'):
            continue
        words = shlex.split(line.split(' #')[0].replace('&', ''), posix=False)
        found.append((words[1], sorted(w for w in words[2:] if w.startswith('--'))))
    return found


def test_the_readme_block_is_the_script():
    readme = (ROOT / 'README.md').read_text()
    block = readme.split('### Try every tool', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
    script = SCRIPT.read_text()
    in_readme = _commands(block, 'python')
    in_script = _commands(script.replace('"${DEMO[@]}"', '--quick'), '$PY')
    assert in_readme == in_script
    assert len(in_script) == 10 and {t for t, _ in in_script} == {
        'tools/demo.py', 'tools/test.py', 'tools/analysis/visualize_merging.py',
        'tools/search.py', 'tools/deployment/export_onnx.py', 'tools/deployment/test_onnx.py',
        'tools/deployment/serve_search.py'}
    assert "curl 'http://127.0.0.1:8765/search?" in block and 'curl -sf' in script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_try_everything_runs_every_tool(tmp_path):
    work = tmp_path / 'try'
    env = dict(os.environ, DEMO_ARGS=SMALL, PORT=str(_free_port()), PYTHONPATH=str(ROOT),
               PYTHON=sys.executable)
    # run from another directory, as a user may
    done = subprocess.run(['bash', str(SCRIPT), str(work)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert re.search(r'=== \[\d+ s\] 9/9 done', done.stdout)
    assert 'Config:' not in output and 'Traceback' not in output
    metrics = json.loads((work / 'test' / 'metrics.json').read_text())
    assert any(key.endswith('t2v_R1') for key in metrics)
    assert (work / 'test' / 'sim.pt').stat().st_size > 0
    assert (work / 'merge.png').stat().st_size > 1000
    assert (work / 'hits.png').stat().st_size > 1000
    assert (work / 'index' / 'manifest.json').is_file()
    for export in ('onnx', 'onnx_int8'):
        assert (work / export / 'deploy.json').is_file()
    exports = json.loads((work / 'onnx_metrics.json').read_text())['exports']
    assert {folder: entry['precision'] for folder, entry in exports.items()} == {
        str(work / 'onnx'): 'float32', str(work / 'onnx_int8'): 'int8'}
    # the service answered with ranked paths of the indexed test videos
    answer = next(line for line in done.stdout.splitlines() if line.startswith('[{'))
    hits = json.loads(answer)
    assert len(hits) == 3 and all('test_' in json.dumps(hit) for hit in hits)
