"""The tools answer ``--help`` and refuse bad inputs at once: one line, exit status 2.

``--help``, argument errors and a missing config file are answered before torch is
imported (the tools run here with ``import torch`` made to fail); errors found later
(missing data or weights, a bad config field, a device the machine lacks) are one line
too, with no traceback and no config dump.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

from projects.tempme.console import FileOnly, quiet_console, random_weights_expected
from projects.tempme_cli import missing_inputs, relative_path_hint

ROOT = Path(__file__).resolve().parents[1]

#: Runs a tool with ``import torch`` failing: proves it was not needed.
WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")

TOOLS = ['tools/train.py', 'tools/test.py', 'tools/demo.py', 'tools/analysis/benchmark.py',
         'tools/analysis/benchmark_data.py', 'tools/analysis/check_reference.py',
         'tools/analysis/check_pipeline.py', 'tools/analysis/visualize_merging.py',
         'tools/deployment/export_onnx.py']


def _run(args, cwd=ROOT, without_torch=False, timeout=300):
    command = [sys.executable] + (['-c', WITHOUT_TORCH] if without_torch else []) + args
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(done):
    """The error line of a run that failed as a user error should."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert 'Traceback' not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), done.stderr[-3000:]
    assert 'Config:' not in done.stdout + done.stderr
    return lines[0]


@pytest.mark.parametrize('tool', TOOLS)
def test_help_and_argument_errors_need_no_torch(tool):
    done = _run([str(ROOT / tool), '--help'], without_torch=True)
    assert done.returncode == 0 and 'usage:' in done.stdout, done.stderr[-2000:]
    bad = _run([str(ROOT / tool), '--no-such-option'], without_torch=True)
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr[-2000:]
    assert 'error:' in bad.stderr.splitlines()[-1]  # argparse's line, under the usage


@pytest.mark.parametrize('args', [
    ['tools/train.py', 'configs/nope.py'],
    ['tools/test.py', 'configs/nope.py', 'ckpt.pth'],
    ['tools/analysis/visualize_merging.py', 'configs/nope.py', 'video.mp4'],
    ['tools/deployment/export_onnx.py', 'configs/nope.py', '--out', 'x'],
    ['tools/analysis/check_pipeline.py', 'configs/nope.py', '--videos', 'tests/data/videos'],
    ['tools/analysis/benchmark_data.py', '--config', 'configs/nope.py'],
])
def test_a_mistyped_config_path_is_one_line_before_torch(args):
    line = _one_line_error(_run(args, without_torch=True))
    assert line == 'error: config file not found: configs/nope.py'


def test_run_from_another_directory_the_error_names_the_repository_root(tmp_path):
    line = _one_line_error(_run([str(ROOT / 'tools/train.py'),
                                 str(ROOT / 'configs/tempme_tiny.py')], cwd=tmp_path))
    assert 'train annotation file not found: data/tiny/train.json' in line
    assert f'the repository root {ROOT}' in line and str(tmp_path.resolve()) in line
    # a path relative to the current directory, from another directory: said the same way
    line = _one_line_error(_run([str(ROOT / 'tools/test.py'), 'configs/tempme_tiny.py', 'x.pth'],
                                cwd=tmp_path, without_torch=True))
    assert line.startswith('error: config file not found: configs/tempme_tiny.py (relative')
    assert 'it exists there' in line


def test_missing_clip_weights_are_one_line(tmp_path):
    checkpoint = tmp_path / 'ckpt.pth'
    checkpoint.write_bytes(b'')
    line = _one_line_error(_run(['tools/test.py', 'configs/tempme_msrvtt.py', str(checkpoint),
                                 '--work-dir', str(tmp_path / 'work')]))
    assert 'CLIP weights (model.clip.weights) not found: checkpoints/clip/ViT-B-32.pt' in line
    assert 'nothing is downloaded' in line
    assert not (tmp_path / 'work').exists()  # refused before the runner was built


def test_a_bad_config_field_is_one_line(tmp_path):
    data = tmp_path / 'data'
    subprocess.run([sys.executable, 'tools/data/make_synthetic.py', '--out', str(data),
                    '--num-train', '2', '--num-val', '2', '--num-test', '2'], cwd=ROOT,
                   check=True, capture_output=True)
    checkpoint = tmp_path / 'ckpt.pth'
    checkpoint.write_bytes(b'')
    line = _one_line_error(_run([
        'tools/test.py', 'configs/tempme_tiny.py', str(checkpoint), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', f'test_dataloader.dataset.data_root={data}',
        'model.lora.rank=0']))
    assert line == ('error: configs/tempme_tiny.py: ValueError: lora.rank must be a positive '
                    'integer, got 0')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the refusal is for machines without CUDA')
def test_benchmark_on_cuda_without_a_gpu_is_one_line():
    line = _one_line_error(_run(['tools/analysis/benchmark.py', '--device', 'cuda']))
    assert 'no CUDA GPU is available' in line and '--device cpu' in line


def test_relative_paths_hint_only_outside_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert relative_path_hint('data/x.json', ROOT) == ''
    monkeypatch.chdir(tmp_path)
    assert 'repository root' in relative_path_hint('data/x.json', ROOT)
    assert relative_path_hint(str(tmp_path / 'x.json'), ROOT) == ''  # absolute: no hint
    assert relative_path_hint('http://host/x.pth', ROOT) == ''


def test_missing_inputs_resolve_paths_as_the_datasets_do(tmp_path):
    (tmp_path / 'videos').mkdir()
    (tmp_path / 'test.json').write_text('{}')
    weights = tmp_path / 'clip.pt'
    cfg = dict(
        test_dataloader=dict(dataset=dict(data_root=str(tmp_path), ann_file='test.json',
                                          data_prefix=dict(video='videos'))),
        train_dataloader=dict(dataset=dict(data_root=str(tmp_path), ann_file='train.json',
                                           data_prefix=dict(video='clips'))),
        val_dataloader=dict(dataset=dict(data_root=str(tmp_path), ann_file='test.json',
                                         data_prefix=dict(video='gone', frame_cache='cache'))),
        model=dict(clip=dict(weights=str(weights))))
    assert missing_inputs(cfg, ['test']) == [('CLIP weights (model.clip.weights)', str(weights))]
    assert missing_inputs(cfg, ['train'])[:2] == [
        ('train annotation file', str(tmp_path / 'train.json')),
        ('train video folder', str(tmp_path / 'clips'))]
    # a split read from a frame cache needs no video folder
    assert missing_inputs(cfg, ['val']) == missing_inputs(cfg, ['test'])
    weights.write_bytes(b'')
    assert missing_inputs(cfg, ['test', 'val']) == []


def test_dumps_go_to_the_log_file_only(tmp_path, capsys):
    log_file = tmp_path / 'run.log'
    logger = quiet_console(MMLogger.get_instance('tool_errors_test', log_file=str(log_file)))
    logger.info('Config:\nmodel = dict(type="X")')
    logger.info('Hooks will be executed in the following order:\nbefore_run:')
    logger.warning('"FileClient" will be deprecated in future. Please use io functions')
    logger.info('Epoch(train) [1][1/8]')
    console = capsys.readouterr().out
    assert 'Epoch(train)' in console and 'Config:' not in console
    assert 'Hooks will be executed' not in console and 'FileClient' not in console
    for handler in logger.handlers:
        handler.flush()
    written = log_file.read_text()
    assert 'Config:' in written and 'Hooks will be executed' in written
    assert 'FileClient' in written and 'Epoch(train)' in written
    quiet_console(logger)  # attaching twice adds no second filter
    assert sum(isinstance(f, FileOnly) for h in logger.handlers for f in h.filters) == 1


def test_random_weights_notice_is_dropped_inside_the_block_only(caplog):
    with caplog.at_level(logging.WARNING):
        with random_weights_expected():
            logging.warning("No pretrained weights loaded for model 'ViT-B-32'.")
        logging.warning("No pretrained weights loaded for model 'ViT-B-16'.")
    assert [r.getMessage() for r in caplog.records] == [
        "No pretrained weights loaded for model 'ViT-B-16'."]
