"""A synthetic text-video retrieval benchmark in which temporal order matters.

A video is two segments played one after the other, each about half of the frames:

- ``pair`` scenes: one object per segment, e.g. "a red square moves left, then a blue
  circle appears" (the first object is gone when the second segment starts);
- ``single`` scenes: one object doing two things in a row, e.g. "a red square moves
  left, then up" (the second segment starts where the first one ended).

A segment's action is ``move`` (left/right/up/down), ``appear``, ``disappear`` or
``recolour`` ("turns blue"). None of them reads the same backwards, so rearranging a
video's frames changes what happened while keeping the frames themselves:

- *swap* (pair scenes): segment B, then segment A;
- *reverse*: the whole video backwards ("moves left, then up" becomes "moves down,
  then right"; "appears" becomes "disappears"; "turns blue" becomes "turns red").

Videos made from one scene by these rearrangements form an *order-twin group*: they
hold exactly the same multiset of frames, and their order-dependent captions differ.

Definitions (used by :func:`order_blind_ceiling` and :func:`split_statistics`):

- *frame multiset* of a video: the sorted tuple of hashes of its raw rendered frames
  (before video compression);
- an *order-blind* model computes a video's feature from its frame multiset only (e.g.
  the mean of per-frame features), so videos with equal multisets get equal features
  and tie for every caption;
- *order-blind ceiling* (text-to-video R@1, percent): the share of captions whose
  video's frame multiset is held by no other video of the gallery. Ties count against
  the model: a caption whose video shares its multiset is never a hit. The bound also
  assumes that the model separates every two videos with different multisets; it
  ignores captions whose text also describes another video (see
  ``caption_text_collisions``, which the evaluation splits avoid when they can);
- a caption *requires temporal order* when its video has an order twin in the split (a
  video with the same frame multiset) and the caption is not among the captions the
  generator can write for that twin. The ceiling restricted to those captions is 0.

Captions are numbered globally in annotation order, video by video, as mmaction2's
``VideoTextDataset`` reads them. This module needs only numpy and OpenCV.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from typing import Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

GENERATOR_VERSION = 1

COLOURS: Dict[str, Tuple[int, int, int]] = {  # RGB
    'red': (255, 0, 0),
    'green': (0, 255, 0),
    'blue': (0, 0, 255),
    'yellow': (255, 255, 0),
    'white': (255, 255, 255),
}
SHAPES: Tuple[str, ...] = ('square', 'circle', 'triangle')
DIRECTIONS: Dict[str, Tuple[int, int]] = {
    'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}
BACKGROUND: Tuple[int, int, int] = (0, 0, 0)

ORDER_TEMPLATES: Tuple[str, ...] = ('then', 'first', 'after', 'before')
ORDER_FREE_TEMPLATES: Tuple[str, ...] = ('and', 'objects')

# Object side and travel of one move, as fractions of the frame size (14-20 px and
# 11-18 px at 56 px: several 8 px patches, so a model with that patch size sees them).
OBJECT_FRACTION = (0.25, 0.36)
TRAVEL_FRACTION = (0.20, 0.32)
MARGIN = 2
_MAX_TRIES = 1000


@dataclass(frozen=True)
class Segment:
    """One object doing one thing over ``length`` frames.

    ``start`` is the object's centre (x, y) at the first frame; a move adds ``step``
    per frame. ``appear`` shows the object from frame ``switch`` on, ``disappear``
    before it, and ``recolour`` paints it ``new_colour`` from frame ``switch`` on.
    Fields an action does not use keep their defaults, so equal segments render
    equal frames.
    """

    shape: str
    colour: str
    size: int
    action: str
    length: int
    start: Tuple[int, int]
    step: Tuple[int, int] = (0, 0)
    switch: int = 0
    new_colour: str = ''

    @property
    def end(self) -> Tuple[int, int]:
        """Centre at the last frame."""
        k = self.length - 1
        return (self.start[0] + self.step[0] * k, self.start[1] + self.step[1] * k)

    @property
    def final_colour(self) -> str:
        return self.new_colour if self.action == 'recolour' else self.colour

    @property
    def direction(self) -> str:
        """Name of the move's direction ('' for other actions)."""
        if self.action != 'move':
            return ''
        sign = (int(np.sign(self.step[0])), int(np.sign(self.step[1])))
        return next(name for name, unit in DIRECTIONS.items() if unit == sign)

    def object_at(self, k: int) -> Optional[Tuple[str, str, Tuple[int, int], int]]:
        """(shape, colour, centre, size) drawn at frame ``k``, or None when hidden."""
        if self.action == 'appear' and k < self.switch:
            return None
        if self.action == 'disappear' and k >= self.switch:
            return None
        colour = self.new_colour if self.action == 'recolour' and k >= self.switch else (
            self.colour)
        centre = (self.start[0] + self.step[0] * k, self.start[1] + self.step[1] * k)
        return self.shape, colour, centre, self.size

    def reversed(self) -> 'Segment':
        """The segment played backwards: frame k of the result is frame length-1-k."""
        if self.action == 'move':
            return replace(self, start=self.end, step=(-self.step[0], -self.step[1]))
        if self.action == 'appear':
            return replace(self, action='disappear', switch=self.length - self.switch)
        if self.action == 'disappear':
            return replace(self, action='appear', switch=self.length - self.switch)
        if self.action == 'recolour':
            return replace(self, colour=self.new_colour, new_colour=self.colour,
                           switch=self.length - self.switch)
        raise ValueError(f'unknown action {self.action!r}')


@dataclass(frozen=True)
class Scene:
    """A video: ``segments[0]`` then ``segments[1]``; ``kind`` is 'pair' or 'single'."""

    kind: str
    segments: Tuple[Segment, Segment]

    @property
    def num_frames(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass(frozen=True)
class Caption:
    """A caption and the template that wrote it; order-free ones hold in any order."""

    template: str
    text: str
    order_free: bool


@dataclass(frozen=True)
class Video:
    """One generated video of a split: file name, scene, written captions, twin group."""

    name: str
    scene: Scene
    captions: Tuple[Caption, ...]
    group: int


# ---------------------------------------------------------------------------------
# Rearrangements


def reverse_scene(scene: Scene) -> Scene:
    """The video played backwards (same frames, reversed order)."""
    a, b = scene.segments
    return Scene(scene.kind, (b.reversed(), a.reversed()))


def swap_scene(scene: Scene) -> Scene:
    """Segment B, then segment A (same frames); only pair scenes stay describable."""
    if scene.kind != 'pair':
        raise ValueError('only pair scenes can swap their segments')
    a, b = scene.segments
    return Scene(scene.kind, (b, a))


TWIN_MODES: Tuple[str, ...] = ('none', 'swap', 'reverse', 'both')


def twin_variants(scene: Scene, mode: str) -> List[Scene]:
    """The scene and its order twins: 1 ('none'), 2 ('swap', 'reverse') or 4 ('both')."""
    if mode == 'none':
        return [scene]
    if mode == 'swap':
        return [scene, swap_scene(scene)]
    if mode == 'reverse':
        return [scene, reverse_scene(scene)]
    if mode == 'both':
        swapped = swap_scene(scene)
        return [scene, swapped, reverse_scene(scene), reverse_scene(swapped)]
    raise ValueError(f'unknown twin mode {mode!r}')


# ---------------------------------------------------------------------------------
# Rendering


def _draw(frame: np.ndarray, shape: str, colour: str, centre: Tuple[int, int],
          size: int) -> None:
    rgb = tuple(int(c) for c in COLOURS[colour])
    x, y = centre
    x0, y0 = x - size // 2, y - size // 2
    x1, y1 = x0 + size - 1, y0 + size - 1
    if shape == 'square':
        cv2.rectangle(frame, (x0, y0), (x1, y1), rgb, thickness=-1)
    elif shape == 'circle':
        cv2.circle(frame, (x, y), size // 2, rgb, thickness=-1)
    elif shape == 'triangle':
        points = np.array([[x, y0], [x0, y1], [x1, y1]], dtype=np.int32)
        cv2.fillPoly(frame, [points], rgb)
    else:
        raise ValueError(f'unknown shape {shape!r}')


def render_scene(scene: Scene, size: int) -> np.ndarray:
    """RGB frames ``(T, size, size, 3)`` uint8; equal segments give equal frames."""
    frames = []
    for segment in scene.segments:
        for k in range(segment.length):
            frame = np.empty((size, size, 3), dtype=np.uint8)
            frame[:] = BACKGROUND
            drawn = segment.object_at(k)
            if drawn is not None:
                _draw(frame, *drawn)
            frames.append(frame)
    return np.stack(frames)


def frame_multiset(frames: np.ndarray) -> Tuple[str, ...]:
    """Sorted hashes of the frames: what an order-blind model can depend on."""
    return tuple(sorted(
        hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).hexdigest()
        for f in frames))


def write_video(path: str, frames: np.ndarray, fps: float) -> None:
    """Write RGB frames as an mp4 ('mp4v'), one video frame per array frame."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps,
                             (width, height))
    if not writer.isOpened():
        raise OSError(f'OpenCV cannot write {path}')
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# ---------------------------------------------------------------------------------
# Captions


def _noun(segment: Segment) -> str:
    return f'a {segment.colour} {segment.shape}'


def _verb(segment: Segment) -> str:
    return {'move': f'moves {segment.direction}', 'appear': 'appears',
            'disappear': 'disappears', 'recolour': f'turns {segment.new_colour}'}[
                segment.action]


def _gerund(segment: Segment) -> str:
    return {'move': f'moving {segment.direction}', 'appear': 'appearing',
            'disappear': 'disappearing', 'recolour': f'turning {segment.new_colour}'}[
                segment.action]


def all_captions(scene: Scene) -> List[Caption]:
    """Every caption the generator can write for the scene, one per template.

    Order-dependent templates: ``then`` ("X, then Y"), ``first`` ("first X, then Y"),
    ``after`` ("Y after X"), ``before`` ("X before Y"). Pair scenes also get the
    order-free ``and`` ("X and Y", clauses sorted) and ``objects`` ("a red square and
    a blue circle", sorted), which read the same for a scene and its swap.
    """
    a, b = scene.segments
    if scene.kind == 'pair':
        x, y = f'{_noun(a)} {_verb(a)}', f'{_noun(b)} {_verb(b)}'
        return [
            Caption('then', f'{x}, then {y}', False),
            Caption('first', f'first {x}, then {y}', False),
            Caption('after', f'{y} after {x}', False),
            Caption('before', f'{x} before {y}', False),
            Caption('and', ' and '.join(sorted((x, y))), True),
            Caption('objects', ' and '.join(sorted((_noun(a), _noun(b)))), True),
        ]
    if scene.kind == 'single':
        subject, first, second = _noun(a), _verb(a), _verb(b)
        if a.action == b.action == 'move':
            then = f'{subject} moves {a.direction}, then {b.direction}'
        else:
            then = f'{subject} {first}, then {second}'
        return [
            Caption('then', then, False),
            Caption('first', f'first {subject} {first}, then it {second}', False),
            Caption('after', f'{subject} {second} after {_gerund(a)}', False),
            Caption('before', f'{subject} {first} before {_gerund(b)}', False),
        ]
    raise ValueError(f'unknown scene kind {scene.kind!r}')


def sample_captions(rng: np.random.Generator, scene: Scene, count: int) -> Tuple[Caption, ...]:
    """``count`` captions from distinct templates (fewer if the scene has fewer)."""
    options = all_captions(scene)
    picks = rng.choice(len(options), size=min(count, len(options)), replace=False)
    return tuple(options[int(i)] for i in picks)


# ---------------------------------------------------------------------------------
# Sampling


def _pick(rng: np.random.Generator, options: Sequence[str],
          probs: Optional[Sequence[float]] = None) -> str:
    return options[int(rng.choice(len(options), p=probs))]


def _other_colour(rng: np.random.Generator, colour: str) -> str:
    return _pick(rng, [c for c in COLOURS if c != colour])


def _step(rng: np.random.Generator, direction: str, length: int, size: int,
          room: int) -> Tuple[int, int]:
    """Per-frame displacement of a move; total travel fits in ``room`` pixels."""
    low, high = (int(round(f * size)) for f in TRAVEL_FRACTION)
    travel = min(int(rng.integers(low, high + 1)), room)
    speed = travel // (length - 1)
    if speed < 1:
        raise ValueError(f'a {length}-frame move does not fit in a {size} px frame')
    dx, dy = DIRECTIONS[direction]
    return dx * speed, dy * speed


def _place(rng: np.random.Generator, size: int, obj: int,
           offsets: Sequence[Tuple[int, int]]) -> Tuple[int, int]:
    """A start centre keeping the whole object inside the frame at every offset."""
    low = obj // 2 + MARGIN
    high = size - 1 - (obj - obj // 2) - MARGIN
    start = []
    for axis in range(2):
        values = [o[axis] for o in offsets]
        lo, hi = low - min(values), high - max(values)
        if lo > hi:
            raise ValueError(f'objects of {obj} px do not fit a {size} px frame')
        start.append(int(rng.integers(lo, hi + 1)))
    return start[0], start[1]


def _object_size(rng: np.random.Generator, size: int) -> int:
    low, high = (int(round(f * size)) for f in OBJECT_FRACTION)
    return int(rng.integers(low, high + 1))


def _room(size: int, obj: int) -> int:
    return size - obj - 1 - 2 * MARGIN


def _pair_segment(rng: np.random.Generator, shape: str, colour: str, length: int,
                  size: int) -> Segment:
    obj = _object_size(rng, size)
    action = _pick(rng, ('move', 'appear', 'disappear', 'recolour'), (0.4, 0.2, 0.2, 0.2))
    step, switch, new_colour = (0, 0), 0, ''
    if action == 'move':
        step = _step(rng, _pick(rng, tuple(DIRECTIONS)), length, size, _room(size, obj))
    else:
        switch = length // 2
    if action == 'recolour':
        new_colour = _other_colour(rng, colour)
    travel = (step[0] * (length - 1), step[1] * (length - 1))
    start = _place(rng, size, obj, [(0, 0), travel])
    return Segment(shape, colour, obj, action, length, start, step, switch, new_colour)


def _single_scene(rng: np.random.Generator, lengths: Tuple[int, int], size: int) -> Scene:
    obj = _object_size(rng, size)
    shape, colour = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS))
    first = _pick(rng, ('move', 'appear', 'recolour'), (0.6, 0.2, 0.2))
    second = _pick(rng, ('move', 'disappear', 'recolour'), (0.6, 0.2, 0.2))
    if first == 'appear' and second == 'disappear':  # reads the same backwards
        second = 'move'
    room = _room(size, obj)
    specs = []
    current, direction = colour, ''
    for action, length in zip((first, second), lengths):
        step, switch, new_colour = (0, 0), 0, ''
        if action == 'move':
            # a second move turns a corner: straight or back-and-forth paths are
            # ambiguous or read the same backwards
            choices = [d for d in DIRECTIONS if not direction
                       or DIRECTIONS[d][0] * DIRECTIONS[direction][0] == 0
                       and DIRECTIONS[d][1] * DIRECTIONS[direction][1] == 0]
            direction = _pick(rng, choices)
            step = _step(rng, direction, length, size, room)
        else:
            switch = length // 2
        if action == 'recolour':
            new_colour = _other_colour(rng, current)
        specs.append((action, length, step, switch, current, new_colour))
        current = new_colour or current
    offsets = [(0, 0)]
    for action, length, step, *_ in specs:
        last = offsets[-1]
        offsets.append((last[0] + step[0] * (length - 1), last[1] + step[1] * (length - 1)))
    start = _place(rng, size, obj, offsets)
    segments = []
    for (action, length, step, switch, seg_colour, new_colour), offset in zip(specs, offsets):
        centre = (start[0] + offset[0], start[1] + offset[1])
        segments.append(Segment(shape, seg_colour, obj, action, length, centre, step, switch,
                                new_colour))
    return Scene('single', (segments[0], segments[1]))


def sample_scene(rng: np.random.Generator, kind: str, frames: int, size: int) -> Scene:
    """A random scene of ``frames`` frames: segments of ``frames // 2`` and the rest."""
    if frames < 4:
        raise ValueError(f'need at least 4 frames (2 per segment), got {frames}')
    lengths = (frames // 2, frames - frames // 2)
    if kind == 'single':
        return _single_scene(rng, lengths, size)
    if kind == 'pair':
        objects = [(s, c) for s in SHAPES for c in COLOURS]
        i, j = rng.choice(len(objects), size=2, replace=False)
        a = _pair_segment(rng, *objects[int(i)], lengths[0], size)
        b = _pair_segment(rng, *objects[int(j)], lengths[1], size)
        return Scene('pair', (a, b))
    raise ValueError(f'unknown scene kind {kind!r}')


def _distinguishable(members: Sequence[Scene]) -> bool:
    """No member's order-dependent caption also describes another member."""
    texts = [{c.text for c in all_captions(m)} for m in members]
    for i, member in enumerate(members):
        ordered = {c.text for c in all_captions(member) if not c.order_free}
        if any(ordered & texts[j] for j in range(len(members)) if j != i):
            return False
    return True


def sample_group(rng: np.random.Generator, kind: str, mode: str, frames: int,
                 size: int) -> List[Scene]:
    """A scene and its order twins (``twin_variants``), all told apart by captions."""
    for _ in range(_MAX_TRIES):
        members = twin_variants(sample_scene(rng, kind, frames, size), mode)
        if _distinguishable(members):
            return members
    raise RuntimeError(f'could not sample a {kind} group with mode {mode!r}')


def _group_shape(rng: np.random.Generator, twins_left: int) -> Tuple[str, str]:
    """(kind, twin mode) of the next group given how many twin videos are still due."""
    kind = _pick(rng, ('single', 'pair'))
    if twins_left < 2:
        return kind, 'none'
    if kind == 'single':
        return kind, 'reverse'
    mode = _pick(rng, ('swap', 'reverse', 'both'), (0.4, 0.3, 0.3))
    if mode == 'both' and twins_left < 4:
        mode = 'swap'
    return kind, mode


def sample_split(rng: np.random.Generator, num_videos: int, *, prefix: str, frames: int,
                 size: int, captions_per_video: int, twin_fraction: float,
                 unique_captions: bool) -> List[Video]:
    """The videos of one split, shuffled, named ``{prefix}_{index:05d}.mp4``.

    ``round(twin_fraction * num_videos)`` videos belong to order-twin groups (of 2 or 4
    videos); the others have no twin. With ``unique_captions`` (evaluation splits) a
    group is redrawn, up to a bound, while any caption it could get equals one another
    group could get, so that no caption text describes two groups.
    """
    if captions_per_video < 1:
        raise ValueError('captions_per_video must be >= 1')
    if not 0.0 <= twin_fraction <= 1.0:
        raise ValueError('twin_fraction must be in [0, 1]')
    twins_left = int(round(twin_fraction * num_videos))
    used_texts: set = set()
    groups: List[List[Scene]] = []
    count = 0
    while count < num_videos:
        room = num_videos - count
        for _ in range(_MAX_TRIES):
            kind, mode = _group_shape(rng, min(twins_left, room))
            members = sample_group(rng, kind, mode, frames, size)
            texts = {c.text for m in members for c in all_captions(m)}
            if not unique_captions or not texts & used_texts:
                break
        used_texts |= texts
        groups.append(members)
        count += len(members)
        if len(members) > 1:
            twins_left -= len(members)
    order = rng.permutation(num_videos)
    flat = [(g, scene) for g, members in enumerate(groups) for scene in members]
    videos = []
    for index, position in enumerate(order):
        group, scene = flat[int(position)]
        videos.append(Video(f'{prefix}_{index:05d}.mp4', scene,
                            sample_captions(rng, scene, captions_per_video), group))
    return videos


# ---------------------------------------------------------------------------------
# Ceiling and statistics


def order_blind_hits(frame_multisets: Sequence[Hashable],
                     caption_to_video: Sequence[int]) -> List[bool]:
    """Per caption: can an order-blind model rank its video first without a tie?"""
    counts = Counter(frame_multisets)
    return [counts[frame_multisets[int(v)]] == 1 for v in caption_to_video]


def order_blind_ceiling(frame_multisets: Sequence[Hashable], caption_to_video: Sequence[int],
                        captions: Optional[Iterable[int]] = None) -> float:
    """Best text-to-video R@1 (percent) of a model that sees frame multisets only.

    ``frame_multisets[v]`` is any hashable that is equal for two videos exactly when
    they hold the same multiset of frames (e.g. :func:`frame_multiset`);
    ``caption_to_video[i]`` is the gallery index of caption ``i``'s video. Caption ``i``
    counts as a hit iff no other video has the same multiset as its video: tied videos
    get identical features, and ties count against the model. The result is
    ``100 * hits / considered`` over all captions, or over the global caption ids in
    ``captions`` when given.
    """
    hits = order_blind_hits(frame_multisets, caption_to_video)
    ids = range(len(hits)) if captions is None else [int(i) for i in captions]
    if len(ids) == 0:
        raise ValueError('no captions to score')
    return 100.0 * sum(hits[i] for i in ids) / len(ids)


def order_dependent_caption_ids(videos: Sequence[Video],
                                frame_multisets: Sequence[Hashable]) -> List[int]:
    """Global ids of captions that require temporal order (see the module docstring)."""
    by_multiset: Dict[Hashable, List[int]] = {}
    for v, key in enumerate(frame_multisets):
        by_multiset.setdefault(key, []).append(v)
    ids, caption_id = [], 0
    for v, video in enumerate(videos):
        twins = [w for w in by_multiset[frame_multisets[v]] if w != v]
        twin_texts = [{c.text for c in all_captions(videos[w].scene)} for w in twins]
        for caption in video.captions:
            if any(caption.text not in texts for texts in twin_texts):
                ids.append(caption_id)
            caption_id += 1
    return ids


def split_statistics(videos: Sequence[Video],
                     frame_multisets: Sequence[Hashable]) -> Dict[str, object]:
    """The meta.json entry of a split: ceilings, chance, twin groups, caption ids."""
    caption_to_video = [v for v, video in enumerate(videos) for _ in video.captions]
    multiset_sizes = Counter(frame_multisets)
    groups: Dict[Hashable, List[str]] = {}
    for video, key in zip(videos, frame_multisets):
        groups.setdefault(key, []).append(video.name)
    twin_groups = sorted(names for names in groups.values() if len(names) > 1)
    ordered = order_dependent_caption_ids(videos, frame_multisets)
    writers: Dict[str, set] = {}
    for video, key in zip(videos, frame_multisets):
        for caption in video.captions:
            writers.setdefault(caption.text, set()).add(key)
    collisions = sum(len(writers[c.text]) > 1 for video in videos for c in video.captions)
    num_captions = len(caption_to_video)
    return {
        'num_videos': len(videos),
        'num_captions': num_captions,
        'num_order_free_captions': sum(c.order_free for v in videos for c in v.captions),
        'num_twin_groups': len(twin_groups),
        'num_videos_with_twin': sum(multiset_sizes[k] > 1 for k in frame_multisets),
        'chance_t2v_R1': round(100.0 / len(videos), 4) if videos else None,
        'order_blind_ceiling_t2v_R1': (
            round(order_blind_ceiling(frame_multisets, caption_to_video), 4)
            if num_captions else None),
        'order_dependent_ceiling_t2v_R1': (
            round(order_blind_ceiling(frame_multisets, caption_to_video, ordered), 4)
            if ordered else None),
        'caption_text_collisions': collisions,
        'order_dependent_captions': ordered,
        'twin_groups': twin_groups,
    }


def annotation(videos: Sequence[Video]) -> Dict[str, List[str]]:
    """The split's ``{video_file: [caption, ...]}`` annotation, in video order."""
    return {video.name: [c.text for c in video.captions] for video in videos}
