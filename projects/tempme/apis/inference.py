"""Use a trained retriever outside a Runner: build it, load a checkpoint, read videos.

Tools that look at single videos or index folders (``tools/analysis/visualize_merging.py``,
``tools/search.py``) need the same few steps as ``tools/test.py`` without a dataset:
build the model from a config (base CLIP weights as configured), put a checkpoint on
top (whole or adapter-only), decode a video with the config's test pipeline, and
encode videos and texts into normalised features.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmaction.registry import MODELS, TRANSFORMS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from ..checkpoint import (compare_state_dicts, fill_adapter_state, format_mismatch,
                          safe_load_checkpoint, state_dict_of, strip_ddp_prefix)
from ..config_checks import check_data_fits_model
from ..datasets.transforms import tokenize_captions
from ..file_configs import checked_file_config

#: Pipeline steps that prepare captions or pack training samples, not frames.
TEXT_TRANSFORMS = ('OpenCLIPTokenize', 'PackVideoTextInputs', 'CLIPTokenize', 'PackActionInputs')


@dataclass
class LoadedRetriever:
    """A retriever ready for inference and what it was built from."""

    model: torch.nn.Module
    cfg: Config
    config_path: str
    checkpoint: Optional[str]
    weights: str  # one line for humans: where the weights came from

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.video_encoder


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    cfg = Config.fromfile(config) if isinstance(config, (str, os.PathLike)) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def init_retriever(config: Union[str, Config], checkpoint: Optional[str] = None,
                   device: str = 'cpu', cfg_options: Optional[dict] = None,
                   seed: int = 0) -> LoadedRetriever:
    """Build the config's model in eval mode and load ``checkpoint`` on top.

    Without a checkpoint the model keeps the configured CLIP weights
    (``model.clip.weights``). Random initialisation (no weight file) is seeded with
    ``seed``, so two processes build the same model, which an index relies on. A test
    pipeline that cannot feed the encoder fails here, naming the fields.
    """
    cfg = load_config(config, cfg_options)
    check_data_fits_model(cfg)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    base = cfg.model.get('clip', {}).get('weights')
    weights = f'CLIP weights {base}' if base else 'random init (the config names no CLIP weights)'
    if checkpoint is not None:
        loaded_from = load_retriever_checkpoint(model, checkpoint)
        adapter = loaded_from.startswith('adapter')
        weights = f'{loaded_from} over {weights}' if adapter else f'{loaded_from} (all weights)'
    model.to(device).eval()
    config_path = os.path.abspath(config) if isinstance(config, (str, os.PathLike)) else ''
    return LoadedRetriever(model, cfg, config_path, checkpoint, weights)


def load_retriever_checkpoint(model: torch.nn.Module, path: str) -> str:
    """Load an mmengine checkpoint (whole or adapter-only) into ``model``; says which.

    Adapter-only checkpoints (``meta['adapter_only']``, written by
    ``PEFTCheckpointHook``) hold the trained weights only; the frozen ones stay as built,
    i.e. the configured base CLIP weights. A whole checkpoint must fit exactly.
    """
    if not path.startswith(('http://', 'https://')) and not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}')
    checkpoint = safe_load_checkpoint(path)  # URLs: downloaded, then loaded weights-only
    state = strip_ddp_prefix(state_dict_of(checkpoint, repr(path)))
    adapter_only = bool(checkpoint.get('meta', {}).get('adapter_only'))
    own = model.state_dict()
    if adapter_only:
        state, _ = fill_adapter_state(own, state, f'checkpoint {path!r}')
    mismatch = compare_state_dicts(own, state)
    if mismatch:
        raise KeyError(format_mismatch(mismatch, repr(path)))
    model.load_state_dict(state)
    kind = 'adapter-only checkpoint' if adapter_only else 'checkpoint'
    return f'{kind} {path}'


def model_fingerprint(loaded: LoadedRetriever) -> str:
    """A hash of everything that decides a video's embedding.

    Covers every weight of the model and the parts of the config that shape features
    (the model and the test pipeline), but not file locations: the same weights moved
    elsewhere give the same fingerprint.
    """
    digest = hashlib.sha256()
    model_cfg = loaded.cfg.model.to_dict() if hasattr(loaded.cfg.model, 'to_dict') else dict(
        loaded.cfg.model)
    model_cfg.get('clip', {}).pop('weights', None)
    described = dict(model=model_cfg, pipeline=video_pipeline_config(loaded.cfg))
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(loaded.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


# -- videos -------------------------------------------------------------------------------
def video_pipeline_config(cfg: Config) -> List[dict]:
    """The config's test pipeline up to the decoded, resized frames."""
    pipeline = None
    if cfg.get('test_dataloader') is not None:
        pipeline = cfg.test_dataloader.get('dataset', {}).get('pipeline')
    pipeline = pipeline or cfg.get('test_pipeline')
    if not pipeline:
        raise KeyError('the config has no test_dataloader.dataset.pipeline or test_pipeline '
                       'to decode videos with')
    return [dict(step) for step in pipeline if step['type'] not in TEXT_TRANSFORMS]


class VideoReader:
    """Decode a file into uint8 frames (T, 3, H, W) with a config's test pipeline."""

    def __init__(self, cfg: Config) -> None:
        with DefaultScope.overwrite_default_scope('mmaction'):
            self.transforms = [TRANSFORMS.build(step) for step in video_pipeline_config(cfg)]

    def __call__(self, path: str) -> torch.Tensor:
        results = dict(filename=path, start_index=0, modality='RGB')
        for transform in self.transforms:
            results = transform(results)
        return frames_to_tensor(results['imgs'], path)


def frames_to_tensor(frames, path: str) -> torch.Tensor:
    """A pipeline's decoded frames as the uint8 (T, 3, H, W) tensor the encoders take."""
    frames = np.stack(frames) if isinstance(frames, (list, tuple)) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f'{path}: the pipeline gave frames of shape {frames.shape} '
                         f'({frames.dtype}), expected uint8 (T, H, W, 3)')
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def export_video_reader(info: Dict, export_dir: str) -> VideoReader:
    """A reader for the pipeline an export folder records (``info`` as ``OnnxRetriever`` read
    and schema-checked it), each step checked as file data."""
    source = os.path.join(export_dir, 'deploy.json')
    pipeline = checked_file_config(info['video_pipeline'], source, 'video_pipeline')
    return VideoReader(Config(dict(test_pipeline=pipeline)))


def check_frames(expected: Sequence[int], frames: torch.Tensor, path: str) -> None:
    """Refuse frames of another shape than the (T, 3, H, W) a model takes."""
    if tuple(frames.shape) != tuple(expected):
        raise ValueError(f'{path}: the test pipeline gave frames {tuple(frames.shape)}, the '
                         f'model takes {tuple(expected)} (T, 3, H, W); add Resize/CenterCrop '
                         'or sampling steps to the config\'s test pipeline')


def preprocess_videos(loaded: LoadedRetriever, videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 (T, 3, H, W) frames -> normalised float (B, T, 3, H, W), as in training."""
    preprocessor = loaded.model.data_preprocessor
    empty_text = [torch.zeros(0, 1, dtype=torch.long) for _ in videos]
    data = preprocessor(dict(inputs=dict(video=list(videos), text=empty_text)))
    return data['inputs']['video']


@torch.no_grad()
def encode_videos(loaded: LoadedRetriever, videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-normalised video embeddings (B, D) of uint8 frame tensors."""
    return F.normalize(loaded.model.encode_video(preprocess_videos(loaded, videos)), dim=-1)


@torch.no_grad()
def encode_texts(loaded: LoadedRetriever, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings (N, D), tokenised as in training."""
    context = caption_context_length(loaded.cfg)
    tokens = tokenize_captions(list(texts), context).to(next(loaded.model.parameters()).device)
    return F.normalize(loaded.model.encode_text(tokens), dim=-1)


def caption_context_length(cfg: Config) -> int:
    """Caption length of the config's tokenizer step (32, TempMe's, if it has none)."""
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline') or []
    for step in pipeline:
        if step['type'] == 'OpenCLIPTokenize':
            return step.get('context_length', 32)
    return 32


def describe(loaded: LoadedRetriever) -> Dict[str, str]:
    """What an index records about the model it was built with."""
    return dict(config=loaded.config_path, checkpoint=os.path.abspath(loaded.checkpoint)
                if loaded.checkpoint else None, weights=loaded.weights,
                fingerprint=model_fingerprint(loaded))
