"""The published training step, step for step: optimizer, gradient scale, clamp, masks,
gradient caching, and the replay of the published code's recorded steps."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from projects.tempme.engine import BertAdamW, GuardedOptimWrapper
from projects.tempme.models.grad_cache import chunk_slices
from projects.tempme.models.heads import MeanCLSHead
from projects.tempme.reference import convert_reference_state_dict
from projects.tempme.reference_steps import replay_config, run_replay
from tests.conftest import TINY_CLIP

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / 'tests' / 'data'
STEPS = DATA / 'reference_train_steps.pt'
STEPS_W2 = DATA / 'reference_train_steps_w2.pt'
CONFIG = REPO / 'configs' / 'tempme_msrvtt.py'


@pytest.fixture(scope='module')
def fixture():
    return torch.load(STEPS, weights_only=True, map_location='cpu')


# -- BERT AdamW, by hand ------------------------------------------------------------------
def _bert_adamw_by_hand(p, grads, lrs, b1=0.9, b2=0.999, eps=1e-6, wd=0.2):
    m = v = 0.0
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + eps)
        p -= lr * wd * p
    return p


def test_bert_adamw_follows_the_published_update_and_differs_from_torch():
    grads, lrs = [0.5, -1.5, 2e-7], [0.0, 1e-2, 5e-3]
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = BertAdamW([p], lr=0.0, weight_decay=0.2)
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]['lr'] = lr
        p.grad = torch.full_like(p, g)
        opt.step()
    expected = [_bert_adamw_by_hand(x, grads, lrs) for x in (1.0, -2.0)]
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-12)
    # lr 0 at the first step moves nothing but advances the moments and the step count
    assert opt.state[p]['step'] == 3

    q = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    torch_opt = torch.optim.AdamW([q], lr=0.0, weight_decay=0.2, betas=(0.9, 0.999), eps=1e-6)
    for g, lr in zip(grads, lrs):
        torch_opt.param_groups[0]['lr'] = lr
        q.grad = torch.full_like(q, g)
        torch_opt.step()
    assert (p - q).abs().max().item() > 1e-6  # eps placement and the decay order


def test_bert_adamw_skips_parameters_without_gradients_and_rejects_bad_settings():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = BertAdamW([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert opt.state[a]['step'] == 2 and opt.state[b]['step'] == 1
    # each parameter's first bias-corrected step moves it by lr (m / sqrt(v) = 1)
    assert b.detach().tolist() == pytest.approx([0.9] * 2, abs=1e-5)
    for bad in (dict(lr=-1.0), dict(betas=(0.9, 1.0)), dict(eps=-1e-6), dict(weight_decay=-1)):
        with pytest.raises(ValueError, match='BertAdamW'):
            BertAdamW([a], **bad)


# -- gradient scale, temperature, padded frames ----------------------------------------------
def test_grad_scale_scales_the_stepped_gradient_not_the_logged_loss():
    w = torch.nn.Parameter(torch.tensor([3.0]))
    wrapper = GuardedOptimWrapper(torch.optim.SGD([w], lr=1.0), grad_scale=0.25)
    loss = (w * 2.0).sum()
    wrapper.update_params(loss)
    assert w.item() == pytest.approx(3.0 - 0.25 * 2.0)
    assert loss.item() == pytest.approx(6.0)
    for bad in (0, -1.0, float('nan'), '0.25'):
        with pytest.raises(ValueError, match='grad_scale'):
            GuardedOptimWrapper(torch.optim.SGD([w], lr=1.0), grad_scale=bad)


def test_padded_frames_leave_the_average_like_the_published_mask():
    feats = torch.tensor([[[3.0, 4.0], [0.0, 2.0], [9.0, 9.0]]])  # unit: (.6,.8), (0,1)
    pooled = MeanCLSHead()(feats, torch.tensor([[1, 1, 0]]))
    assert pooled[0].tolist() == pytest.approx([0.3, 0.9])
    assert MeanCLSHead()(feats, torch.zeros(1, 3)).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match='frame_mask'):
        MeanCLSHead()(feats, torch.ones(1, 2))


def _fixture_model(fixture, **model_args):
    cfg = replay_config(Config.fromfile(CONFIG), fixture['config'])
    cfg.model.update(model_args)
    model = MODELS.build(cfg.model)
    model.load_state_dict(convert_reference_state_dict(fixture['state_dict']), strict=True)
    return cfg, model


def _batch(fixture, steps):
    parts = [fixture['steps'][s]['batches'][0] for s in steps]
    return dict(inputs=dict(
        video=[v.float() for p in parts for v in p['video']],
        text=[t[None] for p in parts for t in p['text_ids']],
        video_mask=[m for p in parts for m in p['video_mask']]))


def test_the_temperature_is_clamped_after_the_step_not_before(fixture):
    cfg, model = _fixture_model(fixture)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert model.logit_scale.item() > math.log(100)  # fp16 of ln 100 rounds up
    log_vars = model.train_step(_batch(fixture, [0]), wrapper)
    assert log_vars['logit_scale'].item() == pytest.approx(math.exp(4.60546875), rel=1e-6)
    assert model.logit_scale.item() == pytest.approx(math.log(100), abs=1e-7)


# -- gradient caching --------------------------------------------------------------------------
def test_chunk_slices_cover_the_batch_and_reject_bad_sizes():
    assert chunk_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match='train_chunk_size'):
            chunk_slices(4, bad)


def test_chunks_of_two_reach_the_weights_of_the_whole_batch():
    """Batch 8 in chunks of 2 against batch 8 at once, one BERT AdamW step with clipping,
    every weight training (the temperature's gradient is cached too)."""
    torch.manual_seed(0)
    data = dict(inputs=dict(video=list(torch.randn(8, 12, 3, 112, 112)),
                            text=list(torch.randint(1, 400, (8, 1, 32))),
                            video_mask=list(torch.ones(8, 12))))
    for text in data['inputs']['text']:
        text[0, 8] = 49407  # end of text
    results = []
    for chunk in (None, 2):
        cfg = Config.fromfile(REPO / 'configs' / 'tempme_tiny.py')
        cfg.model.update(train_chunk_size=chunk, train_mode='full', lora=None,
                         data_preprocessor=dict(type='RetrievalDataPreprocessor', mean=None,
                                                std=None))
        cfg.model.clip.arch = dict(TINY_CLIP, init_logit_scale=math.log(20))
        torch.manual_seed(1)
        model = MODELS.build(cfg.model)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        loss = model.train_step(data, wrapper)['loss'].item()
        results.append((loss, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (loss_a, params_a), (loss_b, params_b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert (params_a['logit_scale'] - start['logit_scale']).abs().item() > 1e-4
    assert max((params_a[n] - start[n]).abs().max().item() for n in params_a) > 1e-4
    assert max((params_a[n] - params_b[n]).abs().max().item() for n in params_a) <= 1e-5


def test_chunking_refuses_gradient_accumulation(fixture):
    cfg, model = _fixture_model(fixture, train_chunk_size=2)
    cfg.optim_wrapper.accumulative_counts = 2
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    with pytest.raises(ValueError, match='accumulative_counts'):
        model.train_step(_batch(fixture, [0]), wrapper)


# -- the published code's recorded steps ------------------------------------------------------
def test_the_reference_recipe_replays_the_published_steps(fixture):
    result = run_replay(Config.fromfile(CONFIG), str(STEPS), fixture)
    assert result['ok'] and not result['trainable_errors']
    rows = result['tables'][0]
    assert [r['lr'] for r in rows] == pytest.approx([s['lr'] for s in fixture['steps']])
    assert rows[0]['param_diff'] == 0.0  # lr 0: nothing moves
    assert max(r['param_diff'] for r in rows) <= 1e-5
    assert max(r['loss_rel'] for r in rows) <= 1e-5


def test_the_modern_recipe_does_not(fixture):
    """torch's AdamW (betas 0.9/0.98, eps on the corrected moment) departs at the first
    step that moves: the check tells the recipes apart."""
    cfg = Config.fromfile(REPO / 'configs' / '_base_' / 'schedules' / 'adamw_cosine_5e.py')
    modern = Config.fromfile(CONFIG)
    modern.optim_wrapper = cfg.optim_wrapper
    short = dict(fixture, steps=fixture['steps'][:2])
    result = run_replay(modern, str(STEPS), short)
    assert not result['ok']
    assert result['tables'][0][0]['ok'] and not result['tables'][0][1]['ok']
    assert result['tables'][0][1]['param_diff'] > 1e-4


def test_two_gloo_ranks_with_chunks_replay_a_two_process_recording():
    """The published code on 2 processes steps half the true gradient (its grad norm is
    half the one-process fixture's); our DDP step with grad_scale 1/2 and chunks of one
    sample per rank reproduces it, through the CLI."""
    out = subprocess.run(
        [sys.executable, 'tools/analysis/check_train_steps.py', str(CONFIG), str(STEPS_W2),
         '--chunk-size', '1'], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'world size 2' in out.stdout and 'grad_scale for the replay: 1/2' in out.stdout
    rows = [line.split() for line in out.stdout.splitlines()
            if line.strip()[:1].isdigit() and len(line.split()) == 10]
    expected = [(str(rank), str(step)) for rank in (0, 1) for step in (1, 2, 3, 4)]
    assert sorted({(r[0], r[1]) for r in rows}) == expected
    one = torch.load(STEPS, weights_only=True)['steps'][0]['grad_norm']
    step1 = [float(r[6]) for r in rows if r[1] == '1']
    assert step1 == pytest.approx([one / 2] * 2, rel=1e-4)
    assert out.stdout.strip().endswith('MATCH') and 'MISMATCH' not in out.stdout
