"""The TempMe video encoder: a CLIP ViT with ImgMe and ClipMe token merging.

Frames enter as independent clips. ImgMe blocks merge tokens inside each frame; ClipMe
blocks concatenate adjacent clips, merge tokens across them (by hidden states, with a
learned temporal embedding per clip) and again inside the new clip (by keys). What
each block does is read from a :class:`~projects.tempme.merging.MergeSchedule`, so
plain per-frame CLIP and ToMe-only are schedules of the same encoder.

The same encoder serves as an mmaction2 recognition backbone: ``input_layout='NCTHW'``
takes what ``FormatShape('NCTHW')`` and ``Recognizer3D`` feed, and ``output='mean'`` hands
a classification head the (B, D) feature it expects.
"""
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from torch import nn

from ..merging import LayerPlan, MergeSchedule, bipartite_soft_matching, group_clips, merge_wavg
from ..merging.matching import clip_of_token, merge_source
from ..merging.source import initial_source, source_to_assignment
from .attention import ResidualBlock


class TokenState(NamedTuple):
    """What one block hands the next.

    ``tokens``: (batch * clips, T, C); ``sizes``: how many input patches each token stands
    for, (batch * clips, T, 1), ``None`` until the first merge; ``source``: the optional
    source map (see :mod:`~projects.tempme.merging.source`), carried through every
    grouping and merge when present.
    """

    tokens: torch.Tensor
    sizes: Optional[torch.Tensor] = None
    source: Optional[torch.Tensor] = None


class TempMeBlock(ResidualBlock):
    """One vision block following its :class:`LayerPlan`, from one :class:`TokenState`
    to the next."""

    def __init__(self, block: nn.Module, plan: LayerPlan, temporal_embedding: bool,
                 prop_attn: bool, temporal_init_std: float = 0.0) -> None:
        super().__init__(block)
        self.plan = plan
        self.prop_attn = prop_attn
        self.temporal_embedding = None
        if temporal_embedding and plan.cross_r > 0:
            width = self.ln_1.normalized_shape[0]
            self.temporal_embedding = nn.Parameter(torch.zeros(plan.clips_in, width))
            nn.init.normal_(self.temporal_embedding, std=temporal_init_std)
            self.register_buffer(
                'token_clip', clip_of_token(plan.group, plan.tokens_in, plan.cls_in),
                persistent=False)

    def _add_temporal(self, x: torch.Tensor) -> torch.Tensor:
        """Add each clip's embedding to the tokens it brought into the group."""
        plan = self.plan
        emb = self.temporal_embedding.view(plan.clips_out, plan.group, -1)[:, self.token_clip]
        return (x.view(-1, *emb.shape) + emb.to(x.dtype)).view_as(x)

    def forward(self, state: TokenState) -> TokenState:
        x, size, source = state
        plan = self.plan
        num_cls = plan.cls_out
        if plan.group > 1:
            x = group_clips(x, plan.group, plan.cls_in)
            if size is not None:
                size = group_clips(size, plan.group, plan.cls_in)
            if source is not None:
                source = group_clips(source, plan.group, plan.cls_in)
            if plan.cross_r > 0:
                # the metric is the block input, before the temporal embedding is added
                merge = bipartite_soft_matching(x.detach(), plan.cross_r, num_cls)
                if self.temporal_embedding is not None:
                    x = self._add_temporal(x)
                x, size = merge_wavg(merge, x, _sizes(x, size))
                if source is not None:
                    source = merge_source(merge, source)

        bias = None
        if self.prop_attn and size is not None:
            bias = size.log().to(x.dtype)[:, None, None, :, 0]
        h, keys = self.attn(self.ln_1(x), bias)
        x = x + self.ls_1(h)

        if plan.intra_r > 0:
            merge = bipartite_soft_matching(keys.mean(1), plan.intra_r, num_cls)
            x, size = merge_wavg(merge, x, _sizes(x, size))
            if source is not None:
                source = merge_source(merge, source)
        return TokenState(self.mlp_residual(x), size, source)


def _sizes(x: torch.Tensor, size: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ones_like(x[..., :1]) if size is None else size


#: Input layouts :class:`TempMeViT` takes: the project's own (frames, then channels) and
#: mmaction2's 3D-recognition one (``FormatShape('NCTHW')``).
INPUT_LAYOUTS = ('NTCHW', 'NCTHW')
#: What :class:`TempMeViT` returns: per-frame features or their mean over frames.
OUTPUTS = ('frames', 'mean')


@MODELS.register_module()
class TempMeViT(nn.Module):
    """Video encoder: (B, T, 3, H, W) frames -> (B, T, embed) per-frame CLS features.

    The CLS token of every input frame survives all merges (CLS tokens are never
    merged), so the output keeps one feature per frame; a head pools them.

    As the backbone of an mmaction2 ``Recognizer3D`` set ``input_layout='NCTHW'`` and
    ``output='mean'``: the recognizer feeds (B, 3, T, H, W) and passes the backbone's
    output straight to a head such as ``TimeSformerHead``, which takes (B, D) features,
    as mmaction2's own ViT backbones give with mean pooling. Pooling here rather than in
    a neck or head keeps every stock head usable as it is.

    Args:
        clip: an open_clip ``VisionTransformer`` (taken over, not copied), or a dict for
            :func:`~projects.tempme.models.clip_loading.build_open_clip`.
        num_frames: frames per video.
        merge: the merge setting, a :meth:`~projects.tempme.merging.MergeSchedule.preset`
            name: ``'tempme'``, ``'tome'`` (ToMe inside each frame) or ``'none'``.
        merge_layers, clips_per_merge, cross_clip_ratio, intra_clip_ratio, imgme_r:
            set on top of the preset (``None``: the preset's); see
            :class:`~projects.tempme.merging.MergeSchedule`.
        temporal_embedding: learn one embedding per clip at each ClipMe layer.
        prop_attn: proportional attention (log of the token sizes added to the logits).
        temporal_init_std: initial std of the temporal embeddings. TempMe starts them at
            zero so pretrained CLIP is unchanged at first; a model trained from scratch
            learns order sooner when clips start out distinguishable.
        compile: ``torch.compile`` the encoder's forward (``True`` or a dict of
            ``torch.compile`` arguments, e.g. ``dict(mode='max-autotune')``). The whole
            forward, matching and merging included, is one graph (tested with
            ``fullgraph=True``); parameter names and checkpoints are unchanged.
        input_layout: ``'NTCHW'`` (B, T, 3, H, W), as the retrieval pipeline, the ONNX
            export and search feed, or ``'NCTHW'`` (B, 3, T, H, W), as mmaction2's
            ``FormatShape('NCTHW')`` and ``Recognizer3D`` feed.
        output: ``'frames'``: (B, T, embed) per-frame features, for the retrieval heads;
            ``'mean'``: (B, embed), their mean over frames (not L2-normalised: a linear
            classifier learns its own scale), for mmaction2's classification heads.
    """

    def __init__(self, clip: Union[nn.Module, dict], num_frames: int = 12,
                 merge: str = 'tempme', merge_layers: Optional[Sequence[int]] = None,
                 clips_per_merge: Optional[Sequence[int]] = None,
                 cross_clip_ratio: Optional[float] = None,
                 intra_clip_ratio: Optional[float] = None,
                 imgme_r: Union[None, int, Sequence[int]] = None,
                 temporal_embedding: bool = True, prop_attn: bool = True,
                 temporal_init_std: float = 0.0,
                 compile: Union[bool, dict] = False, input_layout: str = 'NTCHW',
                 output: str = 'frames') -> None:
        super().__init__()
        if input_layout not in INPUT_LAYOUTS:
            raise ValueError(f'input_layout must be one of {INPUT_LAYOUTS}, got '
                             f'{input_layout!r}')
        if output not in OUTPUTS:
            raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
        self.input_layout = input_layout
        self.output = output
        if isinstance(clip, dict):
            from .clip_loading import build_open_clip
            clip = build_open_clip(**clip).visual
        visual = _check_visual(clip)
        grid_h, grid_w = visual.grid_size
        settings = MergeSchedule.settings_of(dict(
            merge=merge, merge_layers=merge_layers, clips_per_merge=clips_per_merge,
            cross_clip_ratio=cross_clip_ratio, intra_clip_ratio=intra_clip_ratio,
            imgme_r=imgme_r))
        self.schedule = MergeSchedule(
            num_layers=len(visual.transformer.resblocks), num_frames=num_frames,
            tokens_per_frame=grid_h * grid_w + 1, **settings)
        self.frame_size = tuple(visual.image_size)  # open_clip keeps it as (H, W)
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(
            TempMeBlock(block, plan, temporal_embedding, prop_attn, temporal_init_std)
            for block, plan in zip(visual.transformer.resblocks, self.schedule.layers))
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        if compile:
            self.compile(**(compile if isinstance(compile, dict) else {}))

    @property
    def num_frames(self) -> int:
        return self.schedule.num_frames

    @property
    def image_size(self) -> int:
        """Side of the (square) frames the encoder takes: patch grid x patch size."""
        return self.frame_size[0]

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        """One video's shape in :attr:`input_layout` ((T, 3, H, W) for the default
        ``'NTCHW'``), for tools that make or check inputs."""
        return _per_video_shape(self.input_layout, self.num_frames, self.frame_size)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1 + patches, C) tokens after ``ln_pre``."""
        x = self.conv1(frames).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self._pool(self._encode(self._to_ntchw(video), track_source=False)[0])

    def forward_with_source(self, video: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features as :meth:`forward`, and where each input token of each frame ended up.

        Returns ``(features, source)``: ``source`` is (B, T, tokens_per_frame) long (frames
        in time order whatever the :attr:`input_layout`), the index of the output token
        (numbered over the video, clip by clip, as ``c * tokens_per_clip + t``) that input
        token ``j`` of frame ``f`` was merged into; index 0 of every frame is its CLS
        token. Costs one (T * tokens)-wide map per token, so it is kept out of
        :meth:`forward`.
        """
        video = self._to_ntchw(video)
        b, t = video.shape[:2]
        features, source = self._encode(video, track_source=True)
        tokens = self.schedule.tokens_per_frame
        return self._pool(features), source_to_assignment(source, b).view(b, t, tokens)

    def _to_ntchw(self, video: torch.Tensor) -> torch.Tensor:
        """Check ``video`` against :attr:`input_shape` (on ints only) and bring it to
        (B, T, 3, H, W)."""
        if video.dim() != 5 or tuple(video.shape[1:]) != self.input_shape:
            raise ValueError(self._shape_error(tuple(video.shape)))
        return video.transpose(1, 2) if self.input_layout == 'NCTHW' else video

    def _shape_error(self, shape: Tuple[int, ...]) -> str:
        """Say what is wrong with an input of ``shape``, and name the layout it looks like."""
        layout = self.input_layout
        other = INPUT_LAYOUTS[1 - INPUT_LAYOUTS.index(layout)]
        expected = ', '.join(map(str, self.input_shape))
        message = (f"TempMeViT(input_layout='{layout}') takes {layout} video (B, {expected}); "
                   f'got {shape}')
        if len(shape) != 5:
            return message + f': {len(shape)} dims, not 5'
        seen = layout
        if shape[layout.index('C')] != 3 and shape[other.index('C')] == 3:
            seen = other
        t, c = shape[seen.index('T')], shape[seen.index('C')]
        problems = []
        if seen != layout:
            problems.append(f"this looks like {other}: set input_layout='{other}'")
        elif c != 3:
            problems.append(f'{c} channels, not 3 (RGB)')
        if t != self.num_frames:
            problems.append(f'{t} frames, but the merge schedule was built for '
                            f'num_frames={self.num_frames}')
        if tuple(shape[3:]) != self.frame_size:
            problems.append('frames of {}x{}, but CLIP takes {}x{}'.format(
                *shape[3:], *self.frame_size))
        return message + ': ' + '; '.join(problems)

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(1) if self.output == 'mean' else features

    def _encode(self, video: torch.Tensor,
                track_source: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-frame features of (B, T, 3, H, W) ``video`` and, if tracked, the final
        source map of every token."""
        b, t = video.shape[:2]
        x = self.embed_frames(video.flatten(0, 1))
        source = None
        if track_source:
            source = initial_source(b, t, self.schedule.tokens_per_frame, device=x.device,
                                    dtype=x.dtype)
        state = TokenState(x, None, source)
        for block in self.blocks:
            state = block(state)
        last = self.schedule.layers[-1]
        cls = state.tokens.view(b, last.clips_out, last.tokens_out, -1)[:, :, :last.cls_out]
        features = self.ln_post(cls.reshape(b, t, -1)) @ self.proj
        return features, state.source


def _per_video_shape(layout: str, frames: int,
                     frame_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    return ((frames, 3) if layout == 'NTCHW' else (3, frames)) + tuple(frame_size)


def _check_visual(visual: nn.Module) -> nn.Module:
    """Fail early on open_clip vision towers whose output is not the CLS token."""
    for attr in ('conv1', 'class_embedding', 'positional_embedding', 'transformer', 'proj'):
        if not hasattr(visual, attr):
            raise TypeError(f'TempMeViT needs an open_clip VisionTransformer; '
                            f'{type(visual).__name__} has no {attr!r}')
    pool_type = getattr(visual, 'pool_type', 'tok')
    if getattr(visual, 'attn_pool', None) is not None or pool_type != 'tok':
        raise TypeError('TempMeViT needs CLS-token pooling (pool_type="tok", no attn_pool)')
    if visual.proj is None:
        raise TypeError('TempMeViT needs a vision tower with an output projection')
    return visual
