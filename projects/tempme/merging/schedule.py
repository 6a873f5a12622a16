"""The TempMe merge schedule: how many clips and tokens each layer sees and removes.

Token counts are static given the geometry, so the whole plan is computed once, at
build time, and shared by the encoder, the benchmark, the visualisation and the
validation. Counts are per clip and include the CLS tokens, following the reference:

* ImgMe layers (before the first merge layer): intra-frame merge of ``r`` tokens
  after attention.
* ClipMe layers: ``group`` adjacent clips are concatenated before attention and a
  cross-clip merge removes ``int(ratio * tokens * group)`` tokens (by hidden states);
  an intra-clip merge removes ``int(intra_ratio * tokens)`` more after attention.
* Later layers: intra-clip merge only.

Every bipartite step is capped at half the patch tokens, as one step cannot remove
more. With no merge layers and ``r = 0`` the plan is plain per-frame CLIP; with no
merge layers and ``r > 0`` it is ToMe applied to each frame. :meth:`MergeSchedule.preset`
names these three settings (``'tempme'``, ``'tome'``, ``'none'``); the encoder, the
configs and the benchmark take them from there, so TempMe's numbers are written once
(the field defaults below).
"""
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Tuple, Union

from .matching import max_merge


@dataclass(frozen=True)
class LayerPlan:
    """What one transformer block does to the token sequence of each clip."""

    index: int
    group: int            # clips concatenated before attention (1 = none)
    clips_in: int         # clips per video entering the block
    tokens_in: int        # tokens per clip entering the block (CLS included)
    cls_in: int           # CLS tokens per clip entering the block
    cross_r: int          # tokens removed by the cross-clip merge (before attention)
    intra_r: int          # tokens removed by the intra-clip merge (after attention)

    @property
    def clips_out(self) -> int:
        return self.clips_in // self.group

    @property
    def cls_out(self) -> int:
        return self.cls_in * self.group

    @property
    def tokens_attn(self) -> int:
        """Tokens per clip inside attention (after grouping and cross-clip merging)."""
        return self.tokens_in * self.group - self.cross_r

    @property
    def tokens_out(self) -> int:
        return self.tokens_attn - self.intra_r

    @property
    def kind(self) -> str:
        return 'clipme' if self.group > 1 else 'imgme'


#: The fields that say how a schedule merges; the others are the encoder's geometry.
MERGE_FIELDS = ('merge_layers', 'clips_per_merge', 'cross_clip_ratio', 'intra_clip_ratio',
                'imgme_r')


@dataclass(frozen=True)
class MergeSchedule:
    """A validated merge schedule for ``num_layers`` blocks over ``num_frames`` frames.

    Args:
        num_layers: transformer blocks of the vision tower.
        num_frames: frames per video entering the tower.
        tokens_per_frame: tokens per frame, CLS included (50 for ViT-B/32 at 224 px).
        merge_layers: the ClipMe layers, increasing.
        clips_per_merge: clips grouped at each merge layer (same length).
        cross_clip_ratio: share of the grouped tokens removed across clips.
        intra_clip_ratio: share of tokens removed inside each clip after attention, on
            the merge layers and every layer after the first of them.
        imgme_r: tokens removed per ImgMe layer (the layers before the first merge
            layer, or every layer when there is none); an int or one value per layer.
    """

    num_layers: int
    num_frames: int
    tokens_per_frame: int
    merge_layers: Tuple[int, ...] = (8, 9, 10)
    clips_per_merge: Tuple[int, ...] = (2, 2, 3)
    cross_clip_ratio: float = 0.3
    intra_clip_ratio: float = 0.1
    imgme_r: Union[int, Tuple[int, ...]] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, 'merge_layers', tuple(self.merge_layers))
        object.__setattr__(self, 'clips_per_merge', tuple(self.clips_per_merge))
        if not isinstance(self.imgme_r, int):
            object.__setattr__(self, 'imgme_r', tuple(self.imgme_r))
        self._validate_fields()
        object.__setattr__(self, '_layers', tuple(self._plan()))

    @classmethod
    def preset(cls, name: str = 'tempme', **overrides: Any) -> Dict[str, Any]:
        """The merge fields of a named setting, with ``overrides`` on top.

        * ``'tempme'``: TempMe (ImgMe ``r = 2`` on layers 0-7, ClipMe on layers 8-9-10
          grouping 2-2-3 clips, 30% cross-clip and 10% intra-clip merging);
        * ``'tome'``: ToMe inside each frame at every layer, ``imgme_r`` tokens (TempMe's
          ``r`` unless overridden), nothing merged across frames;
        * ``'none'``: no merging, plain per-frame CLIP.
        """
        defaults = {f.name: f.default for f in fields(cls) if f.name in MERGE_FIELDS}
        none = dict(merge_layers=(), clips_per_merge=(), cross_clip_ratio=0.0,
                    intra_clip_ratio=0.0, imgme_r=0)
        presets = dict(tempme=defaults, tome=dict(none, imgme_r=defaults['imgme_r']), none=none)
        if name not in presets:
            raise ValueError(f'unknown merge preset {name!r}; expected one of {sorted(presets)}')
        unknown = sorted(set(overrides) - set(MERGE_FIELDS))
        if unknown:
            raise ValueError(f'unknown merge setting(s) {unknown}; a preset takes {MERGE_FIELDS}')
        return dict(presets[name], **overrides)

    @classmethod
    def settings_of(cls, encoder: Mapping[str, Any]) -> Dict[str, Any]:
        """The merge fields a ``TempMeViT`` config asks for: its ``merge`` preset
        (``'tempme'`` when absent) with the fields it sets (not ``None``) on top."""
        overrides = {k: encoder[k] for k in MERGE_FIELDS if encoder.get(k) is not None}
        return cls.preset(encoder.get('merge') or 'tempme', **overrides)

    # -- validation ---------------------------------------------------------------
    def _validate_fields(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f'invalid merge schedule: {field} {why}')

        if self.num_layers <= 0:
            fail('num_layers', f'must be positive, got {self.num_layers}')
        if self.num_frames <= 0:
            fail('num_frames', f'must be positive, got {self.num_frames}')
        if self.tokens_per_frame < 2:
            fail('tokens_per_frame', f'must be >= 2 (CLS + patches), got {self.tokens_per_frame}')
        if len(self.merge_layers) != len(self.clips_per_merge):
            fail('clips_per_merge', f'has {len(self.clips_per_merge)} entries but merge_layers '
                 f'has {len(self.merge_layers)}')
        for layer in self.merge_layers:
            if not 0 <= layer < self.num_layers:
                fail('merge_layers', f'entry {layer} is outside [0, {self.num_layers})')
        if list(self.merge_layers) != sorted(set(self.merge_layers)):
            fail('merge_layers', f'must be strictly increasing, got {list(self.merge_layers)}')
        frames = self.num_frames
        for layer, group in zip(self.merge_layers, self.clips_per_merge):
            if group < 1:
                fail('clips_per_merge', f'entry {group} at layer {layer} must be >= 1')
            if frames % group:
                fail('clips_per_merge', f'{group} at layer {layer} does not divide the '
                     f'{frames} clips entering that layer (num_frames={self.num_frames})')
            frames //= group
        for name in ('cross_clip_ratio', 'intra_clip_ratio'):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                fail(name, f'must be in [0, 1), got {value}')
        r = self.imgme_r
        values = (r, ) if isinstance(r, int) else r
        if any(v < 0 for v in values):
            fail('imgme_r', f'must be >= 0, got {r}')
        if not isinstance(r, int) and len(r) != self.num_imgme_layers:
            fail('imgme_r', f'has {len(r)} entries but there are {self.num_imgme_layers} '
                 'ImgMe layers (the layers before the first merge layer)')

    @property
    def num_imgme_layers(self) -> int:
        return self.merge_layers[0] if self.merge_layers else self.num_layers

    def _imgme_r(self, layer: int) -> int:
        return self.imgme_r if isinstance(self.imgme_r, int) else self.imgme_r[layer]

    # -- the plan -------------------------------------------------------------------
    def _plan(self) -> List[LayerPlan]:
        groups = dict(zip(self.merge_layers, self.clips_per_merge))
        clips, tokens, cls = self.num_frames, self.tokens_per_frame, 1
        plans = []
        for layer in range(self.num_layers):
            group, cross_r = groups.get(layer, 1), 0
            if layer < self.num_imgme_layers:
                intra_r = self._imgme_r(layer)
                if intra_r > max_merge(tokens, cls):
                    raise ValueError(
                        f'invalid merge schedule: imgme_r={intra_r} at layer {layer} exceeds '
                        f'half of the {tokens - cls} patch tokens left in each frame')
            else:
                if group > 1:
                    grouped = tokens * group
                    cross_r = min(int(grouped * self.cross_clip_ratio),
                                  max_merge(grouped, cls * group))
                grouped = tokens * group - cross_r
                intra_r = min(int(grouped * self.intra_clip_ratio),
                              max_merge(grouped, cls * group))
            plan = LayerPlan(layer, group, clips, tokens, cls, cross_r, intra_r)
            plans.append(plan)
            clips, tokens, cls = plan.clips_out, plan.tokens_out, plan.cls_out
        return plans

    @property
    def layers(self) -> Tuple[LayerPlan, ...]:
        return self._layers  # type: ignore[attr-defined]

    @property
    def output_clips(self) -> int:
        return self.layers[-1].clips_out

    @property
    def output_tokens_per_video(self) -> int:
        last = self.layers[-1]
        return last.clips_out * last.tokens_out

    def tokens_per_video(self) -> List[int]:
        """Tokens per video after each layer (input first)."""
        return [self.num_frames * self.tokens_per_frame] + [
            p.clips_out * p.tokens_out for p in self.layers]

    def block_output_shapes(self, batch: int, width: int) -> List[Tuple[int, int, int]]:
        """(batch * clips, tokens, width) after each block, as the encoder produces."""
        return [(batch * p.clips_out, p.tokens_out, width) for p in self.layers]

    @classmethod
    def plain(cls, num_layers: int, num_frames: int, tokens_per_frame: int) -> 'MergeSchedule':
        """No merging: per-frame CLIP."""
        return cls(num_layers, num_frames, tokens_per_frame, **cls.preset('none'))
