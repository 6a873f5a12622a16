"""An exported retriever in ONNX Runtime: texts and frames in, embeddings out.

Reads an export folder written by ``tools/deployment/export_onnx.py``
(:mod:`projects.tempme.deployment.onnx_export`); needs numpy, onnxruntime and tokenizers
only. An export folder is data handed over: ``deploy.json`` is checked against a schema
(keys, types, ranges), each graph against the SHA-256 recorded at export time, then
against ``deploy.json`` (input and output names, types and shapes, as ONNX Runtime reads
them), and the text graph answers one full-length probe query carrying the tokenizer's
largest id. A damaged or mislabelled folder then fails at construction in one line naming
the file and field, never at the first query.
"""
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .fileio import read_stamped_json, sha256_of
from .tokenizer import MAX_CONTEXT_LENGTH, ClipTokenizer, cut_padding

FORMAT = 'tempme-onnx-export'
VERSION = 1
INFO_FILE = 'deploy.json'

#: Bounds of the numbers ``deploy.json`` may hold (well above any CLIP's).
MAX_DIM = 65536
MAX_FRAMES = 4096
MAX_SIDE = 4096
#: How far from unit length an embedding of the probe query may be.
NORM_TOLERANCE = 1e-3


class ExportFormatError(ValueError):
    """An export folder that cannot be used as it is."""


def _one_line(text: object, limit: int = 300) -> str:
    """The first line of a (third-party) message, shortened: errors here are one line."""
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else ''
    return line if len(line) <= limit else line[:limit] + '...'


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Schema:
    """Reads fields of one JSON file, raising one line that names the file and field."""

    def __init__(self, data: Dict, path: str) -> None:
        self.data, self.path = data, path

    def fail(self, key: str, problem: str) -> ExportFormatError:
        return ExportFormatError(f'{self.path}: {key} {problem}; export the model again')

    def get(self, key: str, kind: type = object, optional: bool = False) -> Any:
        node: Any = self.data
        for part in key.split('.'):
            if not isinstance(node, dict) or part not in node:
                if optional:
                    return None
                raise self.fail(key, 'is missing')
            node = node[part]
        if kind is int and not _is_int(node) or not isinstance(node, kind):
            raise self.fail(key, f'must be {kind.__name__ if kind is not dict else "an object"}, '
                                 f'got {_one_line(repr(node), 80)}')
        return node

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.get(key, int)
        if not low <= value <= high:
            raise self.fail(key, f'must be in [{low}, {high}], got {value}')
        return value

    def text(self, key: str, optional: bool = False) -> Optional[str]:
        value = self.get(key, object, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f'must be a non-empty string, got {_one_line(repr(value), 80)}')
        return value

    def file_name(self, key: str) -> str:
        name = self.text(key)
        if os.path.basename(name) != name or name in ('.', '..'):
            raise self.fail(key, f'must name a file in the export folder, got {name!r}')
        return name


def check_export_info(info: Dict, path: str) -> None:
    """Check ``deploy.json`` data against what this runtime reads of it.

    Raises :class:`ExportFormatError` naming ``path`` and the first bad field.
    """
    schema = _Schema(info, path)
    precision = schema.get('precision', str, optional=True)
    if precision not in (None, 'float32', 'int8'):
        raise schema.fail('precision', f"must be 'float32' or 'int8', got {precision!r}")
    files = schema.get('files', dict)
    for name, digest in files.items():
        if not isinstance(digest, str) or len(digest) != 64:
            raise schema.fail(f'files.{name}', 'must be a hex SHA-256')
    context = schema.integer('tokenizer.context_length', 2, MAX_CONTEXT_LENGTH)
    schema.file_name('tokenizer.file')
    for part, dtype, rank in (('video', 'uint8', 5), ('text', 'int64', 2)):
        for key in ('file', 'input', 'output'):
            (schema.file_name if key == 'file' else schema.text)(f'{part}.{key}')
        if schema.get(f'{part}.dtype', str) != dtype:
            raise schema.fail(f'{part}.dtype', f'must be {dtype!r} (what this runtime feeds), '
                                               f'got {info[part]["dtype"]!r}')
        schema.integer(f'{part}.dim', 1, MAX_DIM)
        shape = schema.get(f'{part}.shape', list)
        if len(shape) != rank or shape[0] != 'batch' or not all(map(_is_int, shape[1:])):
            raise schema.fail(f'{part}.shape', f'must be ["batch", {rank - 1} integers], got '
                                               f'{_one_line(repr(shape), 80)}')
    frames, channels, height, width = info['video']['shape'][1:]
    if not (1 <= frames <= MAX_FRAMES and channels == 3 and 1 <= height <= MAX_SIDE
            and 1 <= width <= MAX_SIDE):
        raise schema.fail('video.shape', f'must be ["batch", 1..{MAX_FRAMES} frames, 3, '
                                         f'1..{MAX_SIDE}, 1..{MAX_SIDE}], got '
                                         f'{info["video"]["shape"]}')
    if info['text']['shape'][1] != context:
        raise schema.fail('text.shape', f'must end in tokenizer.context_length ({context}), got '
                                        f'{info["text"]["shape"]}')
    if info['text']['dim'] != info['video']['dim']:
        raise schema.fail('text.dim', f'({info["text"]["dim"]}) differs from video.dim '
                                      f'({info["video"]["dim"]})')
    schema.text('model.fingerprint')
    for key in ('model.config', 'model.checkpoint', 'model.weights'):
        schema.text(key, optional=True)
    schema.get('resolved_config', dict)
    pipeline = schema.get('video_pipeline', list)
    if not all(isinstance(step, dict) for step in pipeline):
        raise schema.fail('video_pipeline', 'must be a list of objects')


def read_export_info(export_dir: str) -> Dict:
    """``deploy.json`` of an export folder, checked for format, version and schema."""
    path = os.path.join(export_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no ONNX export in {export_dir!r} (no {INFO_FILE}); write one '
                                'with `python tools/deployment/export_onnx.py CONFIG --out DIR`')
    info = read_stamped_json(path, FORMAT, VERSION, 'export description', error=ExportFormatError)
    check_export_info(info, path)
    return info


def _checked_path(export_dir: str, info: Dict, name: str) -> str:
    path = os.path.join(export_dir, name)
    if os.path.basename(name) != name or not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: named by {INFO_FILE} but missing')
    if name not in info['files']:
        raise ExportFormatError(f'{path}: not listed in {INFO_FILE} files (no SHA-256 to check '
                                'it against); export the model again')
    if sha256_of(path) != info['files'][name]:
        raise ExportFormatError(f'{path}: its SHA-256 differs from the one recorded at export; '
                                'the file was changed or truncated, export again')
    return path


_ORT_TYPES = {'uint8': 'tensor(uint8)', 'int64': 'tensor(int64)'}


def check_graph(session: Any, path: str, spec: Dict, part: str) -> None:
    """The graph's one input and one output are what ``deploy.json``'s ``part`` says.

    Dimensions the graph leaves symbolic (batch, the text's token axis) match any value.
    A graph filed under the other part's name (text as video) fails here, by name.
    """
    def fail(problem: str) -> ExportFormatError:
        return ExportFormatError(f'{path}: {problem}, but {INFO_FILE} {part} says {what}; is '
                                 f'this the {part} graph? export the model again')

    inputs, outputs = session.get_inputs(), session.get_outputs()
    what = f'input {spec["input"]!r} {_ORT_TYPES[spec["dtype"]]} {spec["shape"]}'
    if len(inputs) != 1 or inputs[0].name != spec['input'] or \
            inputs[0].type != _ORT_TYPES[spec['dtype']]:
        raise fail('the graph takes ' + ', '.join(f'{i.name!r} {i.type} {i.shape}'
                                                  for i in inputs))
    if not _same_shape(inputs[0].shape, spec['shape']):
        raise fail(f'the graph takes {inputs[0].name!r} of shape {inputs[0].shape}')
    what = f'output {spec["output"]!r} tensor(float) [batch, {spec["dim"]}]'
    if len(outputs) != 1 or outputs[0].name != spec['output'] or \
            outputs[0].type != 'tensor(float)' or \
            not _same_shape(outputs[0].shape, ['batch', spec['dim']]):
        raise fail('the graph gives ' + ', '.join(f'{o.name!r} {o.type} {o.shape}'
                                                  for o in outputs))


def _same_shape(graph: Sequence, declared: Sequence) -> bool:
    """Same rank, and every dimension fixed in both is equal."""
    return len(graph) == len(declared) and all(
        not (_is_int(g) and _is_int(d)) or g == d for g, d in zip(graph, declared))


class OnnxRetriever:
    """The video and text encoders of an export, in ONNX Runtime sessions.

    Args:
        export_dir: an export folder.
        threads: intra-op threads per session (ONNX Runtime's default: all cores).
        load_video: also load the video graph (a query service needs only the text one).
    """

    def __init__(self, export_dir: str, threads: Optional[int] = None,
                 load_video: bool = True) -> None:
        import onnxruntime as ort
        self.export_dir = export_dir
        self.info = read_export_info(export_dir)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads

        def session(part):
            path = _checked_path(export_dir, self.info, self.info[part]['file'])
            try:
                loaded = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
            except Exception as err:  # noqa: BLE001 - ONNX Runtime's own exception types
                raise ExportFormatError(f'{path}: ONNX Runtime cannot load the {part} graph '
                                        f'({_one_line(err)}); export the model again') from None
            check_graph(loaded, path, self.info[part], part)
            return loaded

        self.text_session = session('text')
        self.video_session = session('video') if load_video else None
        self.tokenizer = self._load_tokenizer()
        self._probe_text()

    def _load_tokenizer(self) -> ClipTokenizer:
        path = _checked_path(self.export_dir, self.info, self.info['tokenizer']['file'])
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
            return ClipTokenizer(text, self.info['tokenizer']['context_length'])
        except (UnicodeDecodeError, ValueError) as err:
            raise ExportFormatError(f'{path}: not a usable CLIP tokenizer ({_one_line(err)}); '
                                    'export the model again') from None

    def _probe_text(self) -> None:
        """One full-length query through the text graph, ending in the tokenizer's largest
        id: a tokenizer whose ids overflow the graph's embedding table, or a
        ``context_length`` beyond its positions, fails here rather than at every query."""
        path = os.path.join(self.export_dir, self.info['text']['file'])
        import onnxruntime as ort
        tokens = self.tokenizer(['a ' * self.tokenizer.context_length])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the failure is reported below, in one line
        try:
            out = self.text_session.run(None, {self.info['text']['input']: tokens}, quiet)[0]
        except Exception as err:  # noqa: BLE001 - ONNX Runtime's own exception types
            raise ExportFormatError(
                f'{path}: a probe query of {tokens.shape[1]} tokens (ids up to '
                f'{int(tokens.max())}, from {self.info["tokenizer"]["file"]}) fails in ONNX '
                f'Runtime ({_one_line(err)}); the tokenizer or tokenizer.context_length does '
                'not fit the text graph, export the model again') from None
        norm = np.linalg.norm(np.asarray(out, np.float64), axis=-1)
        if out.shape != (1, self.info['text']['dim']) or \
                not np.all(np.abs(norm - 1) <= NORM_TOLERANCE):
            raise ExportFormatError(
                f'{path}: a probe query gives an embedding of shape {out.shape} and norm '
                f'{_one_line(norm, 80)}, not one unit-length row of {self.info["text"]["dim"]} '
                'numbers; export the model again')

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the PyTorch model exported (as a video index records it)."""
        return self.info['model']['fingerprint']

    @property
    def dim(self) -> int:
        """Numbers per embedding (the same for texts and videos, checked at load)."""
        return self.info['text']['dim']

    @property
    def precision(self) -> str:
        """``'float32'`` (the model's numbers) or ``'int8'`` (quantized matrix products)."""
        return self.info.get('precision', 'float32')

    def description(self) -> Dict[str, object]:
        """The exported model as a video index records it (fingerprint, config, checkpoint,
        precision). The fingerprint is the PyTorch model's: an int8 export's embeddings
        approximate it and may share an index with the float32 export's."""
        model = self.info['model']
        return dict(fingerprint=model['fingerprint'], config=model['config'],
                    checkpoint=model['checkpoint'], precision=self.precision)

    @property
    def frames_shape(self) -> tuple:
        """(T, 3, H, W) of one video."""
        return tuple(self.info['video']['shape'][1:])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised (N, D) float32 embeddings, tokenised as in training.

        The padding after the batch's last end-of-text token is cut before the graph runs
        (a 12-token query costs about a third of the full 32-token row): the text tower's
        attention is causal and it pools at end-of-text, so the cut tokens cannot change
        the result.
        """
        tokens = cut_padding(self.tokenizer(list(texts)))
        return self.text_session.run(None, {self.info['text']['input']: tokens})[0]

    def encode_videos(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B, T, 3, H, W) frames of the test pipeline -> (B, D) embeddings."""
        if self.video_session is None:
            raise RuntimeError('this OnnxRetriever was loaded without its video graph')
        frames = np.asarray(frames)
        if frames.ndim != 5 or tuple(frames.shape[1:]) != self.frames_shape or \
                frames.dtype != np.uint8:
            raise ValueError(f'frames of shape {frames.shape} ({frames.dtype}); the export takes '
                             f'uint8 (batch, {", ".join(map(str, self.frames_shape))})')
        return self.video_session.run(None, {self.info['video']['input']: frames})[0]
