"""Export a retriever's video and text encoders to ONNX and prove them in ONNX Runtime.

An export folder holds everything a search service needs and nothing of the training
stack::

    video_encoder.onnx   uint8 frames (batch, T, 3, H, W) -> embeddings (batch, D)
    text_encoder.onnx    int64 tokens (batch, L) -> embeddings (batch, D)
    tokenizer.json       CLIP's BPE for ``tokenizers`` (projects.tempme_deploy.tokenizer)
    deploy.json          shapes, normalisation, tokenizer settings, schedule, test
                         pipeline, the model's fingerprint, file hashes, parity report

Both graphs come from ``torch.onnx.export(dynamo=True)`` with a dynamic batch; LoRA is
folded into the weights and the head's pooling and the final L2 normalisation are in
the graph. Every export is run in ONNX Runtime against PyTorch on the same inputs
(:mod:`.parity`); a failed check raises and leaves an existing export untouched
(files are written to a scratch folder and moved in, ``deploy.json`` last).

``int8=True`` then quantizes both proven graphs with ONNX Runtime's dynamic quantization
(int8 weights per output channel, activations quantized per tensor at run time; matrix
products only, so merging still runs in float32). That is an approximation, not an
export of the same numbers: it is checked by embedding cosine against PyTorch
(:data:`INT8_MIN_COSINE`) instead of the float32 tolerance.
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterator

import numpy as np
import torch

from ...tempme_deploy.fileio import sha256_of
from ...tempme_deploy.onnx_retriever import FORMAT, INFO_FILE, VERSION
from ...tempme_deploy.tokenizer import clip_tokenizer_json, cut_padding
from ..apis.inference import (LoadedRetriever, caption_context_length, model_fingerprint,
                              video_pipeline_config)
from .embedders import TextEmbedder, VideoEmbedder, deployable_model
from .parity import compare_embeddings, margins_of, recording_matches, row_cosines

VIDEO_FILE, TEXT_FILE, TOKENIZER_FILE = 'video_encoder.onnx', 'text_encoder.onnx', 'tokenizer.json'
#: Captions the text export is checked on (lengths from one word to truncation).
CHECK_CAPTIONS = ('a dog catches a frisbee', 'Two people are cooking pasta in a kitchen.',
                  'x', 'a man talks about cars ' * 5)


#: Embedding cosine to PyTorch required of every check input of an int8 export. Measured
#: on random ViT-B/32, the tiny config and the demo's trained model: >= 0.999 (text) and
#: >= 0.9996 (video) with 8-bit weights; the tiny config with the 7-bit weights of
#: :func:`_quantize`: >= 0.9977 (text), >= 0.9997 (video). The gate catches a broken
#: quantization, not a small accuracy loss.
INT8_MIN_COSINE = 0.99


class ExportParityError(RuntimeError):
    """An exported graph does not compute what the PyTorch model computes."""


def export_onnx(loaded: LoadedRetriever, out_dir: str, check_batch: int = 8, seed: int = 0,
                int8: bool = False, log: Callable[[str], None] = print) -> Dict:
    """Export ``loaded`` into ``out_dir`` and check it; returns the ``deploy.json`` data.

    Args:
        check_batch: random videos compared (at this batch and one at batch 1).
        seed: seed of the check inputs.
        int8: quantize both graphs after their float32 check (see the module docstring).
    """
    import onnxruntime as ort
    model = deployable_model(loaded.model).cpu().float()
    frames_shape = loaded.encoder.input_shape
    context = caption_context_length(loaded.cfg)
    info = _describe(loaded, model, frames_shape, context)
    videos, tokens = _check_inputs(frames_shape, context, check_batch, seed)
    video_module = VideoEmbedder(model).eval()
    with _scratch_for(out_dir) as scratch:
        log(f'exporting the video encoder: frames {tuple(frames_shape)}, dynamic batch')
        batch = torch.export.Dim('batch', min=1, max=4096)
        _export(video_module, videos[:2], os.path.join(scratch, VIDEO_FILE), 'frames',
                'video_embedding', {0: batch})
        log(f'exporting the text encoder: {context} tokens, dynamic batch')
        # the token axis is dynamic too: causal attention and end-of-text pooling make the
        # padding after the last end-of-text token irrelevant, so a runtime may cut it
        _export(TextEmbedder(model).eval(), tokens[:2], os.path.join(scratch, TEXT_FILE),
                'tokens', 'text_embedding',
                {0: batch, 1: torch.export.Dim('tokens', min=2, max=context)})
        with open(os.path.join(scratch, TOKENIZER_FILE), 'w') as f:
            f.write(_tokenizer_json())

        log('checking both graphs in ONNX Runtime against PyTorch')
        video_session = ort.InferenceSession(os.path.join(scratch, VIDEO_FILE),
                                             providers=['CPUExecutionProvider'])
        text_session = ort.InferenceSession(os.path.join(scratch, TEXT_FILE),
                                            providers=['CPUExecutionProvider'])
        info['parity'] = check_exports(model, video_module, video_session, text_session,
                                       videos, tokens, log)
        if int8:
            _to_int8(scratch, info, model, videos, tokens, log)
        _move_in(scratch, info, out_dir)
    return info


def quantize_export(loaded: LoadedRetriever, export_dir: str, out_dir: str,
                    check_batch: int = 8, seed: int = 0,
                    log: Callable[[str], None] = print) -> Dict:
    """An int8 copy in ``out_dir`` of ``loaded``'s checked float32 export in ``export_dir``
    (what ``export_onnx(int8=True)`` writes, without exporting again)."""
    from ...tempme_deploy.onnx_retriever import read_export_info
    info = read_export_info(export_dir)
    model = deployable_model(loaded.model).cpu().float()
    if info['model']['fingerprint'] != model_fingerprint(loaded) or \
            info.get('precision', 'float32') != 'float32':
        raise ValueError(f'{export_dir}: not a float32 export of this model (fingerprint '
                         f'{info["model"]["fingerprint"]}, precision {info.get("precision")})')
    videos, tokens = _check_inputs(loaded.encoder.input_shape,
                                   caption_context_length(loaded.cfg), check_batch, seed)
    with _scratch_for(out_dir) as scratch:
        for name in (VIDEO_FILE, TEXT_FILE, TOKENIZER_FILE):
            shutil.copyfile(os.path.join(export_dir, name), os.path.join(scratch, name))
        _to_int8(scratch, info, model, videos, tokens, log)
        _move_in(scratch, info, out_dir)
    return info


def _check_inputs(frames_shape, context: int, check_batch: int, seed: int):
    """Random uint8 videos and the check captions' tokens."""
    generator = torch.Generator().manual_seed(seed)
    videos = torch.randint(0, 256, (check_batch, *frames_shape), generator=generator,
                           dtype=torch.uint8)
    return videos, _tokens(CHECK_CAPTIONS, context)


@contextlib.contextmanager
def _scratch_for(out_dir: str) -> Iterator[str]:
    """A scratch folder next to ``out_dir`` (same file system: the files move in by
    rename), removed afterwards whatever happens."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='.export-', dir=parent)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _to_int8(folder: str, info: Dict, model: torch.nn.Module, videos: torch.Tensor,
             tokens: torch.Tensor, log: Callable[[str], None]) -> None:
    log('quantizing both graphs to int8 and checking them against PyTorch')
    info['precision'] = 'int8'
    info['quantization'] = _quantize(folder)
    info['parity']['int8'] = check_int8(VideoEmbedder(model).eval(), TextEmbedder(model).eval(),
                                        folder, videos, tokens)


def _move_in(scratch: str, info: Dict, out_dir: str) -> None:
    """Record the files' hashes, then move them into ``out_dir``, ``deploy.json`` last."""
    for name in (VIDEO_FILE, TEXT_FILE, TOKENIZER_FILE):
        info['files'][name] = sha256_of(os.path.join(scratch, name))
    with open(os.path.join(scratch, INFO_FILE), 'w') as f:
        json.dump(info, f, indent=1)
    os.makedirs(out_dir, exist_ok=True)
    for name in (VIDEO_FILE, TEXT_FILE, TOKENIZER_FILE, INFO_FILE):
        os.replace(os.path.join(scratch, name), os.path.join(out_dir, name))


def check_exports(model: torch.nn.Module, video_module: VideoEmbedder, video_session,
                  text_session, videos: torch.Tensor, tokens: torch.Tensor,
                  log: Callable[[str], None] = lambda line: None) -> Dict:
    """Compare both sessions with PyTorch; raises :class:`ExportParityError`."""
    log(f'  PyTorch: {len(videos)} videos, recording merge margins')
    with torch.no_grad(), recording_matches() as calls:  # one forward: outputs and margins
        reference = video_module(videos).numpy()
    margins, layers = margins_of(calls, model.video_encoder, len(videos))
    log(f'  ONNX Runtime: {len(videos)} videos at once, then one alone')
    batched = video_session.run(None, {'frames': videos.numpy()})[0]
    single = video_session.run(None, {'frames': videos[:1].numpy()})[0]
    log(f'  both: {len(tokens)} captions, full length and with the padding cut')
    rows = compare_embeddings(reference, batched, margins, layers)
    single_rows = compare_embeddings(reference[:1], single, margins[:1], layers[:1])
    rows += single_rows
    with torch.no_grad():
        text_reference = TextEmbedder(model)(tokens).numpy()
    text_out = text_session.run(None, {'tokens': tokens.numpy()})[0]
    # and with the padding cut, as the runtime runs it
    text_cut = text_session.run(None, {'tokens': cut_padding(tokens.numpy())})[0]
    text_rows = compare_embeddings(text_reference, text_out)
    text_rows += compare_embeddings(text_reference, text_cut)
    report = dict(
        video=dict(batch=len(videos), max_abs_diff=max(r.max_abs_diff for r in rows),
                   min_cosine=min(r.cosine for r in rows),
                   flips=[dict(video=r.index, at=r.flip, cosine=r.cosine,
                               max_abs_diff=r.max_abs_diff) for r in rows if r.flip]),
        text=dict(batch=len(tokens), max_abs_diff=max(r.max_abs_diff for r in text_rows)))
    failed = [_describe_failure(r, kind) for kind, group in (
        ('video', rows[:len(videos)]), ('video alone', single_rows), ('text', text_rows))
        for r in group if not r.ok]
    if failed:
        raise ExportParityError('the ONNX export differs from PyTorch:\n' + '\n'.join(failed))
    return report


def _quantize(folder: str) -> Dict:
    """Replace the folder's graphs by their dynamically quantized int8 versions."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    for name in (VIDEO_FILE, TEXT_FILE):
        path = os.path.join(folder, name)
        quantized = os.path.join(folder, 'int8-' + name)
        # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512 without
        # VNNI) ONNX Runtime's uint8 x int8 MatMulInteger sums pairs of products in int16
        # with saturation (255 * 127 * 2 > 32767), which costs the tiny model a cosine of
        # ~0.013; with |w| <= 64 a pair fits, so the graph computes the same on every CPU.
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=['MatMul'])
        os.replace(quantized, path)
    return dict(method='ONNX Runtime dynamic quantization', operators=['MatMul'],
                weights='int8 (7-bit range), per output channel',
                activations='uint8, per tensor, at run time')


def check_int8(video_module: VideoEmbedder, text_module: TextEmbedder, folder: str,
               videos: torch.Tensor, tokens: torch.Tensor) -> Dict:
    """Cosine of the int8 graphs' embeddings to PyTorch's (float32) on the check inputs;
    raises :class:`ExportParityError` below :data:`INT8_MIN_COSINE`."""
    import onnxruntime as ort

    def session(name):
        return ort.InferenceSession(os.path.join(folder, name),
                                    providers=['CPUExecutionProvider'])

    with torch.no_grad():
        video_reference = video_module(videos).numpy()
        text_reference = text_module(tokens).numpy()
    video_session, text_session = session(VIDEO_FILE), session(TEXT_FILE)
    video = np.concatenate([
        row_cosines(video_reference, video_session.run(None, {'frames': videos.numpy()})[0]),
        row_cosines(video_reference[:1],
                    video_session.run(None, {'frames': videos[:1].numpy()})[0])])
    text = row_cosines(text_reference,
                       text_session.run(None, {'tokens': cut_padding(tokens.numpy())})[0])
    report = dict(min_cosine=INT8_MIN_COSINE, video_min_cosine=float(video.min()),
                  text_min_cosine=float(text.min()))
    failed = [f'  {kind} {i}: cosine {c:.6f}'
              for kind, values in (('video', video), ('text', text))
              for i, c in enumerate(values) if c < INT8_MIN_COSINE]
    if failed:
        raise ExportParityError(f'the int8 export is further from PyTorch than cosine '
                                f'{INT8_MIN_COSINE}:\n' + '\n'.join(failed))
    return report


def _describe_failure(row, kind: str) -> str:
    line = (f'  {kind} {row.index}: max abs diff {row.max_abs_diff:.3g}, cosine '
            f'{row.cosine:.6f}')
    if row.flip:
        return line + f' (merge within float noise at {row.flip}, but cosine < 0.9999)'
    if np.isfinite(row.margin):
        return line + (f' (closest merge decision: {row.margin_layer}, margin '
                       f'{row.margin:.2e}: not a flip)')
    return line


def _export(module: torch.nn.Module, example: torch.Tensor, path: str, name: str,
            output: str, dynamic: Dict[int, 'torch.export.Dim']) -> None:
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=[name],
                                output_names=[output], dynamic_shapes={name: dynamic},
                                external_data=False, verbose=False)
    program.save(path)


def _tokens(captions, context: int) -> torch.Tensor:
    from ..datasets.transforms import tokenize_captions
    return tokenize_captions(list(captions), context)


def _tokenizer_json() -> str:
    from ..datasets.transforms import clip_tokenizer
    tokenizer = clip_tokenizer()
    return clip_tokenizer_json(tokenizer.encoder, list(tokenizer.bpe_ranks))


def _describe(loaded: LoadedRetriever, model: torch.nn.Module, frames_shape, context) -> Dict:
    encoder = model.video_encoder
    schedule = encoder.schedule
    preprocessor = model.data_preprocessor
    dim = model.text_encoder.text_projection.shape[-1] if isinstance(
        model.text_encoder.text_projection, torch.Tensor) else \
        model.text_encoder.text_projection.out_features
    return dict(
        format=FORMAT, version=VERSION, precision='float32',
        video=dict(file=VIDEO_FILE, input='frames', dtype='uint8',
                   shape=['batch', *frames_shape],
                   layout='RGB frames of the test pipeline (video_pipeline), channels first',
                   mean=preprocessor.mean.flatten().tolist(),
                   std=preprocessor.std.flatten().tolist(),
                   normalisation='inside the graph: (frames - mean) / std',
                   output='video_embedding', dim=int(dim)),
        text=dict(file=TEXT_FILE, input='tokens', dtype='int64', shape=['batch', context],
                  output='text_embedding', dim=int(dim),
                  trim='tokens after the last end-of-text token of a batch may be cut'),
        tokenizer=dict(file=TOKENIZER_FILE, context_length=context, cleaning='open_clip lower',
                       truncation='cut, last token replaced by end-of-text'),
        schedule=dict(num_frames=schedule.num_frames,
                      tokens_per_frame=schedule.tokens_per_frame,
                      tokens_per_layer=schedule.tokens_per_video()),
        video_pipeline=video_pipeline_config(loaded.cfg),
        model=dict(config=loaded.config_path, checkpoint=os.path.abspath(loaded.checkpoint)
                   if loaded.checkpoint else None, weights=loaded.weights,
                   fingerprint=model_fingerprint(loaded),
                   video_encoder=_plain(loaded.cfg.model.video_encoder)),
        resolved_config=json.loads(json.dumps(loaded.cfg.to_dict())),
        files={})


def _plain(cfg) -> Dict:
    return json.loads(json.dumps(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)))
