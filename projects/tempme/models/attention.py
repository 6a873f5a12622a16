"""Transformer pieces shared by both CLIP towers.

open_clip's blocks run ``nn.MultiheadAttention``, which hides the keys (the ImgMe merge
metric), takes no per-key bias (proportional attention) and keeps the fused input
projection as a bare parameter that ``peft`` cannot wrap with a plain ``Linear`` LoRA.
:class:`QKVAttention` exposes all three, sharing the open_clip parameters, and runs
``scaled_dot_product_attention``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class QKVAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` Linear (the LoRA target)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f'width {width} is not divisible by heads {heads}')
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> 'QKVAttention':
        """Wrap the parameters of an ``nn.MultiheadAttention`` (shared, not copied)."""
        attn = cls(mha.embed_dim, mha.num_heads)
        attn.qkv.weight = mha.in_proj_weight
        attn.qkv.bias = mha.in_proj_bias
        attn.out_proj = mha.out_proj
        return attn

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (output (N, T, C), keys (N, heads, T, C / heads))."""
        n, t, c = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, t, c)), k


class ResidualBlock(nn.Module):
    """A pre-norm CLIP block over the modules of an open_clip ``ResidualAttentionBlock``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if hasattr(block, 'ln_1_kv') or not isinstance(block.attn, nn.MultiheadAttention):
            raise TypeError(f'unsupported open_clip block {type(block).__name__}: expected '
                            'ResidualAttentionBlock with nn.MultiheadAttention self-attention')
        self.ln_1 = block.ln_1
        self.attn = QKVAttention.from_multihead(block.attn)
        self.ls_1 = block.ls_1
        self.ln_2 = block.ln_2
        self.mlp = block.mlp
        self.ls_2 = block.ls_2

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls_2(self.mlp(self.ln_2(x)))
