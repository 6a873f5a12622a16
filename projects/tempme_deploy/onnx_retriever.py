"""An exported retriever in ONNX Runtime: texts and frames in, embeddings out.

Reads an export folder written by ``tools/deployment/export_onnx.py``
(:mod:`projects.tempme.deployment.onnx_export`); needs numpy, onnxruntime and tokenizers
only. Each graph is checked against the SHA-256 recorded at export time before it is
loaded, so a truncated or swapped file fails with its name.
"""
import os
from typing import Dict, Optional, Sequence

import numpy as np

from .fileio import read_stamped_json, sha256_of
from .tokenizer import ClipTokenizer, cut_padding

FORMAT = 'tempme-onnx-export'
VERSION = 1
INFO_FILE = 'deploy.json'


class ExportFormatError(ValueError):
    """An export folder that cannot be used as it is."""


def read_export_info(export_dir: str) -> Dict:
    """``deploy.json`` of an export folder, checked for format and version."""
    path = os.path.join(export_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no ONNX export in {export_dir!r} (no {INFO_FILE}); write one '
                                'with `python tools/deployment/export_onnx.py CONFIG --out DIR`')
    info = read_stamped_json(path, FORMAT, VERSION, 'export description', error=ExportFormatError)
    return info


def _checked_path(export_dir: str, info: Dict, name: str) -> str:
    path = os.path.join(export_dir, name)
    if os.path.basename(name) != name or not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: named by {INFO_FILE} but missing')
    if sha256_of(path) != info.get('files', {}).get(name):
        raise ExportFormatError(f'{path}: its SHA-256 differs from the one recorded at export; '
                                'the file was changed or truncated, export again')
    return path


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

        def session(name):
            return ort.InferenceSession(_checked_path(export_dir, self.info, name), options,
                                        providers=['CPUExecutionProvider'])

        self.text_session = session(self.info['text']['file'])
        self.video_session = session(self.info['video']['file']) if load_video else None
        with open(_checked_path(export_dir, self.info, self.info['tokenizer']['file']),
                  encoding='utf-8') as f:
            self.tokenizer = ClipTokenizer(f.read(), self.info['tokenizer']['context_length'])

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the PyTorch model exported (as a video index records it)."""
        return self.info['model']['fingerprint']

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
        return self.text_session.run(None, {'tokens': tokens})[0]

    def encode_videos(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B, T, 3, H, W) frames of the test pipeline -> (B, D) embeddings."""
        if self.video_session is None:
            raise RuntimeError('this OnnxRetriever was loaded without its video graph')
        frames = np.asarray(frames)
        if frames.ndim != 5 or tuple(frames.shape[1:]) != self.frames_shape or \
                frames.dtype != np.uint8:
            raise ValueError(f'frames of shape {frames.shape} ({frames.dtype}); the export takes '
                             f'uint8 (batch, {", ".join(map(str, self.frames_shape))})')
        return self.video_session.run(None, {'frames': frames})[0]
