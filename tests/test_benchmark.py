"""The benchmark tool and its measuring functions, on a tiny geometry (counts, not timings)."""
import json
from pathlib import Path

import pytest
import torch

from projects.tempme.profiling import (cpu_peak_allocated, interleaved_timings, median_ratio,
                                       tensor_bytes)
from tools.analysis import benchmark

ROOT = Path(__file__).resolve().parents[1]

MB = 2 ** 20


def test_cpu_peak_allocated_replays_allocations_in_order():
    def two_live_then_one():
        a = torch.ones(MB // 4)            # 1 MB
        b = torch.ones(2 * MB // 4)        # 2 MB, both live: 3 MB
        del a
        c = torch.ones(MB // 4)            # 3 MB again, never more
        return b, c

    peak = cpu_peak_allocated(two_live_then_one)
    assert 3 * MB <= peak < 3 * MB + 4096


def test_cpu_peak_allocated_ignores_what_was_live_before():
    held = torch.ones(4 * MB // 4)  # noqa: F841  (live during the call)
    assert cpu_peak_allocated(lambda: torch.ones(MB // 4)) < MB + 4096


def test_tensor_bytes_counts_shared_storage_once():
    x = torch.zeros(1000)
    assert tensor_bytes([x, x[10:], x.view(10, 100), torch.zeros(10)]) == 4000 + 40


def test_interleaved_timings_alternate_methods_and_ratio_is_per_round():
    calls = []
    times = interleaved_timings({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                                rounds=3, warmup=1)
    assert calls == ['a', 'b'] * 4
    assert [len(t) for t in times.values()] == [3, 3]
    assert median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0
    with pytest.raises(ValueError):
        interleaved_timings({'a': lambda: None}, rounds=0)


TINY_ARCH = ('{"embed_dim": 32, "vision_cfg": {"image_size": 112, "patch_size": 16, "width": 64,'
             ' "layers": 12, "head_width": 32}, "text_cfg": {"context_length": 32,'
             ' "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}')


def test_benchmark_tool_reports_every_method_with_counts_and_ratios(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    report = benchmark.main(['--geometries', '--arch', TINY_ARCH, '--config',
                             str(ROOT / 'configs' / 'tempme_tiny.py'), '--rounds', '1',
                             '--train-rounds', '1', '--train-batch', '2', '--batch-sizes', '1',
                             '2', '--grad-cache', '4', '2', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved['device'].startswith('cpu') and saved['torch'] == torch.__version__
    assert set(saved['results']) == {'custom', 'tempme_tiny'}
    geo = saved['results']['custom']
    assert set(geo) == {'plain', 'tome', 'tempme'}
    # ViT-B/32's 12 x 50 token layout under the default schedule
    assert [geo[m]['output_tokens'] for m in ('plain', 'tome', 'tempme')] == [600, 312, 97]
    assert geo['tempme']['tokens_per_layer'] == [576, 552, 528, 504, 480, 456, 432, 408,
                                                 264, 168, 107, 97]
    assert geo['plain']['tokens_per_layer'] == [600] * 12
    assert geo['tempme']['gmacs'] < geo['tome']['gmacs'] < geo['plain']['gmacs']
    # LoRA r8 on 14 qkv layers of width 64, plus TempMe's 12 + 6 + 3 temporal embeddings
    lora = 14 * 8 * (64 + 3 * 64)
    assert geo['plain']['trainable_params_peft'] == lora
    assert geo['tempme']['trainable_params_peft'] == lora + 21 * 64
    assert geo['plain']['total_params'] == geo['tempme']['total_params'] - 21 * 64
    for m in ('plain', 'tome', 'tempme'):
        for key in ('latency_ms_b1', 'latency_ms_b2', 'train_step_ms_full', 'peak_mem_mb_full',
                    'train_step_ms_peft', 'peak_mem_mb_peft'):
            assert geo[m][key] > 0, (m, key)
        # peak includes what is resident: every weight and both AdamW moments
        assert geo[m]['peak_mem_mb_full'] > 3 * 4 * geo[m]['total_params'] / MB
    assert geo['plain']['latency_ratio_b1'] == 1.0
    # fewer tokens in every layer: less activation memory in both training modes
    assert geo['tempme']['step_mem_mb_full'] < geo['plain']['step_mem_mb_full']
    assert geo['tempme']['step_mem_mb_peft'] < geo['plain']['step_mem_mb_peft']
    assert (tmp_path / 'bench.png').stat().st_size > 10_000
    # gradient caching: the same step on 4 pairs in chunks of 2 holds fewer activations
    cache = saved['grad_cache']
    assert cache['geometry'] == 'custom'
    whole, chunked = cache['whole batch'], cache['chunks of 2']
    assert (whole['batch'], whole['chunk_size'], chunked['chunk_size']) == (4, None, 2)
    assert 0 < chunked['step_mem_mb'] < whole['step_mem_mb']
    assert chunked['train_step_ms'] > 0
    table = capsys.readouterr().out
    assert '### gradient caching, TempMe PEFT step, custom' in table
    assert '| tempme | 97 (0.16x)' in table
