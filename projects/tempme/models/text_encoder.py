"""The CLIP text tower, over open_clip's modules, with a LoRA-ready attention."""
import torch
from mmaction.registry import MODELS
from torch import nn

from .attention import ResidualBlock


class TextBlock(ResidualBlock):
    """Causal pre-norm block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attn(self.ln_1(x), is_causal=True)
        return self.mlp_residual(x + self.ls_1(h))


@MODELS.register_module()
class CLIPTextEncoder(nn.Module):
    """Text features of an open_clip ``CLIP`` model: argmax (end-of-text) pooling.

    Only a causal mask is applied: the pooled end-of-text token precedes all padding,
    so a padding mask cannot change it. Token sequences may be shorter than the
    model's context length (TempMe uses 32); positional embeddings are sliced to fit.

    Args:
        clip: an open_clip ``CLIP`` (its text modules are taken over, not copied), or
            a dict for :func:`~projects.tempme.models.clip_loading.build_open_clip`.
    """

    def __init__(self, clip) -> None:
        super().__init__()
        if isinstance(clip, dict):
            from .clip_loading import build_open_clip
            clip = build_open_clip(**clip)
        if getattr(clip, 'text_pool_type', 'argmax') != 'argmax':
            raise TypeError('CLIPTextEncoder expects argmax (end-of-text) pooling')
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.blocks = nn.ModuleList(TextBlock(b) for b in clip.transformer.resblocks)
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, embed) features (not normalised)."""
        if text.shape[1] > self.context_length:
            raise ValueError(f'text has {text.shape[1]} tokens; the model takes at most '
                             f'{self.context_length}')
        x = self.token_embedding(text) + self.positional_embedding[:text.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)])
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection
