"""Deployment speed: PyTorch eager vs ONNX Runtime, plain CLIP vs TempMe, and the search
service under concurrent clients.

Example::

    python tools/analysis/benchmark_deploy.py --out work_dirs/deploy_bench

For the config's geometry with random CLIP weights (no weight file needed), exports plain
CLIP (no merging) and TempMe with ``tools/deployment/export_onnx.py``'s code (each
export passes its ONNX Runtime parity check), then times, interleaved in one run:

* the video encoder (uint8 frames -> embedding) at each ``--batches`` size;
* a text query (one caption -> embedding, tokenizer included on both sides);

in PyTorch eager and in ONNX Runtime, and reports ratios within the same rounds next to
the GMACs ratio, and TempMe's int8 copy (``export_onnx.py --int8``) next to them.
Profiled calls of both backends split TempMe's video time into matrix products and the
rest, which bounds what any exact float32 backend can gain. Then it serves a
``--index-size``-video index of random embeddings with ``serve_search.py`` over the
float32 and the int8 export and measures request latency (p50 / p99) with ``--clients``
concurrent HTTP clients. Writes ``results.json``, ``results.md``
and ``results.png`` into ``--out``.
"""
import argparse
import http.client
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from projects.tempme.apis.inference import caption_context_length, init_retriever
from projects.tempme.datasets.transforms import tokenize_captions
from projects.tempme.deployment import (TextEmbedder, VideoEmbedder, deployable_model, export_onnx,
                                        quantize_export)
from projects.tempme.known_warnings import ignore_known_warnings
from projects.tempme.profiling import interleaved_timings, median_ratio, video_gmacs
from projects.tempme_deploy.onnx_retriever import OnnxRetriever
from projects.tempme_deploy.search import FileStat, VideoIndex

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: plain CLIP: the same encoder with nothing merged
PLAIN = {'model.video_encoder.merge': 'none'}
QUERY = 'a man in a red shirt is playing a guitar on stage'
#: TempMe's export quantized to int8 (``export_onnx.py --int8``), in ONNX Runtime
INT8 = 'tempme/onnxruntime-int8'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='configs/tempme_msrvtt.py',
                        help='config whose geometry and schedule are measured')
    parser.add_argument('--out', default='work_dirs/deploy_bench', help='output folder')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8],
                        help='video batch sizes timed')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds per measurement')
    parser.add_argument('--index-size', type=int, default=10000,
                        help='videos in the served index (random embeddings)')
    parser.add_argument('--clients', type=int, default=8, help='concurrent HTTP clients')
    parser.add_argument('--requests', type=int, default=400, help='requests in the load test')
    parser.add_argument('--skip-service', action='store_true', help='no load test')
    return parser.parse_args(argv)


def _latencies(models, sessions, args, log) -> Dict:
    """Seconds per call, interleaved over (method x backend) for each workload."""
    shape = sessions['tempme'].frames_shape
    figures = {}
    for batch in args.batches:
        frames = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(batch))
        array = frames.numpy()
        fns = {}
        for method in models:
            module = models[method]['video']
            fns[f'{method}/eager'] = lambda m=module: _no_grad(m, frames)
            fns[f'{method}/onnxruntime'] = lambda s=sessions[method]: s.encode_videos(array)
        fns[INT8] = lambda s=sessions[INT8]: s.encode_videos(array)
        log(f'  video encoder, batch {batch}: {args.rounds} interleaved rounds')
        figures[f'video_b{batch}'] = interleaved_timings(fns, args.rounds)
    fns = {}
    for method in models:
        context = caption_context_length(models[method]['loaded'].cfg)
        fns[f'{method}/eager'] = lambda m=models[method]['text'], c=context: _no_grad(
            m, tokenize_captions([QUERY], c))
        fns[f'{method}/onnxruntime'] = lambda s=sessions[method]: s.encode_texts([QUERY])
    fns[INT8] = lambda s=sessions[INT8]: s.encode_texts([QUERY])
    log(f'  text query: {args.rounds * 4} interleaved rounds')
    figures['text_query'] = interleaved_timings(fns, args.rounds * 4)
    return figures


#: Operators that are matrix products (the patch embedding's convolution included): the
#: work both backends hand to a GEMM library, and most of the time of a ViT on a CPU.
MATRIX_OPS = {'eager': ('aten::addmm', 'aten::mm', 'aten::bmm', 'aten::mkldnn_convolution'),
              'onnxruntime': ('MatMul', 'FusedMatMul', 'Gemm', 'Conv')}


def eager_profile(module: torch.nn.Module,
                  frames: torch.Tensor) -> Tuple[Dict[str, float], float]:
    """(self CPU ms per aten operator, wall ms) of one profiled call."""
    with torch.no_grad(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        module(frames)
        wall = (time.perf_counter() - start) * 1e3
    return {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}, wall


def onnxruntime_profile_runs(events: List[Dict]) -> List[Tuple[Dict[str, float], float]]:
    """(kernel ms per operator type, wall ms) of each ``model_run`` of an ONNX Runtime
    profile, in order."""
    runs = sorted((e for e in events if e.get('cat') == 'Session' and e['name'] == 'model_run'),
                  key=lambda e: e['ts'])
    if not runs:
        raise ValueError('the ONNX Runtime profile holds no model_run')
    found = []
    for run in runs:
        totals: Dict[str, float] = {}
        for event in events:
            if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time') and \
                    run['ts'] <= event['ts'] <= run['ts'] + run['dur']:
                op = event['args']['op_name']
                totals[op] = totals.get(op, 0.0) + event['dur'] / 1e3
        found.append((dict(sorted(totals.items(), key=lambda kv: -kv[1])), run['dur'] / 1e3))
    return found


def time_split(operator_ms: Dict[str, float], matrix_ops: Sequence[str],
               wall_ms: float) -> Dict[str, float]:
    """Wall, matrix-product and other milliseconds of one profiled call (other: everything
    but the matrix products, Python and scheduling included)."""
    matrix = sum(ms for op, ms in operator_ms.items() if op in matrix_ops)
    return dict(total_ms=wall_ms, matrix_ms=matrix, other_ms=wall_ms - matrix)


def _median_call(splits: List[Dict[str, float]]) -> Dict[str, float]:
    return sorted(splits, key=lambda split: split['total_ms'])[len(splits) // 2]


def _breakdown(module: torch.nn.Module, export_dir: str, frames_shape, batches: Sequence[int],
               rounds: int, log) -> Dict:
    """Where TempMe's video encoder spends its time, per backend and batch size: profiled
    calls of both backends in alternation (as the timing), the call of median wall time.

    ``ceiling`` is eager's total over eager's matrix-product time: how much faster than
    eager an exact float32 backend can be if its matrix products are as fast as
    PyTorch's and everything else costs nothing.
    """
    import onnxruntime as ort
    report = {}
    for batch in batches:
        frames = torch.randint(0, 256, (batch, *frames_shape), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(batch))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.enable_profiling = True
        options.profile_file_prefix = osp.join(export_dir, 'ort_profile')
        session = ort.InferenceSession(osp.join(export_dir, 'video_encoder.onnx'), options,
                                       providers=['CPUExecutionProvider'])
        log(f'  batch {batch}: {rounds} profiled calls per backend, interleaved')
        session.run(None, {'frames': frames.numpy()})  # allocates: not counted
        _no_grad(module, frames)
        eager = []
        for _ in range(rounds):
            operators, wall = eager_profile(module, frames)
            eager.append(time_split(operators, MATRIX_OPS['eager'], wall))
            session.run(None, {'frames': frames.numpy()})
        path = session.end_profiling()
        with open(path) as f:
            runs = onnxruntime_profile_runs(json.load(f))[1:]
        os.remove(path)
        runtime = [time_split(ops, MATRIX_OPS['onnxruntime'], wall) for ops, wall in runs]
        median = _median_call(runtime)
        operators = runs[runtime.index(median)][0]
        eager_median = _median_call(eager)
        report[f'video_b{batch}'] = dict(
            eager=eager_median, onnxruntime=median,
            ceiling=eager_median['total_ms'] / eager_median['matrix_ms'],
            onnxruntime_operators={op: ms / median['total_ms'] for op, ms in operators.items()})
    return report


def _no_grad(module, frames):
    with torch.no_grad():
        return module(frames)


def _summarise(times: Dict[str, Dict[str, List[float]]], gmacs: Dict[str, float]) -> Dict:
    report = {}
    for workload, runs in times.items():
        row = {name: statistics.median(values) * 1e3 for name, values in runs.items()}
        ratios = {
            'tempme_onnxruntime_speedup_over_eager': median_ratio(
                runs['tempme/eager'], runs['tempme/onnxruntime']),
            'plain_onnxruntime_speedup_over_eager': median_ratio(
                runs['plain/eager'], runs['plain/onnxruntime']),
            'tempme_over_plain_onnxruntime': median_ratio(
                runs['tempme/onnxruntime'], runs['plain/onnxruntime']),
            'tempme_over_plain_eager': median_ratio(runs['tempme/eager'], runs['plain/eager']),
            'tempme_int8_speedup_over_eager': median_ratio(runs['tempme/eager'], runs[INT8]),
            'tempme_int8_speedup_over_float32': median_ratio(runs['tempme/onnxruntime'],
                                                             runs[INT8]),
        }
        report[workload] = dict(ms=row, **ratios)
    report['gmacs'] = dict(gmacs, ratio=gmacs['tempme'] / gmacs['plain'])
    return report


def _load_test(export_dir: str, out: str, args, log) -> Dict:
    """Serve a random index over HTTP and time requests from concurrent clients."""
    info = OnnxRetriever(export_dir, load_video=False)
    dim = info.info['text']['dim']
    rng = np.random.default_rng(0)
    index_dir = osp.join(out, 'index')
    files = [FileStat(f'/videos/{i:06d}.mp4', 1, 1) for i in range(args.index_size)]
    index = VideoIndex(index_dir, info.description(), files,
                       rng.standard_normal((args.index_size, dim)).astype(np.float32))
    index.save()
    proc = subprocess.Popen(
        [sys.executable, osp.join(ROOT, 'tools/deployment/serve_search.py'), index_dir,
         '--export', export_dir, '--port', '0'], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if 'serving' not in line:
            raise RuntimeError(f'the service did not start: {line}')
        url = urllib.parse.urlsplit(line.split(' on ')[1].split()[0])
        words = QUERY.split()
        local = threading.local()

        def request(i: int) -> float:
            # one kept-alive connection per client thread, as an HTTP client library keeps
            if not hasattr(local, 'connection'):
                local.connection = http.client.HTTPConnection(url.hostname, url.port,
                                                              timeout=60)
            query = ' '.join(words[i % len(words):] + words[:i % len(words)]) + f' {i}'
            start = time.perf_counter()
            local.connection.request('GET', '/search?' + urllib.parse.urlencode(
                dict(q=query, k=10)))
            response = local.connection.getresponse()
            hits = json.loads(response.read())
            elapsed = time.perf_counter() - start
            if response.status != 200 or len(hits) != 10:
                raise RuntimeError(f'expected 10 hits, got {response.status}: {hits}')
            return elapsed

        for i in range(args.clients):  # warm-up
            request(i)
        log(f'  {args.requests} requests from {args.clients} concurrent clients over '
            f'{args.index_size} videos')
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = list(tqdm(pool.map(request, range(args.requests)),
                                  total=args.requests, unit='query', file=sys.stderr))
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ms = np.array(latencies) * 1e3
    return dict(index_size=args.index_size, clients=args.clients, requests=args.requests,
                p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)),
                max_ms=float(ms.max()), queries_per_s=args.requests / wall)


def markdown(report: Dict) -> str:
    lines = [f'device: cpu ({torch.get_num_threads()} threads for PyTorch and ONNX Runtime); '
             f'config {report["config"]}, random weights; median ms over '
             f'{report["rounds"]} interleaved rounds', '',
             '| workload | plain eager | plain ORT | TempMe eager | TempMe ORT | '
             'TempMe ORT vs eager | TempMe / plain (ORT) | GMACs ratio | TempMe ORT int8 | '
             'int8 vs eager | int8 vs ORT float32 |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    gmacs = report['latency']['gmacs']
    for workload, row in report['latency'].items():
        if workload == 'gmacs':
            continue
        ms = row['ms']
        lines.append(
            f'| {workload} | {ms["plain/eager"]:.1f} | {ms["plain/onnxruntime"]:.1f} | '
            f'{ms["tempme/eager"]:.1f} | {ms["tempme/onnxruntime"]:.1f} | '
            f'{row["tempme_onnxruntime_speedup_over_eager"]:.2f}x faster | '
            f'{row["tempme_over_plain_onnxruntime"]:.3f} | '
            + (f'{gmacs["ratio"]:.3f} | ' if workload.startswith('video') else '- | ')
            + f'{ms[INT8]:.1f} | {row["tempme_int8_speedup_over_eager"]:.2f}x faster | '
            f'{row["tempme_int8_speedup_over_float32"]:.2f}x faster |')
    parity = report['parity']
    checks = [f'{m}: max abs diff {p["video"]["max_abs_diff"]:.1e}, min cosine '
              f'{p["video"]["min_cosine"]:.6f}, {len(p["video"]["flips"])} flips; text '
              f'{p["text"]["max_abs_diff"]:.1e}' for m, p in parity.items() if m != 'int8']
    int8 = parity['int8']
    lines += ['', 'export parity (ONNX Runtime vs PyTorch, 8 random videos and 1 alone): '
              + ', '.join(checks) + f'; int8: embedding cosine >= {int8["video_min_cosine"]:.6f} '
              f'(video), >= {int8["text_min_cosine"]:.6f} (text)']
    lines += ['', 'where TempMe\'s video encoder spends its time (profiled calls of both '
              'backends in alternation, the median one; matrix products: GEMMs and the patch '
              'convolution; other: the rest of the wall time):', '',
              '| workload | eager: matrix / other ms | ORT: matrix / other ms | '
              'ceiling over eager | ORT operators |', '|---|---|---|---|---|']
    for workload, row in report['breakdown'].items():
        eager, runtime = row['eager'], row['onnxruntime']
        operators = ', '.join(f'{op} {share:.0%}'
                              for op, share in list(row['onnxruntime_operators'].items())[:5])
        lines.append(f'| {workload} | {eager["matrix_ms"]:.0f} / {eager["other_ms"]:.0f} | '
                     f'{runtime["matrix_ms"]:.0f} / {runtime["other_ms"]:.0f} | '
                     f'{row["ceiling"]:.2f}x | {operators} |')
    lines += ['', 'ceiling: eager total / eager matrix-product time, the most an exact float32 '
              'backend with PyTorch\'s matrix-product speed can gain over eager']
    for precision, s in (report.get('service') or {}).items():
        lines += ['', f'search service ({precision} export): {s["index_size"]} videos, '
                  f'{s["clients"]} concurrent clients, {s["requests"]} requests: p50 '
                  f'{s["p50_ms"]:.1f} ms, p99 {s["p99_ms"]:.1f} ms, max {s["max_ms"]:.1f} ms, '
                  f'{s["queries_per_s"]:.1f} queries/s']
    return '\n'.join(lines) + '\n'


def plot(report: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    workloads = [w for w in report['latency'] if w != 'gmacs']
    names = ['plain/eager', 'plain/onnxruntime', 'tempme/eager', 'tempme/onnxruntime', INT8]
    fig, (ax, split) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110,
                                    gridspec_kw=dict(width_ratios=[3, 2]))
    width = 0.16
    for j, name in enumerate(names):
        values = [report['latency'][w]['ms'][name] for w in workloads]
        ax.bar(np.arange(len(workloads)) + (j - 2) * width, values, width, label=name)
    ax.set_xticks(np.arange(len(workloads)), workloads)
    ax.set_ylabel('ms per call (median)')
    ax.set_yscale('log')
    ax.legend(fontsize=8)
    ax.set_title('PyTorch eager vs ONNX Runtime, plain CLIP vs TempMe (CPU)', fontsize=9)
    # TempMe's time split, as a share of eager's total at the same batch size
    rows = report['breakdown']
    for i, (workload, row) in enumerate(rows.items()):
        scale = row['eager']['total_ms']
        for j, backend in enumerate(('eager', 'onnxruntime')):
            x = i + (j - 0.5) * 0.35
            matrix, other = row[backend]['matrix_ms'] / scale, row[backend]['other_ms'] / scale
            split.bar(x, matrix, 0.3, color='tab:blue' if j else 'tab:gray',
                      label=f'{backend}: matrix products' if not i else None)
            split.bar(x, other, 0.3, bottom=matrix, color='tab:orange' if j else 'silver',
                      label=f'{backend}: other' if not i else None)
    split.axhline(1 / 1.3, color='k', ls='--', lw=0.8, label='1.3x faster than eager')
    split.set_xticks(np.arange(len(rows)), list(rows))
    split.set_ylabel('time / eager total')
    split.legend(fontsize=7, loc='lower right')
    split.set_title('TempMe video encoder: where the time goes', fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    log = print
    models, sessions, parity, gmacs = {}, {}, {}, {}
    for method, options in (('plain', PLAIN), ('tempme', {})):
        log(f'{method}: building with random weights, exporting and checking')
        loaded = init_retriever(args.config,
                                cfg_options={'model.clip.weights': None, **options})
        deployed = deployable_model(loaded.model)
        encoder = deployed.video_encoder
        gmacs[method] = video_gmacs(encoder)
        export_dir = osp.join(args.out, method)
        parity[method] = export_onnx(loaded, export_dir, log=lambda m: log(f'  {m}'))['parity']
        models[method] = dict(loaded=loaded, video=VideoEmbedder(deployed).eval(),
                              text=TextEmbedder(deployed).eval())
        sessions[method] = OnnxRetriever(export_dir)
    log('tempme: an int8 copy of the export')
    int8 = quantize_export(models['tempme']['loaded'], osp.join(args.out, 'tempme'),
                           osp.join(args.out, 'tempme_int8'), log=lambda m: log(f'  {m}'))
    parity['int8'] = int8['parity']['int8']
    sessions[INT8] = OnnxRetriever(osp.join(args.out, 'tempme_int8'))
    log('timing')
    times = _latencies(models, sessions, args, log)
    log('profiling TempMe\'s video encoder in both backends')
    breakdown = _breakdown(models['tempme']['video'], osp.join(args.out, 'tempme'),
                           sessions['tempme'].frames_shape, args.batches, 3, log)
    report = dict(config=args.config, rounds=args.rounds, parity=parity, breakdown=breakdown,
                  latency=_summarise(times, gmacs), raw_seconds=times)
    if not args.skip_service:
        report['service'] = {}
        for precision, folder in (('float32', 'tempme'), ('int8', 'tempme_int8')):
            log(f'search service load test, {precision} export')
            report['service'][precision] = _load_test(osp.join(args.out, folder), args.out,
                                                      args, log)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(text)
    plot(report, osp.join(args.out, 'results.png'))
    print(text)
    print(f'written: {osp.join(args.out, "results.json")}, results.md, results.png')
    return report


if __name__ == '__main__':
    with ignore_known_warnings():
        main()
