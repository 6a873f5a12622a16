"""Video-level heads: pool the per-frame CLS features of a video encoder."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmaction.registry import MODELS
from open_clip.transformer import QuickGELU, Transformer
from torch import nn


@MODELS.register_module()
class MeanCLSHead(nn.Module):
    """TempMe's pooling: L2-normalise each frame's CLS feature, then average.

    The mean is not renormalised; the similarity normalises it. With ``frame_mask``
    (B, T), padded frames (mask 0) are left out of the average, as the published code
    does for clips padded to the frame count; a clip with no valid frame gives zeros.
    """

    def forward(self, frame_feats: torch.Tensor,
                frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        feats = F.normalize(frame_feats, dim=-1)
        if frame_mask is None:
            return feats.mean(dim=1)
        if frame_mask.shape != feats.shape[:2]:
            raise ValueError(f'frame_mask has shape {tuple(frame_mask.shape)}, expected '
                             f'{tuple(feats.shape[:2])} (batch, frames)')
        weights = frame_mask.to(feats.dtype).unsqueeze(-1)
        return (feats * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@MODELS.register_module()
class SeqTransfHead(nn.Module):
    """CLIP4Clip's ``seqTransf``: a small transformer over the per-frame features
    (plus frame position embeddings) whose residual updates are added to the
    features, then :class:`MeanCLSHead`.

    The output projections of every block start at zero, so a fresh head is exactly
    mean pooling and training departs from CLIP's behaviour only as far as it helps.

    Args:
        width: feature size (the CLIP embedding size).
        num_frames: frames per video (one position embedding each).
        layers: transformer blocks (CLIP4Clip uses 4).
        heads: attention heads; defaults to ``width // 64``.
    """

    def __init__(self, width: int, num_frames: int = 12, layers: int = 4,
                 heads: int = None) -> None:
        super().__init__()
        heads = heads or max(1, width // 64)
        self.frame_position = nn.Parameter(torch.zeros(num_frames, width))
        nn.init.normal_(self.frame_position, std=0.01)
        self.transformer = Transformer(width, layers, heads, act_layer=QuickGELU)
        for block in self.transformer.resblocks:
            nn.init.zeros_(block.attn.out_proj.weight)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.zeros_(block.mlp.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.bias)
        self.pool = MeanCLSHead()

    def forward(self, frame_feats: torch.Tensor,
                frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if frame_feats.shape[1] > self.frame_position.shape[0]:
            raise ValueError(f'{frame_feats.shape[1]} frames but the head has position '
                             f'embeddings for {self.frame_position.shape[0]}')
        hidden = frame_feats + self.frame_position[:frame_feats.shape[1]].to(frame_feats.dtype)
        return self.pool(frame_feats + self.transformer(hidden) - hidden, frame_mask)
