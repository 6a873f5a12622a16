"""Deployment: ONNX export checked in ONNX Runtime, the torch-free tokenizer and query
path, and the HTTP search service (started for real, queried over HTTP)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from projects.tempme.apis.inference import (VideoReader, describe, encode_texts, encode_videos,
                                            init_retriever, model_fingerprint)
from projects.tempme.datasets.transforms import clip_tokenizer, tokenize_captions
from projects.tempme.deployment import (ExportParityError, VideoEmbedder, deployable_model,
                                        export_onnx, merge_margins, onnx_export, quantize_export)
from projects.tempme.deployment.parity import compare_embeddings
from projects.tempme.merging.matching import bipartite_soft_matching, decision_margins, merge_wavg
from projects.tempme_deploy.onnx_retriever import ExportFormatError, OnnxRetriever
from projects.tempme_deploy.search import VideoIndex
from projects.tempme_deploy.service import RequestBatcher
from projects.tempme_deploy.tokenizer import ClipTokenizer, clip_tokenizer_json
from tests.conftest import write_circle_video
from tools import search as search_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/tempme_tiny.py'


def _small(layers, **encoder):
    """cfg-options for a tiny CLIP with ``layers`` vision blocks and the given schedule."""
    return {'model.clip.arch.vision_cfg.layers': layers,
            **{f'model.video_encoder.{k}': v for k, v in encoder.items()}}


NO_MERGING = _small(4, merge='none')
TOME_ONLY = _small(4, merge='tome', imgme_r=4)
OTHER_SCHEDULE = _small(5, merge_layers=(2, 3), clips_per_merge=(3, 2), imgme_r=3,
                        cross_clip_ratio=0.2, intra_clip_ratio=0.15)


@pytest.fixture(scope='module')
def tiny_export(tmp_path_factory):
    """configs/tempme_tiny.py (default schedule) exported once for the module."""
    out = tmp_path_factory.mktemp('export') / 'tiny'
    loaded = init_retriever(CONFIG)
    info = export_onnx(loaded, str(out), log=lambda _: None)
    return loaded, str(out), info


# -- pure pieces --------------------------------------------------------------------------
def _on_circle(src, dst):
    """Tokens [s0, d0, s1, d1, ...] at these angles: num_cls=0 makes s* sources."""
    angles = [a for pair in zip(src, dst) for a in pair]
    return torch.tensor([[np.cos(a), np.sin(a)] for a in angles], dtype=torch.float64)[None]


def test_decision_margin_is_the_gap_that_would_flip_the_merge():
    delta = 1e-3
    dst = (0.0, 1.0, 3.0)
    metric = _on_circle((0.05, 0.6, 0.6 + delta), dst)
    # r=2 merges s0 (onto d0) and s2 (onto d1, just ahead of s1): the closest call is
    # s2 vs s1 for the second place, cos(0.4 - delta) - cos(0.4)
    margin = decision_margins(metric, r=2, num_cls=0).item()
    assert margin == pytest.approx(np.cos(0.4 - delta) - np.cos(0.4), rel=1e-9)
    before = bipartite_soft_matching(metric, 2, 0).keep
    # moving s1 closer than the margin allows keeps the decision; past it, it flips
    assert torch.equal(bipartite_soft_matching(
        _on_circle((0.05, 0.6 + delta / 2, 0.6 + delta), dst), 2, 0).keep, before)
    assert not torch.equal(bipartite_soft_matching(
        _on_circle((0.05, 0.6 + 2 * delta, 0.6 + delta), dst), 2, 0).keep, before)
    # a merged source torn between two destinations: that gap is the margin
    torn = _on_circle((0.5, 2.2, 1.8), (0.0, 1.0 + delta, 3.0))
    assert decision_margins(torn, r=1, num_cls=0).item() == pytest.approx(
        np.cos(0.5) - np.cos(0.5 + delta), rel=1e-9)
    assert torch.isinf(decision_margins(metric, r=0, num_cls=0)).all()


class _Merge(torch.nn.Module):
    def forward(self, metric):
        merge = bipartite_soft_matching(metric, 50, 2)
        return merge_wavg(merge, metric, torch.ones_like(metric[..., :1]))[0]


def test_merged_sums_are_exact_in_onnxruntime_run_after_run(tmp_path):
    # Many tokens joining few destinations, wide features, several threads: the pattern on
    # which an accumulating ScatterND lost updates in ONNX Runtime (layer 10 of ViT-B/32).
    import onnxruntime as ort
    metric = torch.randn(8, 168, 768, generator=torch.Generator().manual_seed(0))
    metric[:, 2::2] += 3 * metric[:, 3:4]  # sources crowd onto one destination
    path = str(tmp_path / 'merge.onnx')
    torch.onnx.export(_Merge(), (metric,), dynamo=True, verbose=False).save(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 4
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    expected = _Merge()(metric).numpy()
    for _ in range(8):
        out = session.run(None, {'metric': metric.numpy()})[0]
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_compare_accepts_a_flip_only_near_a_merge_boundary_and_with_cosine():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 16))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = ref.copy()
    out[1] += 1e-3  # a flip-sized difference: cosine still > 0.9999
    out[2] += 1e-3
    rows = compare_embeddings(ref, out, np.array([0.5, 1e-5, 0.5]),
                              ['', 'layer 9 cross-clip', 'layer 3 ImgMe'])
    assert [r.ok for r in rows] == [True, True, False]
    assert rows[1].flip == 'layer 9 cross-clip: decision margin 1.00e-05'
    assert rows[2].flip is None  # far from any boundary: a real difference
    far = ref.copy()
    far[1] = -ref[1]
    assert not compare_embeddings(ref, far, np.array([0, 1e-5, 0]), ['', 'x', ''])[1].ok


def test_lean_tokenizer_equals_the_training_tokenizer():
    st = clip_tokenizer()
    tokenizer = ClipTokenizer(clip_tokenizer_json(st.encoder, list(st.bpe_ranks)), 32)
    texts = ['a man is talking about a car', 'A DOG   runs\tacross the yard!!',
             "it's the 2nd time he's done it, isn't it?", 'café &amp; crème brûlée',
             'x', '日本語のテキスト 123', 'emoji 😀 test', 'â€™ mojibake', '<end_of_text> inside',
             'hyphen-ated, semi;colons: (paren) "quotes"', 'word ' * 40]
    np.testing.assert_array_equal(tokenizer(texts), tokenize_captions(texts, 32).numpy())


# -- export -------------------------------------------------------------------------------
def test_tiny_export_matches_pytorch_through_the_lean_runtime(tiny_export):
    loaded, out, info = tiny_export
    assert sorted(os.listdir(out)) == ['deploy.json', 'text_encoder.onnx', 'tokenizer.json',
                                       'video_encoder.onnx']
    assert info['model']['fingerprint'] == model_fingerprint(loaded)
    assert info['video']['shape'] == ['batch', 12, 3, 112, 112]
    assert info['parity']['video']['max_abs_diff'] <= 1e-4
    assert info['parity']['text']['max_abs_diff'] <= 1e-4
    assert info['schedule']['tokens_per_layer'] == \
        loaded.encoder.schedule.tokens_per_video()
    # new inputs, another batch size, the lean tokenizer: still PyTorch's embeddings
    retriever = OnnxRetriever(out)
    videos = torch.randint(0, 256, (3, 12, 3, 112, 112), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(retriever.encode_videos(videos.numpy()),
                               encode_videos(loaded, list(videos)).numpy(), atol=1e-4)
    captions = ['a red circle moves right', 'two dogs', 'the same caption ' * 9]
    np.testing.assert_allclose(retriever.encode_texts(captions),
                               encode_texts(loaded, captions).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match=r'uint8 \(batch, 12, 3, 112, 112\)'):
        retriever.encode_videos(videos[:, :8].numpy())


def test_time_breakdown_splits_matrix_products_from_the_rest_in_both_backends(tiny_export):
    from tools.analysis.benchmark_deploy import (MATRIX_OPS, _breakdown, eager_profile,
                                                 onnxruntime_profile_runs, time_split)
    loaded, out, _ = tiny_export
    module = VideoEmbedder(deployable_model(loaded.model)).eval()
    frames = torch.randint(0, 256, (2, 12, 3, 112, 112), dtype=torch.uint8)
    operators, wall = eager_profile(module, frames)
    assert {'aten::addmm', 'aten::mkldnn_convolution'} <= set(operators)
    split = time_split(operators, MATRIX_OPS['eager'], wall)
    assert 0 < split['matrix_ms'] < split['total_ms'] == wall
    assert split['matrix_ms'] + split['other_ms'] == pytest.approx(wall)

    report = _breakdown(module, out, (12, 3, 112, 112), [2], 3, log=lambda _: None)['video_b2']
    for backend in ('eager', 'onnxruntime'):
        assert 0 < report[backend]['matrix_ms'] < report[backend]['total_ms']
    assert report['ceiling'] == pytest.approx(
        report['eager']['total_ms'] / report['eager']['matrix_ms'])
    assert {'MatMul', 'Conv'} <= set(report['onnxruntime_operators'])
    assert sum(report['onnxruntime_operators'].values()) <= 1
    assert not [f for f in os.listdir(out) if f.startswith('ort_profile')]

    # each run of a profile apart, in order: the kernels inside its window
    def node(op, ts, dur):
        return dict(cat='Node', name=f'{op}_kernel_time', ts=ts, dur=dur,
                    args=dict(op_name=op))
    events = [dict(cat='Session', name='model_run', ts=200, dur=100), node('MatMul', 210, 30),
              node('Add', 250, 20), dict(cat='Session', name='model_run', ts=0, dur=100),
              node('MatMul', 10, 90)]
    assert onnxruntime_profile_runs(events) == [({'MatMul': 0.09}, 0.1),
                                                ({'MatMul': 0.03, 'Add': 0.02}, 0.1)]
    with pytest.raises(ValueError, match='no model_run'):
        onnxruntime_profile_runs(events[1:3])


@pytest.mark.parametrize('options', [NO_MERGING, TOME_ONLY, OTHER_SCHEDULE],
                         ids=['no-merging', 'tome-only', 'other-schedule'])
def test_other_schedules_export_within_tolerance(tmp_path, options):
    loaded = init_retriever(CONFIG, cfg_options=options)
    info = export_onnx(loaded, str(tmp_path / 'out'), check_batch=4, log=lambda _: None)
    assert info['parity']['video']['max_abs_diff'] <= 1e-4 or info['parity']['video']['flips']
    assert info['parity']['video']['min_cosine'] >= 0.9999
    tokens = info['schedule']['tokens_per_layer']
    assert (len(set(tokens)) == 1) == (options is NO_MERGING)
    assert tokens == loaded.encoder.schedule.tokens_per_video()
    videos = torch.randint(0, 256, (2, 12, 3, 112, 112), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(9))
    exported = OnnxRetriever(str(tmp_path / 'out')).encode_videos(videos.numpy())
    eager = encode_videos(loaded, list(videos)).numpy()
    assert (np.einsum('bd,bd->b', exported, eager) >= 0.9999).all()


def test_merge_margins_name_each_merge_of_the_schedule():
    loaded = init_retriever(CONFIG)
    video = torch.randn(2, 12, 3, 112, 112)
    margins, where = merge_margins(loaded.encoder, video)
    assert margins.shape == (2,) and np.isfinite(margins).all() and (margins >= 0).all()
    assert all(w.startswith('layer ') for w in where)
    assert np.isinf(merge_margins(init_retriever(CONFIG, cfg_options=NO_MERGING).encoder,
                                  video)[0]).all()


def test_int8_export_is_quantized_checked_by_cosine_and_served_by_the_lean_runtime(
        tiny_export, tmp_path, monkeypatch):
    """The int8 step of ``export_onnx(int8=True)``, here on the module's float32 export."""
    import onnx
    loaded, source, fp32 = tiny_export
    out = tmp_path / 'int8'
    info = quantize_export(loaded, source, str(out), log=lambda _: None)
    assert info['precision'] == 'int8' and fp32['precision'] == 'float32'
    assert info['parity']['video'] == fp32['parity']['video']  # the float32 check came first
    report = info['parity']['int8']
    assert min(report['video_min_cosine'], report['text_min_cosine']) >= \
        onnx_export.INT8_MIN_COSINE
    for name in ('video_encoder.onnx', 'text_encoder.onnx'):
        ops = [node.op_type for node in onnx.load(str(out / name)).graph.node]
        assert ops.count('MatMulInteger') >= 4 * 2, name  # every linear layer's product
    retriever = OnnxRetriever(str(out))
    assert retriever.precision == 'int8' and retriever.description()['precision'] == 'int8'
    assert retriever.fingerprint == OnnxRetriever(source).fingerprint
    videos = torch.randint(0, 256, (3, 12, 3, 112, 112), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(7))
    captions = ['a red circle moves right', 'two dogs']
    for exported, reference in (
            (retriever.encode_videos(videos.numpy()), encode_videos(loaded, list(videos))),
            (retriever.encode_texts(captions), encode_texts(loaded, captions))):
        assert (exported * reference.numpy()).sum(-1).min() >= onnx_export.INT8_MIN_COSINE
        assert np.abs(exported - reference.numpy()).max() > 1e-4  # approximate, not exact
    # only a float32 export of the same model is quantized
    with pytest.raises(ValueError, match='not a float32 export of this model'):
        quantize_export(loaded, str(out), str(tmp_path / 'again'), log=lambda _: None)
    other = init_retriever(CONFIG, cfg_options=NO_MERGING)
    with pytest.raises(ValueError, match='not a float32 export of this model'):
        quantize_export(other, source, str(tmp_path / 'again'), log=lambda _: None)
    # below the gate: refused, naming the embeddings, and nothing is written
    monkeypatch.setattr(onnx_export, 'INT8_MIN_COSINE', 1.01)
    with pytest.raises(ExportParityError, match=r'int8 export is further from PyTorch than '
                       r'cosine 1.01:\n  video 0: cosine 0\.9'):
        quantize_export(loaded, source, str(tmp_path / 'refused'), log=lambda _: None)
    assert not (tmp_path / 'refused').exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.export-')]


def test_a_failed_check_leaves_the_previous_export_untouched(tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'deploy.json').write_text('{"previous": true}')

    def failing(*args, **kwargs):
        raise ExportParityError('the ONNX export differs from PyTorch: video 0')

    monkeypatch.setattr(onnx_export, 'check_exports', failing)
    loaded = init_retriever(CONFIG, cfg_options=NO_MERGING)
    with pytest.raises(ExportParityError, match='video 0'):
        export_onnx(loaded, str(out), check_batch=1, log=lambda _: None)
    assert os.listdir(out) == ['deploy.json']
    assert (out / 'deploy.json').read_text() == '{"previous": true}'
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.export-')]


def test_check_names_the_layer_when_a_real_difference_is_found(tiny_export):
    loaded, out, _ = tiny_export
    model = onnx_export.deployable_model(loaded.model)
    video_module = onnx_export.VideoEmbedder(model)
    videos = torch.randint(0, 256, (2, 12, 3, 112, 112), dtype=torch.uint8)

    class Perturbed:
        def run(self, _, feeds):
            with torch.no_grad():
                out = video_module(torch.from_numpy(feeds['frames'])).numpy()
            return [out + 0.05]

    class Exact:
        def __init__(self, module):
            self.module = module

        def run(self, _, feeds):
            with torch.no_grad():
                return [self.module(torch.from_numpy(feeds['tokens'])).numpy()]

    tokens = tokenize_captions(['a dog'], 32)
    with pytest.raises(ExportParityError, match=r'video 0: max abs diff 0\.05, cosine 0\.9\d+ '
                       r'\(.*layer \d+ .*margin'):
        onnx_export.check_exports(model, video_module, Perturbed(),
                                  Exact(onnx_export.TextEmbedder(model)), videos, tokens)


def test_a_changed_export_file_is_refused_by_name(tiny_export, tmp_path):
    _, out, _ = tiny_export
    copy = tmp_path / 'copy'
    shutil.copytree(out, copy)
    data = bytearray((copy / 'text_encoder.onnx').read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / 'text_encoder.onnx').write_bytes(bytes(data))
    with pytest.raises(ExportFormatError, match='text_encoder.onnx: its SHA-256 differs'):
        OnnxRetriever(str(copy))
    with pytest.raises(FileNotFoundError, match='export_onnx.py'):
        OnnxRetriever(str(tmp_path))


def test_an_export_pipeline_naming_code_is_refused_before_reading_videos(tiny_export, tmp_path):
    """deploy.json is data: a pipeline step naming ``os.makedirs`` is refused, never built."""
    from tools.deployment import test_onnx
    _, out, _ = tiny_export
    crafted = tmp_path / 'crafted'
    shutil.copytree(out, crafted)
    marker = tmp_path / 'made'
    info = json.loads((crafted / 'deploy.json').read_text())
    info['video_pipeline'][0] = dict(type='os.makedirs', name=str(marker))
    (crafted / 'deploy.json').write_text(json.dumps(info))
    write_circle_video(tmp_path / 'videos' / 'red.mp4', (0, 0, 255))
    expected = rf'{crafted}/deploy.json: video_pipeline.0.type=.os.makedirs'
    with pytest.raises(ValueError, match=expected):
        search_tool.build_index(str(tmp_path / 'videos'), str(tmp_path / 'index'),
                                onnx=str(crafted), progress=False)
    with pytest.raises(ValueError, match=expected):
        test_onnx.evaluate(Config.fromfile(CONFIG), [str(crafted)])
    assert not marker.exists()
    assert not (tmp_path / 'index').exists()


# -- search with ONNX Runtime -----------------------------------------------------------------
@pytest.fixture(scope='module')
def indexed(tmp_path_factory, tiny_export):
    """Six videos indexed with PyTorch, and the same folder indexed with the export."""
    root = tmp_path_factory.mktemp('search')
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255),
               (255, 255, 0)]
    for i, colour in enumerate(colours):
        write_circle_video(root / 'videos' / f'v{i}.mp4', colour, frames=12 + 2 * i)
    torch_index, onnx_index = str(root / 'torch_index'), str(root / 'onnx_index')
    search_tool.build_index(str(root / 'videos'), torch_index, CONFIG, progress=False)
    search_tool.build_index(str(root / 'videos'), onnx_index, onnx=tiny_export[1],
                            progress=False)
    return root, torch_index, onnx_index


def test_onnx_backend_indexes_and_ranks_as_pytorch(indexed, tiny_export):
    root, torch_index, onnx_index = indexed
    loaded, export, _ = tiny_export
    by_torch, by_onnx = VideoIndex.load(torch_index), VideoIndex.load(onnx_index)
    assert by_onnx.model['fingerprint'] == by_torch.model['fingerprint'] == \
        describe(loaded)['fingerprint']
    np.testing.assert_allclose(by_onnx.embeddings, by_torch.embeddings, atol=1e-4)
    for text in ('a red circle', 'something green moving', 'yellow'):
        eager = search_tool.query_index(torch_index, text, top_k=6)
        onnx = search_tool.query_index(torch_index, text, top_k=6, onnx=export)
        assert [h.path for h in onnx] == [h.path for h in eager]
        np.testing.assert_allclose([h.score for h in onnx], [h.score for h in eager], atol=1e-4)


# -- the HTTP service -----------------------------------------------------------------------
def test_concurrent_requests_are_processed_together_and_each_gets_its_own():
    calls, busy, gate = [], threading.Event(), threading.Event()

    def encode(texts):
        busy.set()
        gate.wait(10)  # hold the first batch while the others queue up
        calls.append(list(texts))
        if 'boom' in texts:
            raise RuntimeError('graph failed')
        return np.array([[float(len(t))] for t in texts])

    encoder = RequestBatcher(encode, max_batch=16)
    texts = ['a' * n for n in range(1, 10)]
    futures = [encoder.submit(texts[0])]
    assert busy.wait(10)
    futures += [encoder.submit(t) for t in texts[1:]]  # they queue while the first runs
    gate.set()
    results = [f.result(timeout=10) for f in futures]
    assert [r[0] for r in results] == [float(len(t)) for t in texts]
    assert [len(c) for c in calls] == [1, 8]  # the first alone, then all that waited
    with pytest.raises(RuntimeError, match='graph failed'):
        encoder.submit('boom').result(timeout=10)
    # the batcher's thread survives a failed batch
    assert encoder.submit('ok').result(timeout=10)[0] == 2.0


#: Run the service with the training stack made unimportable.
_LEAN = '''
import runpy, sys
for name in ('torch', 'mmengine', 'mmaction', 'mmcv', 'peft', 'open_clip', 'timm'):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


class _Server:
    def __init__(self, index, export):
        self.proc = subprocess.Popen(
            [sys.executable, '-c', _LEAN, str(ROOT / 'tools/deployment/serve_search.py'),
             index, '--export', export, '--port', '0', '--threads', '1'],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if 'serving' not in line:
            self.proc.kill()
            raise AssertionError(f'the service did not start: {line}{self.proc.stderr.read()}')
        self.url = line.split(' on ')[1].split()[0]

    def get(self, path, method='GET'):
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def search(self, q, k=10):
        return self.get('/search?' + urllib.parse.urlencode(dict(q=q, k=k)))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def server(indexed, tiny_export, tmp_path):
    index = tmp_path / 'served'
    shutil.copytree(indexed[1], index)
    srv = _Server(str(index), tiny_export[1])
    yield srv, index
    srv.stop()


def test_service_answers_as_the_search_tool_without_the_training_stack(server, tiny_export,
                                                                       indexed):
    srv, index = server
    status, health = srv.get('/health')
    assert status == 200 and health['videos'] == 6 and health['status'] == 'ok'
    expected = search_tool.query_index(str(index), 'a blue circle', top_k=4,
                                       onnx=tiny_export[1])
    status, hits = srv.search('a blue circle', 4)
    assert status == 200
    assert [(h['path'], h['start'], h['end'], h['score']) for h in hits] == [
        (m.path, m.start, m.end, pytest.approx(m.score, abs=1e-6)) for m in expected]
    # 8 clients at once, 32 queries (encoded in batches): every answer is the one a single
    # client gets, scores to float rounding
    queries = [f'circle number {i % 4}' + ' and more' * (i % 3) for i in range(32)]
    alone = {q: srv.search(q, 3)[1] for q in set(queries)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: srv.search(q, 3), queries))
    for query, (status, hits) in zip(queries, answers):
        assert status == 200
        assert [h['path'] for h in hits] == [h['path'] for h in alone[query]]
        np.testing.assert_allclose([h['score'] for h in hits],
                                   [h['score'] for h in alone[query]], atol=1e-5)


def test_service_refuses_bad_requests_with_a_message(server):
    srv, _ = server
    for query, k, message in [('', 5, 'empty'), ('   ', 5, 'empty'), ('x' * 1001, 5, '1001'),
                              ('dog', 0, 'k must be in [1, 1000]'),
                              ('dog', 1001, 'k must be in [1, 1000]')]:
        status, body = srv.search(query, k)
        assert status == 400 and message in body['detail'], (query[:10], k, body)
    status, body = srv.get('/search?k=3')
    assert status == 400 and 'empty' in body['detail']
    status, body = srv.get('/search?q=dog&k=many')
    assert status == 422 and body['detail']
    assert srv.search('dog', 1000)[0] == 200


def test_service_reload_swaps_whole_indexes_only(server, indexed, tmp_path):
    srv, index = server
    extra = tmp_path / 'more'
    shutil.copytree(indexed[0] / 'videos', extra)
    write_circle_video(extra / 'v6.mp4', (128, 128, 128))
    search_tool.build_index(str(extra), str(index), CONFIG, progress=False)  # in place
    status, health = srv.get('/reload', method='POST')
    assert status == 200 and health['videos'] == 7
    assert len(srv.search('grey', 100)[1]) == 7
    # an index of another model is refused; the served one stays
    other = init_retriever(CONFIG, cfg_options=NO_MERGING)
    shutil.rmtree(index)
    search_tool.build_index(str(extra), str(index), CONFIG, cfg_options=NO_MERGING,
                            progress=False)
    assert VideoIndex.load(str(index)).model['fingerprint'] == describe(other)['fingerprint']
    status, body = srv.get('/reload', method='POST')
    assert status == 409 and 'another model' in body['detail']
    status, health = srv.get('/health')
    assert health['videos'] == 7 and health['status'] == 'stale'
    assert 'IndexModelMismatch' in health['reload_error']
    assert len(srv.search('grey', 100)[1]) == 7


def test_exports_are_evaluated_on_a_split_with_the_metric_of_the_test_tool(indexed, tiny_export,
                                                                           tmp_path):
    from projects.tempme.evaluation.ranking import retrieval_metrics
    from tools.deployment import test_onnx
    root = indexed[0]
    captions = {f'v{i}.mp4': [f'a {c} circle', f'the {c} one'] for i, c in enumerate(
        ('red', 'green', 'blue', 'yellow', 'pink', 'cyan'))}
    (tmp_path / 'test.json').write_text(json.dumps(captions))
    loaded, source, _ = tiny_export
    int8 = str(tmp_path / 'int8')
    quantize_export(loaded, source, int8, log=lambda _: None)
    out = tmp_path / 'metrics.json'
    report = test_onnx.main([CONFIG, source, int8, '--batch', '4', '--out', str(out),
                             '--cfg-options', f'test_dataloader.dataset.data_root={root}',
                             f'test_dataloader.dataset.ann_file={tmp_path / "test.json"}',
                             'test_dataloader.dataset.data_prefix.video=videos'])
    assert json.loads(out.read_text())['exports'][int8]['precision'] == 'int8'
    assert [e['precision'] for e in report.values()] == ['float32', 'int8']
    assert report[source]['num_videos'] == 6 and report[source]['num_captions'] == 12
    assert report[int8]['cosine_to_first']['video']['min'] >= onnx_export.INT8_MIN_COSINE
    # the float32 export ranks as the PyTorch model does, with tools/test.py's metric
    cfg = Config.fromfile(CONFIG)
    reader = VideoReader(cfg)
    videos = encode_videos(loaded, [reader(str(root / 'videos' / n)) for n in captions])
    texts = encode_texts(loaded, [c for cs in captions.values() for c in cs])
    expected = retrieval_metrics(texts @ videos.T, torch.arange(6).repeat_interleave(2))
    assert report[source]['metrics'] == pytest.approx(expected)
    other = tmp_path / 'other'
    shutil.copytree(source, other)
    info = json.loads((other / 'deploy.json').read_text())
    info['video_pipeline'][-1]['size'] = 64
    (other / 'deploy.json').write_text(json.dumps(info))
    with pytest.raises(ValueError, match='different test pipelines'):
        test_onnx.evaluate(cfg, [source, str(other)])


# -- export and index folders are data: damage is named in one line at start-up ---------------
def _tampered(source, dest, edit=None, replace=None):
    """A copy of the export at ``source`` with ``deploy.json`` edited and files replaced
    (``name -> bytes`` or ``name -> old bytes -> new bytes``), their hashes updated."""
    import hashlib
    shutil.copytree(source, dest)
    info = json.loads((dest / 'deploy.json').read_text())
    for name, data in (replace or {}).items():
        new = data((Path(source) / name).read_bytes()) if callable(data) else data
        (dest / name).write_bytes(new)
        info['files'][name] = hashlib.sha256(new).hexdigest()
    if edit is not None:
        edit(info)
    (dest / 'deploy.json').write_text(json.dumps(info))
    return dest


def _set(part, key, value):
    return lambda info: info[part].__setitem__(key, value)


def _context(length):
    def edit(info):
        info['tokenizer']['context_length'] = length
        info['text']['shape'][1] = length
    return edit


def _vocab_beyond_the_graph(data):
    """CLIP's tokenizer with end-of-text (its largest id) moved past the embedding table."""
    tokenizer = json.loads(data)
    tokenizer['model']['vocab']['<end_of_text>'] = 60000
    for token in tokenizer['added_tokens']:
        if token['content'] == '<end_of_text>':
            token['id'] = 60000
    return json.dumps(tokenizer).encode()


def _swap(source):
    return {'text_encoder.onnx': (Path(source) / 'video_encoder.onnx').read_bytes(),
            'video_encoder.onnx': (Path(source) / 'text_encoder.onnx').read_bytes()}


DAMAGED_EXPORTS = {
    'missing-key': (dict(edit=lambda info: info['text'].pop('output')),
                    r'deploy.json: text.output is missing'),
    'wrong-type': (dict(edit=_set('video', 'dim', '64')), r"deploy.json: video.dim must be int"),
    'context-1e10': (dict(edit=_set('tokenizer', 'context_length', 1e10)),
                     r'deploy.json: tokenizer.context_length must be int, got 10000000000.0'),
    'context-10**10': (dict(edit=_context(10**10)),
                       r'deploy.json: tokenizer.context_length must be in \[2, 2048\]'),
    'context-beyond-positions': (dict(edit=_context(40)),
                                 r'text_encoder.onnx: a probe query of 40 tokens'),
    'bad-tokenizer': (dict(replace={'tokenizer.json': b'{"model": 3}'}),
                      r'tokenizer.json: not a usable CLIP tokenizer'),
    'tokenizer-without-eot': (dict(replace={'tokenizer.json': lambda data: data.replace(
        b'<end_of_text>', b'<end_of_txet>')}), r'tokenizer.json: .*no <end_of_text> token'),
    'vocab-beyond-the-graph': (dict(replace={'tokenizer.json': _vocab_beyond_the_graph}),
                               r'text_encoder.onnx: a probe query of 32 tokens \(ids up to '
                               r'60000.*indices element out of data bounds'),
    'truncated-graph': (dict(replace={'text_encoder.onnx': lambda data: data[:len(data) // 2]}),
                        r'text_encoder.onnx: ONNX Runtime cannot load the text graph'),
    'graphs-swapped': ('swap', r"text_encoder.onnx: the graph takes 'frames' tensor\(uint8\)"),
    'other-dim': (dict(edit=lambda info: (_set('text', 'dim', 65)(info),
                                          _set('video', 'dim', 65)(info))),
                  r"text_encoder.onnx: the graph gives 'text_embedding' .* 64\]"),
}


@pytest.mark.parametrize('case', DAMAGED_EXPORTS)
def test_a_damaged_export_is_refused_at_construction_in_one_line(tiny_export, tmp_path, case):
    """Each of these loaded before and failed (500) at every query, or hung on allocation."""
    source = tiny_export[1]
    change, message = DAMAGED_EXPORTS[case]
    change = dict(replace=_swap(source)) if change == 'swap' else change
    damaged = _tampered(source, tmp_path / 'damaged', **change)
    with pytest.raises(ExportFormatError) as refused:
        OnnxRetriever(str(damaged))
    assert refused.match(message) and str(damaged) in str(refused.value)
    assert '\n' not in str(refused.value)


def _serve_once(index, export):
    """Start serve_search.py without the training stack; (return code, stderr) if it exits."""
    proc = subprocess.run(
        [sys.executable, '-c', _LEAN, str(ROOT / 'tools/deployment/serve_search.py'), str(index),
         '--export', str(export), '--port', '0', '--threads', '1'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def _with_width(index_dir, dim):
    """The index re-saved with random unit rows of ``dim`` numbers: same model, other width."""
    index = VideoIndex.load(str(index_dir))
    rows = np.random.default_rng(0).standard_normal((len(index), dim)).astype(np.float32)
    VideoIndex(str(index_dir), index.model, index.files, rows, root=index.root).save()


def test_service_refuses_to_start_on_a_damaged_export_or_index(indexed, tiny_export, tmp_path):
    index = tmp_path / 'index'
    shutil.copytree(indexed[1], index)
    damaged = _tampered(tiny_export[1], tmp_path / 'export',
                        replace={'tokenizer.json': _vocab_beyond_the_graph})
    code, stderr = _serve_once(index, damaged)
    assert code == 1 and stderr.startswith(f'error: {damaged}/text_encoder.onnx: a probe query')
    assert stderr.count('\n') == 1, stderr
    _with_width(index, 65)
    code, stderr = _serve_once(index, tiny_export[1])
    assert code == 1 and stderr.count('\n') == 1, stderr
    assert stderr.startswith(f"error: the index in '{index}' holds 65-dimensional embeddings, "
                             f"the export '{tiny_export[1]}' gives 64")


def test_service_reload_refuses_an_invalid_index_and_keeps_serving(server, tmp_path):
    srv, index = server
    status, expected = srv.search('a red circle', 6)
    assert status == 200 and len(expected) == 6
    manifest = json.loads((index / 'manifest.json').read_text())
    good = np.load(index / manifest['embeddings'])
    _with_width(index, 65)  # same fingerprint, another width
    status, body = srv.get('/reload', method='POST')
    assert status == 503 and '65-dimensional embeddings' in body['detail']
    assert '\n' not in body['detail']
    nan = good.copy()
    nan[3, 0] = np.nan
    VideoIndex(str(index), manifest['model'], VideoIndex.load(str(index)).files, nan,
               normalized=True).save()
    status, body = srv.get('/reload', method='POST')
    assert status == 503 and 'row 3' in body['detail'] and 'is not finite' in body['detail']
    status, health = srv.get('/health')
    assert health['status'] == 'stale' and health['videos'] == 6
    assert 'is not finite' in health['reload_error']
    status, hits = srv.search('a red circle', 6)  # the old index answers still
    assert status == 200 and [h['path'] for h in hits] == [h['path'] for h in expected]
    for query in ('\x00\x00', '\u200b\u200c\ufeff', ' \u00a0'):
        status, body = srv.search(query, 3)
        assert status == 400 and 'the query is empty' in body['detail'], repr(query)


def test_a_slow_reload_never_blocks_searches_or_health(indexed, tiny_export, tmp_path):
    """A large index takes seconds to load: it loads in a worker thread, the old one serves."""
    import socket
    import time

    import uvicorn

    from projects.tempme_deploy.service import SearchBackend, create_app
    index = tmp_path / 'index'
    shutil.copytree(indexed[1], index)
    backend = SearchBackend(str(index), tiny_export[1], threads=1, check_every=0)
    entered, release, real_load = threading.Event(), threading.Event(), backend._load

    def slow_load(*args, **kwargs):
        entered.set()
        release.wait(30)
        return real_load(*args, **kwargs)

    backend._load = slow_load
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level='warning'))
    sock = socket.create_server(('127.0.0.1', 0))
    srv = _Server.__new__(_Server)
    srv.url = f'http://127.0.0.1:{sock.getsockname()[1]}'
    thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), daemon=True)
    thread.start()
    pool = ThreadPoolExecutor(4)
    try:
        while not server.started:
            time.sleep(0.01)
        before = backend.snapshot
        manifest = index / 'manifest.json'
        os.utime(manifest, ns=(manifest.stat().st_atime_ns, manifest.stat().st_mtime_ns + 10**9))
        # this search sees the new manifest and starts a reload, without waiting for it
        status, hits = pool.submit(srv.search, 'a red circle', 3).result(timeout=10)
        assert status == 200 and len(hits) == 3
        assert entered.wait(10)
        reload = pool.submit(srv.get, '/reload', 'POST')  # queued behind the running reload
        status, health = pool.submit(srv.get, '/health').result(timeout=10)
        assert status == 200 and health['reloading'] and health['loaded_at'] == before.loaded_at
        assert pool.submit(srv.search, 'a green circle', 2).result(timeout=10)[0] == 200
        assert not reload.done()
        release.set()
        status, health = reload.result(timeout=30)
        assert status == 200 and health['loaded_at'] > before.loaded_at
        assert not health['reloading']
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)
        pool.shutdown(wait=False)
