"""Evaluation protocols: the pure rules, the base configs, and tiny training runs."""
import json
import logging
import os
from pathlib import Path

import pytest
from mmengine.config import Config

from projects.tempme.evaluation.protocols import (EvaluationProtocol, check_splits, is_better,
                                                  metric_label, parse_protocol, split_identity)
from tests.conftest import video_text_pipeline

ROOT = Path(__file__).resolve().parents[1]
PAPER = dict(name='paper', select='retrieval/t2v_R1', rule='greater', val_first_iter=1,
             val_iter_interval=150)
CLEAN = dict(name='clean', select='retrieval/R_sum', rule='greater', val_first_iter=None,
             val_iter_interval=None)
SMALL_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=56, patch_size=8, width=32, layers=12, head_width=16,
                    mlp_ratio=2.0),
    text_cfg=dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=1))
# What an experiment config adds to select a protocol (README, "Evaluation protocols").
SELECT_LINES = '''
train_cfg = dict(type='ProtocolTrainLoop')
test_cfg = dict(type='ProtocolTestLoop')
default_hooks = dict(checkpoint=dict(save_best=_base_.evaluation_protocol.select,
                                     rule=_base_.evaluation_protocol.rule))
'''


# -- the pure rules -----------------------------------------------------------------------
def test_base_configs_hold_the_published_schedule_and_the_clean_one():
    paper = Config.fromfile(str(ROOT / 'configs/_base_/protocols/paper.py'))
    clean = Config.fromfile(str(ROOT / 'configs/_base_/protocols/clean.py'))
    assert paper.evaluation_protocol.to_dict() == PAPER
    assert clean.evaluation_protocol.to_dict() == CLEAN
    assert set(paper.keys()) == set(clean.keys()) == {'evaluation_protocol'}  # no clash


def test_paper_schedule_is_step_one_and_every_interval():
    protocol = parse_protocol(PAPER)
    steps = [s for s in range(1, 601) if protocol.validates_after_step(s)]
    assert steps == [1, 150, 300, 450, 600]
    custom = parse_protocol(dict(PAPER, val_first_iter=3, val_iter_interval=4))
    assert [s for s in range(1, 13) if custom.validates_after_step(s)] == [3, 4, 8, 12]
    off = parse_protocol(dict(PAPER, val_first_iter=None, val_iter_interval=None))
    assert not any(off.validates_after_step(s) for s in range(1, 500))
    assert not any(parse_protocol(CLEAN).validates_after_step(s) for s in range(1, 500))


def test_the_result_is_named_by_its_protocol():
    paper, clean = parse_protocol(PAPER), parse_protocol(CLEAN)
    assert (paper.selected_on, paper.reported_on) == ('test', 'test')
    assert (clean.selected_on, clean.reported_on) == ('val', 'test')
    assert paper.describe_best() == ('best t2v R@1 on the test split, selected on the test '
                                     'split (paper protocol)')
    assert clean.describe_best() == ('test split metrics of the checkpoint with the best val '
                                     'R_sum (clean protocol)')
    assert metric_label('retrieval/v2t_R10') == 'v2t R@10'
    assert metric_label('retrieval/dsl_t2v_R1') == 'dsl_t2v_R1'


@pytest.mark.parametrize('cfg, message', [
    (None, 'add _base_/protocols/paper.py'),
    (dict(PAPER, name='best'), "name must be one of \\['clean', 'paper'\\]"),
    (dict(PAPER, interval=10), "unknown keys \\['interval'\\]"),
    (dict(PAPER, val_iter_interval=0), 'val_iter_interval must be a positive integer'),
    (dict(PAPER, val_first_iter=1.5), 'val_first_iter must be a positive integer'),
    (dict(PAPER, rule='max'), 'rule must be one of'),
    (dict(PAPER, select=''), 'select must name a metric key'),
    (dict(CLEAN, val_iter_interval=150), 'the clean protocol evaluates after each epoch'),
])
def test_bad_protocols_are_refused_with_the_setting_named(cfg, message):
    with pytest.raises(ValueError, match=message):
        parse_protocol(cfg)


def test_best_is_strictly_better():
    assert is_better(1.0, None, 'greater') and is_better(2.0, 1.0, 'greater')
    assert not is_better(1.0, 1.0, 'greater') and is_better(0.5, 1.0, 'less')


def test_splits_must_fit_the_protocol():
    assert split_identity(dict(data_root='data/msrvtt/', ann_file='./annotations/a.json')) \
        == 'data/msrvtt/annotations/a.json'
    assert split_identity(dict(data_root='x', ann_file='/abs/a.json')) == '/abs/a.json'
    assert split_identity(None) is None and split_identity(dict(data_root='x')) is None
    paper, clean = parse_protocol(PAPER), parse_protocol(CLEAN)
    check_splits(paper, 'd/test.json', 'd/test.json')
    check_splits(clean, 'd/val.json', 'd/test.json')
    with pytest.raises(ValueError, match='paper protocol evaluates and selects on the test'):
        check_splits(paper, 'd/val.json', 'd/test.json')
    with pytest.raises(ValueError, match='both read d/test.json'):
        check_splits(clean, 'd/test.json', 'd/test.json')
    with pytest.raises(ValueError, match='test_dataloader needs a dataset'):
        check_splits(clean, 'd/val.json', None)


# -- the experiment configs with a protocol base -----------------------------------------
def _config_with_protocol(tmp_path, experiment: str, protocol: str, extra: str = '') -> Config:
    """``configs/<experiment>`` switched to a protocol base's settings and the lines that
    select it (the experiment configs already name one protocol, so a child config
    replaces it rather than adding the base a second time)."""
    os.symlink(ROOT / 'configs', tmp_path / 'configs')
    chosen = Config.fromfile(str(ROOT / f'configs/_base_/protocols/{protocol}.py'))
    settings = dict(chosen.evaluation_protocol)
    path = tmp_path / f'exp_{protocol}.py'
    path.write_text(
        f"_base_ = ['configs/{experiment}']\n"
        f"evaluation_protocol = dict(_delete_=True, **{settings!r})\n"
        + SELECT_LINES.replace('_base_.evaluation_protocol.select', repr(settings['select']))
        .replace('_base_.evaluation_protocol.rule', repr(settings['rule'])) + extra)
    return Config.fromfile(str(path))


def test_msrvtt_config_with_the_paper_protocol(tmp_path):
    cfg = _config_with_protocol(tmp_path, 'tempme_msrvtt.py', 'paper')
    protocol = parse_protocol(cfg.evaluation_protocol)
    assert protocol == EvaluationProtocol(**PAPER)
    assert cfg.train_cfg.type == 'ProtocolTrainLoop' and cfg.train_cfg.max_epochs == 5
    assert cfg.test_cfg.type == 'ProtocolTestLoop'
    assert cfg.default_hooks.checkpoint.save_best == 'retrieval/t2v_R1'
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    # MSR-VTT 1k-A: the published code evaluates on the test split during training.
    check_splits(protocol, split_identity(cfg.val_dataloader.dataset),
                 split_identity(cfg.test_dataloader.dataset))
    cfg.merge_from_dict({'evaluation_protocol.val_iter_interval': 50})
    assert parse_protocol(cfg.evaluation_protocol).val_iter_interval == 50


def test_readme_command_line_turns_the_paper_config_into_the_clean_protocol(tmp_path):
    import argparse

    from mmengine.config import DictAction
    cfg = _config_with_protocol(tmp_path, 'tempme_msrvtt.py', 'paper')
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    readme = (ROOT / 'README.md').read_text()
    command = readme[readme.index('tools/dist_train.sh configs/tempme_msrvtt.py 8 --cfg-options'):]
    command = command[:command.index('```')].replace('\\\n', ' ').split()
    options = parser.parse_args(command[command.index('--cfg-options'):]).cfg_options
    cfg.merge_from_dict(options)
    protocol = parse_protocol(cfg.evaluation_protocol)
    assert protocol == EvaluationProtocol(**CLEAN)
    assert cfg.default_hooks.checkpoint.save_best == protocol.select
    check_splits(protocol, split_identity(cfg.val_dataloader.dataset),
                 split_identity(cfg.test_dataloader.dataset))
    assert cfg.train_dataloader.dataset.ann_file.endswith('msrvtt_train_9k_minus_val.json')


def test_msrvtt_config_with_the_clean_protocol_needs_the_val_split(tmp_path):
    cfg = _config_with_protocol(tmp_path, 'tempme_msrvtt.py', 'clean')
    protocol = parse_protocol(cfg.evaluation_protocol)
    with pytest.raises(ValueError, match='msrvtt_val.json'):
        check_splits(protocol, split_identity(cfg.val_dataloader.dataset),
                     split_identity(cfg.test_dataloader.dataset))
    cfg.merge_from_dict({
        'train_dataloader.dataset.ann_file': 'annotations/msrvtt_train_9k_minus_val.json',
        'val_dataloader.dataset.ann_file': 'annotations/msrvtt_val.json'})
    check_splits(protocol, split_identity(cfg.val_dataloader.dataset),
                 split_identity(cfg.test_dataloader.dataset))


# -- tiny training runs -------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """One torch thread: these runs are tiny, and the CPU is shared with other tests."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_config(tmp_path, data_root, protocol: str, options: dict) -> Config:
    # The smallest geometry that keeps 12 x 50 tokens (56 px frames, 8 px patches), no
    # RandAugment: a few steps and evaluations take seconds on a shared CPU.
    pipeline = repr(video_text_pipeline(True, size=56))
    small = ''.join(
        f"{split}_dataloader = dict(dataset=dict(data_root={str(data_root)!r}, "
        f"pipeline={pipeline}))\n" for split in ('train', 'val', 'test'))
    small += f"model = dict(clip=dict(arch=dict(_delete_=True, **{SMALL_CLIP!r})))\n"
    cfg = _config_with_protocol(tmp_path, 'tempme_tiny.py', protocol, small)
    cfg.merge_from_dict({'train_cfg.max_epochs': 1, 'default_hooks.logger.interval': 50,
                         **options})
    return cfg


def _tiny_runner(tmp_path, data_root, protocol: str, options: dict):
    from projects.tempme.engine.runtime import build_runner
    cfg = _tiny_config(tmp_path, data_root, protocol, options)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    return build_runner(cfg)


def test_paper_protocol_evaluates_at_its_steps_and_keeps_the_best_t2v_r1(tmp_path, data_root,
                                                                         one_thread):
    # 8 videos x 2 captions / batch 4 = 4 steps: evaluations after steps 1 and 2 (the
    # interval is 2), and after step 4 once, as the epoch's own evaluation.
    runner = _tiny_runner(tmp_path, data_root, 'paper',
                          {'evaluation_protocol.val_iter_interval': 2,
                           'val_dataloader.dataset.ann_file': 'test.json'})
    seen = []
    evaluate = runner.val_loop.run

    def record():
        metrics = evaluate()
        seen.append((runner.iter, metrics['retrieval/t2v_R1'], metrics['retrieval/protocol']))
        assert not runner.model.training
        return metrics

    runner.val_loop.run = record
    runner.train()
    loop = runner.train_loop
    assert [e['step'] for e in loop.evaluations] == [1, 2, 4] == [s for s, _, _ in seen]
    assert all(name == 'paper' for _, _, name in seen)
    result = json.loads((tmp_path / 'work' / 'evaluation_protocol.json').read_text())
    best = max(value for _, value, _ in seen)
    first_best = next(step for step, value, _ in seen if value == best)
    assert result['protocol'] == 'paper' and result['selected_on'] == 'test'
    assert result['description'] == ('best t2v R@1 on the test split, selected on the test '
                                     'split (paper protocol)')
    assert result['best']['value'] == best and result['best']['step'] == first_best
    assert result['metrics']['retrieval/t2v_R1'] == best
    assert result['evaluations'] == 3
    assert Path(result['checkpoint']).name.startswith('best_retrieval_t2v_R1')
    assert Path(result['checkpoint']).exists()

    # tools/test.py on the selected checkpoint: the saved and returned metrics name the
    # protocol, and the numbers are the ones the protocol reported.
    from tools import test as test_tool
    out = tmp_path / 'metrics.json'
    metrics = test_tool.main([str(tmp_path / 'exp_paper.py'), result['checkpoint'],
                              '--work-dir', str(tmp_path / 'test'), '--out', str(out)])
    assert metrics['retrieval/protocol'] == 'paper'
    saved = json.loads(out.read_text())
    assert saved['protocol'] == 'paper' and saved['v2t_convention'] == 'clip4clip'
    assert saved['t2v_R1'] == pytest.approx(best)


def test_clean_protocol_selects_on_val_then_tests_the_best_once(tmp_path, data_root, one_thread):
    runner = _tiny_runner(tmp_path, data_root, 'clean', {})
    runner.train()
    loop = runner.train_loop
    assert [e['step'] for e in loop.evaluations] == [4]  # the epoch end only
    result = json.loads((tmp_path / 'work' / 'evaluation_protocol.json').read_text())
    assert result['protocol'] == 'clean'
    assert (result['selected_on'], result['reported_on']) == ('val', 'test')
    assert 'retrieval/R_sum' in result['metrics']
    assert Path(result['checkpoint']).name.startswith('best_retrieval_R_sum')
    logs = next((tmp_path / 'work').glob('*/*.log')).read_text()
    assert 'retrieval/protocol: clean' in logs  # the test metrics name the protocol
    assert "test split metrics of the checkpoint with the best val R_sum (clean protocol)" \
        in logs


@pytest.mark.parametrize('protocol, save_best, rule, message', [
    (PAPER, 'retrieval/R_sum', 'greater',
     r"selects on retrieval/t2v_R1 \(greater\), but default_hooks.checkpoint keeps the best "
     r"of \['retrieval/R_sum'\]"),
    (dict(PAPER, select='retrieval/v2t_R1'), 'retrieval/t2v_R1', 'greater',
     'selects on retrieval/v2t_R1'),
    (PAPER, 'retrieval/t2v_R1', 'less', r"\(rule \['less'\]\)"),
    (CLEAN, None, 'greater', 'no best checkpoint is kept'),
])
def test_a_best_checkpoint_that_is_not_the_protocols_is_refused(protocol, save_best, rule,
                                                                message):
    from mmengine.hooks import CheckpointHook

    from projects.tempme.engine.protocols import _check_checkpoint_hook
    hook = CheckpointHook(save_best=save_best, rule=rule)
    with pytest.raises(ValueError, match=message):
        _check_checkpoint_hook(hook, parse_protocol(protocol))
    _check_checkpoint_hook(CheckpointHook(save_best='retrieval/t2v_R1', rule='greater'),
                           parse_protocol(PAPER))
    _check_checkpoint_hook(CheckpointHook(save_best=None), parse_protocol(PAPER))


def test_a_config_that_contradicts_its_protocol_stops_before_the_first_step(tmp_path,
                                                                            data_root,
                                                                            one_thread):
    runner = _tiny_runner(tmp_path, data_root, 'paper', {})
    with pytest.raises(ValueError, match='the paper protocol evaluates and selects on the '
                       'test split, but val_dataloader reads .*val.json'):
        runner.train()
    assert runner.train_loop.iter == 0


def test_a_run_that_evaluates_nothing_trains_without_the_protocol(tmp_path, data_root, one_thread):
    runner = _tiny_runner(tmp_path, data_root, 'clean',
                          {'train_cfg.val_begin': 2, 'default_hooks.checkpoint.save_best': None,
                           'train_dataloader.batch_size': 8})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    assert runner.train_loop.iter == 2 and runner.train_loop.evaluations == []
    assert not (tmp_path / 'work' / 'evaluation_protocol.json').exists()
    # chosen in the config (as the demo does): said at INFO, naming the setting, no warning
    said = [(r.levelno, r.getMessage()) for r in records if 'not run' in r.getMessage()]
    assert len(said) == 1 and said[0][0] == logging.INFO
    assert 'train_cfg.val_begin (2) is after the last epoch' in said[0][1]
