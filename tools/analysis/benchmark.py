"""Tokens, GMACs, parameters, latency, training step time and peak memory of TempMe
against plain CLIP and ToMe, side by side, in one run.

For every geometry (ViT-B/32 and ViT-B/16 at 12 frames and 224 px by default, plus the
model of any config given) three video encoders are built from the same random CLIP
weights:

* ``plain``: per-frame CLIP, no merging, mean pooling (CLIP4Clip meanP);
* ``tome``: ToMe only, ``imgme_r`` tokens merged inside each frame at every layer;
* ``tempme``: the TempMe schedule (the config's, or the default ImgMe + ClipMe one).

Timings run the methods interleaved (plain, tome, tempme, plain, ...) and every ratio
is the median of the per-round ratios to plain, so the drift of a shared machine
cancels out. Latency is the video tower (encoder + head) in inference mode; a training
step is the retriever's own ``train_step`` with the published recipe's optimizer wrapper
(text and video towers, contrastive loss, backward, gradient scale, clipping, BERT AdamW)
on ``--train-batch`` video-caption pairs, in full fine-tuning (every weight) and in PEFT
(LoRA rank 8 + temporal embeddings + head). ``--grad-cache BATCH CHUNK`` adds the TempMe
PEFT step on a larger batch at once and with gradient caching in chunks (first geometry
only): the memory and time that keeping a large global batch on one device costs. Peak
memory is CUDA's ``max_memory_allocated`` on a GPU; on CPU it is the peak of live tensor
bytes during one step (allocator events recorded by the torch profiler) plus the
parameters, optimizer state and inputs held before it; "step memory" is the part above
that resident set (activations, gradients, temporaries).

    python tools/analysis/benchmark.py --out work_dirs/benchmark/results.json
    python tools/analysis/benchmark.py --geometries ViT-B/32 --config configs/tempme_msrvtt.py
"""
from __future__ import annotations  # type hints name torch types without importing torch

import argparse
import copy
import ctypes
import gc
import json
import os
import os.path as osp
import platform
import statistics
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

# torch and the plugin are imported where used, so that --help and argument errors answer
# at once
if TYPE_CHECKING:
    import torch

    from projects.tempme.models import TempMeRetriever

METHODS = ('plain', 'tome', 'tempme')
#: The TempMe recipe's encoder (configs/_base_/models/tempme_vit_b32.py).
TEMPME_ENCODER = dict(type='TempMeViT', merge='tempme', temporal_embedding=True,
                      prop_attn=True)
GEOMETRIES = {'ViT-B/32': 'ViT-B-32', 'ViT-B/16': 'ViT-B-16'}
#: Default (training batch, timed rounds, timed training rounds) per geometry on CPU,
#: sized so that the default run takes under 5 minutes on two cores; ViT-B/16 costs 4x
#: ViT-B/32 per video. On CUDA: (32, 20, 10).
CPU_DEFAULTS = {'ViT-B/32': (4, 3, 2), 'ViT-B/16': (1, 2, 1)}
CUDA_DEFAULTS = (32, 20, 10)
MB = 2 ** 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--geometries', nargs='*', default=None, choices=list(GEOMETRIES),
                        help='built-in CLIP geometries (default: both, unless --config or '
                        '--arch is given)')
    parser.add_argument('--config', nargs='*', default=[],
                        help='configs whose model to benchmark (CLIP weights are not loaded)')
    parser.add_argument('--arch', type=json.loads, default=None,
                        help='a CLIP config dict (JSON) to benchmark as geometry "custom"')
    parser.add_argument('--num-frames', type=int, default=12)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--context-length', type=int, default=32)
    parser.add_argument('--batch-sizes', type=int, nargs=2, default=(1, 8),
                        metavar=('SMALL', 'LARGE'), help='inference batches')
    parser.add_argument('--train-batch', type=int,
                        help='video-caption pairs per training step (default: 4 for ViT-B/32 '
                        'and 1 for ViT-B/16 on CPU, 32 on CUDA)')
    parser.add_argument('--rounds', type=int, help='timed inference rounds (default: 3 for '
                        'ViT-B/32 and 2 for ViT-B/16 on CPU, 20 on CUDA)')
    parser.add_argument('--train-rounds', type=int, help='timed training rounds, after one '
                        'that measures memory and warms up (default: 2 / 1 on CPU, 10 CUDA)')
    parser.add_argument('--no-train', action='store_true', help='skip the training figures')
    parser.add_argument('--grad-cache', type=int, nargs=2, default=(16, 4),
                        metavar=('BATCH', 'CHUNK'), help='TempMe PEFT step on BATCH pairs at '
                        'once and in chunks of CHUNK, first geometry only (0 0 or --no-train: '
                        'skip)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile every video encoder (inference only)')
    parser.add_argument('--device', default='auto',
                        help='cpu, cuda, cuda:N, or auto (cuda when available; default)')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write the results as JSON here (and a PNG chart next '
                        'to it, unless --plot is given)')
    parser.add_argument('--plot', help='PNG chart path')
    return parser.parse_args(argv)


# -- models ---------------------------------------------------------------------------
def method_encoders(tempme: dict) -> Dict[str, dict]:
    """The three video encoder configs compared, derived from one TempMe config: the
    ``none`` and ``tome`` merge presets (ToMe with the TempMe config's ``imgme_r``)."""
    from projects.tempme.merging import MergeSchedule
    common = dict(type=tempme.get('type', 'TempMeViT'), num_frames=tempme['num_frames'])
    return dict(
        plain=dict(common, merge='none'),
        tome=dict(common, merge='tome', imgme_r=MergeSchedule.settings_of(tempme)['imgme_r'],
                  prop_attn=tempme.get('prop_attn', True)),
        tempme=dict(tempme))


def geometry_specs(args: argparse.Namespace) -> Dict[str, dict]:
    """name -> dict(clip=..., encoders=..., head=...) for every requested geometry."""
    specs = {}
    tempme = dict(TEMPME_ENCODER, num_frames=args.num_frames)
    geometries = args.geometries
    if geometries is None:
        geometries = [] if args.config or args.arch is not None else list(GEOMETRIES)
    for name in geometries:
        specs[name] = dict(clip=dict(arch=GEOMETRIES[name], image_size=args.image_size),
                           encoders=method_encoders(tempme), head=dict(type='MeanCLSHead'))
    if args.arch is not None:
        specs['custom'] = dict(clip=dict(arch=args.arch), encoders=method_encoders(tempme),
                               head=dict(type='MeanCLSHead'))
    for path in args.config:
        from mmengine.config import Config
        model = Config.fromfile(path).model
        clip = dict(model.clip, weights=None)
        specs[osp.splitext(osp.basename(path))[0]] = dict(
            clip=clip, encoders=method_encoders(dict(model.video_encoder)),
            head=dict(model.get('head', dict(type='MeanCLSHead'))),
            defaults_of=_geometry_of_arch(clip.get('arch')))
    return specs


def _geometry_of_arch(arch) -> Optional[str]:
    """The built-in geometry whose CPU defaults suit a config's CLIP, if it is one of them."""
    by_arch = {v: k for k, v in GEOMETRIES.items()}
    return by_arch.get(arch) if isinstance(arch, str) else None


def build_model(spec: dict, method: str, peft: bool, seed: int) -> TempMeRetriever:
    """A retriever with random CLIP weights, identical for every method given a seed."""
    import torch

    from projects.tempme.console import random_weights_expected
    from projects.tempme.models import TempMeRetriever
    torch.manual_seed(seed)
    clip = dict(spec['clip'])
    clip.pop('weights', None)
    with random_weights_expected():
        return TempMeRetriever(
            clip=clip, video_encoder=copy.deepcopy(spec['encoders'][method]),
            head=copy.deepcopy(spec['head']), lora=dict(rank=8) if peft else None,
            train_mode='peft' if peft else 'full', data_preprocessor=None)


# -- measurements ---------------------------------------------------------------------
def static_figures(model: TempMeRetriever) -> dict:
    """Tokens, GMACs and parameter counts of one model (no timing)."""
    from projects.tempme.profiling import video_gmacs
    encoder = model.video_encoder
    tokens = encoder.schedule.tokens_per_video()
    return dict(
        input_tokens=tokens[0], tokens_per_layer=tokens[1:], output_tokens=tokens[-1],
        gmacs=video_gmacs(encoder),
        total_params=sum(p.numel() for n, p in model.named_parameters() if 'lora_' not in n),
        num_frames=encoder.num_frames, image_size=encoder.image_size)


def _sync(device: torch.device) -> Callable[[], None]:
    import torch
    if device.type == 'cuda':
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def latency(models: Dict[str, TempMeRetriever], args: argparse.Namespace,
            device: torch.device, rounds: int) -> Dict[str, dict]:
    """Inference latency of the video tower at the two batch sizes, methods interleaved."""
    import torch

    from projects.tempme.profiling import interleaved_timings, median_ratio
    encoders = {}
    for m, model in models.items():
        model.eval()
        encoder = torch.compile(model.video_encoder) if args.compile else model.video_encoder
        encoders[m] = (lambda encoder, head: lambda v: head(encoder(v)))(encoder, model.head)
    shape = next(iter(models.values())).video_encoder.input_shape
    out = {m: {} for m in models}
    for i, batch in enumerate(args.batch_sizes):
        video = torch.randn(batch, *shape, device=device)

        def call(encode):
            def run():
                with torch.inference_mode():
                    encode(video)
            return run

        # the first batch size warms every model up (compilation included)
        warmup = (2 if args.compile else 1) if i == 0 else int(args.compile)
        times = interleaved_timings({m: call(e) for m, e in encoders.items()}, rounds,
                                    warmup=warmup, synchronize=_sync(device))
        for m in models:
            median = statistics.median(times[m])
            out[m][f'latency_ms_b{batch}'] = 1000 * median
            out[m][f'videos_per_s_b{batch}'] = batch / median
            out[m][f'latency_ratio_b{batch}'] = median_ratio(times[m], times['plain'])
    return out


def _train_inputs(batch: int, args: argparse.Namespace, shape: Tuple[int, ...], vocab: int,
                  device: torch.device) -> dict:
    import torch
    generator = torch.Generator().manual_seed(args.seed)
    text = torch.randint(1, vocab - 1, (batch, args.context_length), generator=generator)
    text[:, -1] = vocab - 1  # end-of-text: the highest id, where CLIP pools
    video = torch.randn(batch, *shape, generator=generator)
    return dict(video=video.to(device), text=text.to(device))


def _optim_wrapper(model: TempMeRetriever):
    """The published recipe's optimizer wrapper (``configs/_base_/schedules/reference_5e.py``:
    BERT AdamW, gradient scale 0.25, clipping at 1.0, the non-finite guard) over the
    trainable weights, its state created by an empty step.

    The empty step (zero gradients, zero learning rate) allocates the moments, so the first
    measured step is already a steady-state one.
    """
    import torch

    from projects.tempme.engine import BertAdamW, GuardedOptimWrapper
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = BertAdamW(params, lr=0.0, weight_decay=0.2)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:
        group['lr'] = 1e-6
    return GuardedOptimWrapper(optimizer, clip_grad=dict(max_norm=1.0, norm_type=2),
                               grad_scale=0.25)


def _train_step(model: TempMeRetriever, args: argparse.Namespace, device: torch.device,
                batch: int) -> Tuple[Callable[[], None], int]:
    """One training step of ``model`` as a callable, and the bytes held between steps."""
    import torch

    from projects.tempme.profiling import tensor_bytes
    model.train()
    wrapper = _optim_wrapper(model)
    inputs = _train_inputs(batch, args, model.video_encoder.input_shape,
                           model.text_encoder.token_embedding.num_embeddings, device)

    def step():
        model.train_step(dict(inputs=inputs), wrapper)

    state = [t for s in wrapper.optimizer.state.values() for t in s.values()
             if isinstance(t, torch.Tensor)]
    resident = tensor_bytes(list(model.parameters()) + list(model.buffers()) + state
                            + list(inputs.values()))
    return step, resident


def gradient_cache(spec: dict, args: argparse.Namespace, device: torch.device
                   ) -> Dict[str, dict]:
    """TempMe's PEFT step on ``--grad-cache`` BATCH pairs at once and in chunks: peak and
    step memory and step time (one memory step, then one timed step each)."""
    from projects.tempme.profiling import interleaved_timings, peak_memory_bytes
    batch, chunk = args.grad_cache
    steps, out = {}, {}
    for name, chunk_size in (('whole batch', None), (f'chunks of {chunk}', chunk)):
        model = build_model(spec, 'tempme', peft=True, seed=args.seed).to(device)
        model.train_chunk_size = chunk_size
        step, resident = _train_step(model, args, device, batch)
        peak = peak_memory_bytes(step, device, resident)
        out[name] = dict(batch=batch, chunk_size=chunk_size, peak_mem_mb=peak / MB,
                         step_mem_mb=(peak - resident) / MB)
        steps[name] = step
    times = interleaved_timings(steps, 1, warmup=0, synchronize=_sync(device))
    for name in steps:
        out[name]['train_step_ms'] = 1000 * statistics.median(times[name])
    return out


def training(models: Dict[str, TempMeRetriever], args: argparse.Namespace,
             device: torch.device, batch: int, rounds: int, tag: str) -> Dict[str, dict]:
    """Step time and peak memory of one training mode, methods interleaved.

    The memory step comes first and doubles as the warm-up of the timed ones.
    """
    from projects.tempme.profiling import interleaved_timings, median_ratio, peak_memory_bytes
    steps, out = {}, {}
    for m, model in models.items():
        step, resident = _train_step(model, args, device, batch)
        peak = peak_memory_bytes(step, device, resident)
        out[m] = {f'peak_mem_mb_{tag}': peak / MB,
                  f'step_mem_mb_{tag}': (peak - resident) / MB}
        steps[m] = step
    times = interleaved_timings(steps, rounds, warmup=0, synchronize=_sync(device))
    for m in models:
        out[m][f'train_step_ms_{tag}'] = 1000 * statistics.median(times[m])
        out[m][f'train_step_ratio_{tag}'] = median_ratio(times[m], times['plain'])
        for key in (f'peak_mem_mb_{tag}', f'step_mem_mb_{tag}'):
            out[m][key.replace('_mb_', '_ratio_')] = out[m][key] / out['plain'][key]
    return out


def benchmark_geometry(spec: dict, args: argparse.Namespace, device: torch.device,
                       rounds: int, train_rounds: int, train_batch: int,
                       log: Callable[[str], None]) -> Dict[str, dict]:
    """Every figure of the three methods of one geometry."""
    log('  building plain / tome / tempme; counting tokens, GMACs, parameters')
    models = {m: build_model(spec, m, peft=False, seed=args.seed).to(device) for m in METHODS}
    geo = {m: static_figures(model) for m, model in models.items()}
    log(f'  inference latency, batches {tuple(args.batch_sizes)}, {rounds} rounds')
    _merge(geo, latency(models, args, device, rounds))
    if train_batch:
        log(f'  full fine-tuning step, batch {train_batch}, {train_rounds} rounds')
        _merge(geo, training(models, args, device, train_batch, train_rounds, 'full'))
    del models
    gc.collect()
    models = {m: build_model(spec, m, peft=True, seed=args.seed).to(device) for m in METHODS}
    for m, model in models.items():
        geo[m]['trainable_params_peft'] = model.parameter_counts()['trainable']
    if train_batch:
        log(f'  PEFT step, batch {train_batch}, {train_rounds} rounds')
        _merge(geo, training(models, args, device, train_batch, train_rounds, 'peft'))
    del models
    gc.collect()
    for m in METHODS:
        geo[m]['train_batch'] = train_batch
        geo[m]['gmacs_ratio'] = geo[m]['gmacs'] / geo['plain']['gmacs']
        geo[m]['output_tokens_ratio'] = geo[m]['output_tokens'] / geo['plain']['output_tokens']
    return geo


def _merge(into: Dict[str, dict], figures: Dict[str, dict]) -> None:
    for m, values in figures.items():
        into[m].update(values)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    import torch

    import projects.tempme  # noqa: F401  (compatibility fixes + registration)
    from projects.tempme.profiling import resolve_device
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == 'cuda'
    if not cuda:
        keep_freed_memory()
    results, used, grad_cache = {}, {}, None
    for name, spec in geometry_specs(args).items():
        start = time.perf_counter()
        like = spec.get('defaults_of') or name
        batch, rounds, train_rounds = CUDA_DEFAULTS if cuda else CPU_DEFAULTS.get(like, (2, 3, 1))
        why = ('given' if args.train_batch else
               'the CUDA default' if cuda else
               f'the CPU default for {like}' if like in CPU_DEFAULTS else
               'the CPU default for other geometries')
        batch = 0 if args.no_train else (args.train_batch or batch)
        rounds, train_rounds = args.rounds or rounds, args.train_rounds or train_rounds
        used[name] = dict(latency_rounds=rounds, train_rounds=train_rounds, train_batch=batch)
        log(f'[{name}] inference batches {list(args.batch_sizes)}, {rounds} timed rounds; '
            + ('no training figures (--no-train)' if not batch else
               f'training batch {batch} ({why}'
               f'{"" if args.train_batch else "; --train-batch to change"}), '
               f'{train_rounds} timed training rounds'))
        results[name] = benchmark_geometry(spec, args, device, rounds, train_rounds, batch, log)
        if all(args.grad_cache) and not args.no_train and not grad_cache:
            log(f'  gradient caching: TempMe PEFT step on {args.grad_cache[0]} pairs, at once '
                f'and in chunks of {args.grad_cache[1]}')
            grad_cache = dict(geometry=name, **gradient_cache(spec, args, device))
        log(f'[{name}] done in {time.perf_counter() - start:.0f} s')
    return dict(device=describe_device(device), torch=torch.__version__,
                threads=torch.get_num_threads(), machine=platform.machine(),
                processor=_cpu_name(), platform=platform.platform(),
                compiled=args.compile, num_frames=args.num_frames,
                context_length=args.context_length, batch_sizes=list(args.batch_sizes),
                settings=used,
                memory_measure=('torch.cuda.max_memory_allocated' if cuda else
                                'peak live CPU tensor bytes during one step (torch profiler '
                                'allocator events) + parameters, optimizer state and inputs'),
                results=results, grad_cache=grad_cache)


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks up to 32 MB for reuse instead of unmapping them.

    Otherwise every forward pass page-faults its activations in afresh, by an amount
    that depends on which model ran before, which makes CPU timings drift by 10-15%
    with the order of methods. jemalloc or tcmalloc, which PyTorch's CPU tuning guide
    recommends, behave this way by default. Applies to every method alike.
    """
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * MB)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)


def describe_device(device: torch.device) -> str:
    import torch
    if device.type == 'cuda':
        return f'cuda: {torch.cuda.get_device_name(device)}'
    return f'cpu: {_cpu_name()}, {torch.get_num_threads()} threads'


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


# -- reporting ------------------------------------------------------------------------
COLUMNS = [
    ('tokens out', 'output_tokens', '{:d}', 'output_tokens_ratio'),
    ('GMACs/video', 'gmacs', '{:.2f}', 'gmacs_ratio'),
    ('trainable PEFT', 'trainable_params_peft', '{:,}', None),
    ('latency b{small} ms', 'latency_ms_b{small}', '{:.0f}', 'latency_ratio_b{small}'),
    ('latency b{large} ms', 'latency_ms_b{large}', '{:.0f}', 'latency_ratio_b{large}'),
    ('videos/s b{large}', 'videos_per_s_b{large}', '{:.1f}', None),
    ('train full ms', 'train_step_ms_full', '{:.0f}', 'train_step_ratio_full'),
    ('peak mem full MB', 'peak_mem_mb_full', '{:.0f}', 'peak_mem_ratio_full'),
    ('step mem full MB', 'step_mem_mb_full', '{:.0f}', 'step_mem_ratio_full'),
    ('train PEFT ms', 'train_step_ms_peft', '{:.0f}', 'train_step_ratio_peft'),
    ('peak mem PEFT MB', 'peak_mem_mb_peft', '{:.0f}', 'peak_mem_ratio_peft'),
    ('step mem PEFT MB', 'step_mem_mb_peft', '{:.0f}', 'step_mem_ratio_peft'),
]


def markdown(report: dict) -> str:
    small, large = report['batch_sizes']
    cols = [(title.format(small=small, large=large), key.format(small=small, large=large), fmt,
             ratio and ratio.format(small=small, large=large))
            for title, key, fmt, ratio in COLUMNS]
    lines = [f'device: {report["device"]}; torch {report["torch"]}; {report["threads"]} '
             f'threads; {report["num_frames"]} frames; compiled: {report["compiled"]}',
             'latency and step time: medians over interleaved rounds (plain, tome, tempme, '
             'plain, ...); ratios in brackets are medians of per-round ratios to plain CLIP',
             f'peak memory: {report["memory_measure"]}; step memory: the part of it above '
             'what is held between steps (activations, gradients, temporaries)', '']
    for name, geo in report['results'].items():
        present = [c for c in cols if c[1] in geo['plain']]
        used = report['settings'][name]
        lines.append(f'### {name}, {geo["plain"]["image_size"]} px, '
                     f'{used["latency_rounds"]} inference rounds'
                     + (f', training batch {used["train_batch"]}, {used["train_rounds"]} timed '
                        'training rounds' if used['train_batch'] else ''))
        lines.append('')
        lines.append('| method | ' + ' | '.join(c[0] for c in present) + ' |')
        lines.append('|---' * (len(present) + 1) + '|')
        for m in METHODS:
            cells = []
            for _, key, fmt, ratio in present:
                cell = fmt.format(geo[m][key])
                if ratio and m != 'plain':
                    cell += f' ({geo[m][ratio]:.2f}x)'
                cells.append(cell)
            lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
        lines.append('')
        lines.append('tokens per video after each layer: ' + '; '.join(
            f'{m} {geo[m]["input_tokens"]} -> ' + ' '.join(map(str, geo[m]['tokens_per_layer']))
            for m in METHODS))
        lines.append('')
    cache = report.get('grad_cache')
    if cache:
        rows = [(k, v) for k, v in cache.items() if isinstance(v, dict)]
        lines += [f'### gradient caching, TempMe PEFT step, {cache["geometry"]}', '',
                  '| step | batch | peak mem MB | step mem MB | step ms |', '|---|---|---|---|---|']
        base = rows[0][1]
        for name, row in rows:
            ratio = ('' if row is base else
                     f' ({row["step_mem_mb"] / base["step_mem_mb"]:.2f}x)')
            lines.append(f'| {name} | {row["batch"]} | {row["peak_mem_mb"]:.0f} | '
                         f'{row["step_mem_mb"]:.0f}{ratio} | {row["train_step_ms"]:.0f} |')
        lines.append('')
    return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
    """Save :func:`chart` as a PNG."""
    import matplotlib.pyplot as plt
    fig = chart(report)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart(report: dict):
    """One panel per geometry: every ratio to plain CLIP, for ToMe and TempMe."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    small, large = report['batch_sizes']
    metrics = [('GMACs', 'gmacs_ratio'), (f'latency b{small}', f'latency_ratio_b{small}'),
               (f'latency b{large}', f'latency_ratio_b{large}'),
               ('train full', 'train_step_ratio_full'), ('mem full', 'peak_mem_ratio_full'),
               ('step mem full', 'step_mem_ratio_full'), ('train PEFT', 'train_step_ratio_peft'),
               ('mem PEFT', 'peak_mem_ratio_peft'), ('step mem PEFT', 'step_mem_ratio_peft')]
    geos = list(report['results'].items())
    fig, axes = plt.subplots(1, len(geos), figsize=(6 * len(geos), 4), squeeze=False)
    for ax, (name, geo) in zip(axes[0], geos):
        present = [(label, key) for label, key in metrics if key in geo['tempme']]
        xs = range(len(present))
        width = 0.38
        for i, m in enumerate(('tome', 'tempme')):
            values = [geo[m][key] for _, key in present]
            bars = ax.bar([x + (i - 0.5) * width for x in xs], values, width, label=m)
            ax.bar_label(bars, fmt='%.2f', fontsize=7)
        ax.axhline(1.0, color='k', lw=0.8, ls='--', label='plain CLIP')
        ax.set_xticks(list(xs), [label for label, _ in present], rotation=30, ha='right')
        ax.set_title(name)
        ax.set_ylabel('ratio to plain CLIP (lower is better)')
        # room above the tallest bar for its label and for the legend
        tallest = max([geo[m][key] for m in ('tome', 'tempme') for _, key in present] + [1.0])
        ax.set_ylim(0, max(1.35, 1.25 * tallest))
        ax.legend(fontsize=8, loc='upper right', ncol=3)
    fig.suptitle(f'{report["device"]}, torch {report["torch"]}', fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from projects.tempme.known_warnings import ignore_known_warnings
    with ignore_known_warnings():
        report = run_benchmark(args, log=lambda msg: print(msg, flush=True))
    print(markdown(report))
    if args.out:
        from projects.tempme_deploy.fileio import atomic_write
        atomic_write(args.out, lambda tmp: _dump(report, tmp))
        print(f'results written to {args.out}')
    chart = args.plot or (osp.splitext(args.out)[0] + '.png' if args.out else None)
    if chart:
        plot(report, chart)
        print(f'chart written to {chart}')
    return report


def _dump(report: dict, path: str) -> None:
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    run_tool(main)
