"""The text-video retrieval model: CLIP text tower + TempMe video tower + contrastive loss."""
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmaction.registry import MODELS
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper

from .clip_loading import build_open_clip
from .grad_cache import cached_contrastive_step, chunk_slices
from .lora import inject_lora, is_lora_parameter
from .text_encoder import CLIPTextEncoder

TRAIN_MODES = ('peft', 'full')


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward gives each rank the gradient of its own slice, summed
    over the ranks.

    Written here because torch's ``torch.distributed.nn.functional.all_gather`` is
    deprecated (torch 2.14 warns on every call) and its suggested replacement is a private
    module. Every rank computes the same loss over the gathered batch, so summing the
    slice's gradients over ranks and letting DDP average makes the step the true gradient
    of that loss on any number of processes (``optim_wrapper.grad_scale`` rescales it).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (equal batch sizes); gradients flow back to each
    rank's slice."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def symmetric_infonce(text: torch.Tensor, video: torch.Tensor,
                      logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of text->video and video->text cross-entropy; pair i is the positive of i."""
    logits = logit_scale * F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@MODELS.register_module()
class TempMeRetriever(BaseModel):
    """CLIP-based text-video retriever with a TempMe video encoder.

    Args:
        clip: arguments of :func:`~projects.tempme.models.clip_loading.build_open_clip`
            (architecture and local weight file); built once and shared by both towers.
        video_encoder: config of the video encoder (``TempMeViT``); gets ``clip``.
        head: config of the video head pooling per-frame features.
        lora: LoRA arguments (``rank``, ``alpha``, ``dropout``, ``target_modules``) or
            ``None`` for no adapters.
        train_mode: ``'peft'`` trains LoRA, temporal embeddings and head parameters
            only; ``'full'`` trains every weight.
        max_logit_scale: clamp of the learned temperature (CLIP uses 100). As in CLIP's
            and TempMe's training code, the parameter is clamped after every optimizer
            step (:meth:`train_step`), not in the forward pass.
        train_chunk_size: encode each process's training batch this many samples at a
            time with gradient caching (:mod:`~projects.tempme.models.grad_cache`): the
            same update as the whole batch at once, with the activation memory of one
            chunk. ``None`` encodes the batch at once.
    """

    def __init__(self, clip: dict, video_encoder: dict,
                 head: dict = dict(type='MeanCLSHead'), lora: Optional[dict] = dict(rank=8),
                 train_mode: str = 'peft', max_logit_scale: float = 100.0,
                 train_chunk_size: Optional[int] = None,
                 data_preprocessor: Optional[dict] = dict(type='RetrievalDataPreprocessor'),
                 init_cfg: Optional[dict] = None) -> None:
        if isinstance(data_preprocessor, dict):
            # mmengine's BaseModel would look it up in mmengine's registry, which only
            # knows mmaction's components under the mmaction default scope.
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if train_mode not in TRAIN_MODES:
            raise ValueError(f'train_mode must be one of {TRAIN_MODES}, got {train_mode!r}')
        clip_model = build_open_clip(**clip)
        self.video_encoder = MODELS.build(video_encoder, default_args=dict(clip=clip_model.visual))
        self.text_encoder = CLIPTextEncoder(clip_model)
        self.head = MODELS.build(head)
        self.logit_scale = clip_model.logit_scale
        self.max_logit_scale = max_logit_scale
        self.train_mode = train_mode
        if train_chunk_size is not None:
            chunk_slices(1, train_chunk_size)  # validates the value now, not at the first step
        self.train_chunk_size = train_chunk_size
        if lora is not None:
            inject_lora(self, **lora)
        for name, param in self.named_parameters():
            param.requires_grad = train_mode == 'full' or self.is_peft_parameter(name)

    @staticmethod
    def is_peft_parameter(name: str) -> bool:
        """Parameters trained in PEFT mode: adapters, temporal embeddings, the head."""
        return (is_lora_parameter(name) or name.endswith('.temporal_embedding')
                or name.startswith('head.'))

    def parameter_counts(self) -> Dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return dict(total=total, trainable=trainable)

    # -- features ---------------------------------------------------------------
    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(text)

    def encode_video(self, video: torch.Tensor,
                     video_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, embed) video features; ``video_mask`` (B, T) leaves padded frames out."""
        return self.head(self.video_encoder(video), video_mask)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep the temperature at most ``max_logit_scale`` (after each optimizer step)."""
        self.logit_scale.clamp_(max=math.log(self.max_logit_scale))

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """mmengine's step (or the gradient-cached one), then the temperature clamp."""
        if self.train_chunk_size is None:
            log_vars = super().train_step(data, optim_wrapper)
        else:
            log_vars = cached_contrastive_step(self, self, data, optim_wrapper,
                                               self.train_chunk_size)
        self.clamp_logit_scale_()
        return log_vars

    # -- mmengine interface -------------------------------------------------------
    def forward(self, inputs: Dict[str, torch.Tensor], data_samples: Optional[List] = None,
                mode: str = 'tensor') -> Union[Dict[str, torch.Tensor], List, tuple]:
        text = self.encode_text(inputs['text'])
        video = self.encode_video(inputs['video'], inputs.get('video_mask'))
        if mode == 'tensor':
            return text, video
        if mode == 'loss':
            return self.loss(text, video)
        if mode == 'predict':
            return self.predict(text, video, inputs['caption_to_video'], data_samples)
        raise ValueError(f'unknown mode {mode!r}')

    def loss(self, text: torch.Tensor, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        if text.shape[0] != video.shape[0]:
            raise ValueError('training batches need exactly one caption per video, got '
                             f'{text.shape[0]} captions for {video.shape[0]} videos')
        scale = self.scale()
        loss = symmetric_infonce(gather_with_grad(text), gather_with_grad(video), scale)
        return dict(loss=loss, logit_scale=scale.detach())

    def predict(self, text: torch.Tensor, video: torch.Tensor, caption_to_video: torch.Tensor,
                data_samples: Sequence) -> Sequence:
        for i, sample in enumerate(data_samples):
            sample.video_feat = video[i].detach()
            sample.text_feats = text[caption_to_video == i].detach()
        return data_samples
