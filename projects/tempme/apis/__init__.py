"""Inference outside a Runner: build a retriever, load checkpoints, decode and encode."""
from .inference import (LoadedRetriever, VideoReader, encode_texts, encode_videos, init_retriever,
                        load_retriever_checkpoint, model_fingerprint)

__all__ = [
    'LoadedRetriever', 'VideoReader', 'encode_texts', 'encode_videos', 'init_retriever',
    'load_retriever_checkpoint', 'model_fingerprint'
]
