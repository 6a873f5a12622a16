"""Video-level heads: pool the per-frame CLS features of a video encoder."""
import torch
import torch.nn.functional as F
from torch import nn

from mmaction.registry import MODELS


@MODELS.register_module()
class MeanCLSHead(nn.Module):
    """TempMe's pooling: L2-normalise each frame's CLS feature, then average.

    The mean is not renormalised; the similarity normalises it.
    """

    def forward(self, frame_feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(frame_feats, dim=-1).mean(dim=1)
