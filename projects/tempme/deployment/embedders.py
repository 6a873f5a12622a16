"""The two functions a deployment runs, as modules: frames or tokens in, embeddings out.

Each includes everything between the data the service has and the vector it ranks
with: the video side normalises uint8 frames with the data preprocessor's statistics,
runs the encoder and the head's pooling and L2-normalises; the text side runs the text
tower and L2-normalises. Their outputs equal ``apis.inference.encode_videos`` /
``encode_texts`` of the same model.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.lora import merge_lora


def deployable_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a retriever with its LoRA deltas folded into the weights.

    Folding removes the adapters' extra matmuls from the graph; the original model
    keeps its adapters (a fingerprint or a later training step still sees them).
    """
    return merge_lora(copy.deepcopy(model)).eval()


class VideoEmbedder(nn.Module):
    """uint8 RGB frames (B, T, 3, H, W) -> L2-normalised video embeddings (B, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.video_encoder
        self.head = model.head
        preprocessor = model.data_preprocessor
        self.register_buffer('pixel_mean', preprocessor.mean.detach().clone(), False)
        self.register_buffer('pixel_std', preprocessor.std.detach().clone(), False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        video = (frames.float() - self.pixel_mean) / self.pixel_std
        return F.normalize(self.head(self.encoder(video)), dim=-1)


class TextEmbedder(nn.Module):
    """int64 token ids (N, L) -> L2-normalised text embeddings (N, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)
