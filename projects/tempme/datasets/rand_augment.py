"""RandAugment drawn once per clip, on timm's RandAugment operations.

TempMe trains with ``rand-m7-n4-mstd0.5-inc1`` applied to the decoded frames before the
resize: four operations chosen per clip, each applied (or not) with one magnitude to
every frame, so the clip stays temporally consistent. timm's ``RandAugment`` draws the
operations, probabilities and magnitudes again for every image it is called on, so
this module keeps timm's operations and policy parsing and only moves the draws to the
clip level, consuming the random streams in the same order as the reference.
"""
import random
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from PIL import Image
from timm.data.auto_augment import AugmentOp, rand_augment_transform

_INTERPOLATION = {
    'bicubic': Image.BICUBIC,
    'bilinear': Image.BILINEAR,
    'random': (Image.BILINEAR, Image.BICUBIC),
}


def _draw_arguments(op: AugmentOp) -> Optional[Tuple]:
    """The operation's arguments for one clip, or ``None`` when it is skipped.

    The same draws as ``AugmentOp.__call__``: apply with probability ``op.prob``, a
    magnitude around ``op.magnitude`` (std ``op.magnitude_std``, clipped to [0, 10]
    unless ``magnitude_max`` says otherwise), then the level's own draws (a sign).
    """
    if op.prob < 1.0 and random.random() > op.prob:
        return None
    magnitude = op.magnitude
    if op.magnitude_std == float('inf'):
        magnitude = random.uniform(0, magnitude)
    elif op.magnitude_std > 0:
        magnitude = random.gauss(magnitude, op.magnitude_std)
    magnitude = max(0.0, min(magnitude, op.magnitude_max or 10.0))
    return op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()


@TRANSFORMS.register_module()
class ClipRandAugment(BaseTransform):
    """timm RandAugment with one draw of operations and magnitudes per clip.

    Works on ``results['imgs']`` (uint8 ``(H, W, 3)`` frames) and keeps them uint8.

    Args:
        config: timm's RandAugment string; TempMe's is ``'rand-m7-n4-mstd0.5-inc1'``.
        translate_const: Absolute translation at full magnitude, in pixels (the
            reference sets ``int(0.45 * 224) = 100``; the ``inc1`` operations translate
            by a fraction of the frame instead).
        interpolation: Resampling of the geometric operations: ``'bicubic'`` (the
            reference), ``'bilinear'`` or ``'random'``.
    """

    def __init__(self, config: str = 'rand-m7-n4-mstd0.5-inc1', translate_const: int = 100,
                 interpolation: str = 'bicubic') -> None:
        if interpolation not in _INTERPOLATION:
            raise ValueError(
                f'interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}')
        if not isinstance(config, str) or not config.startswith('rand'):
            raise ValueError(f"config must be a RandAugment string such as "
                             f"'rand-m7-n4-mstd0.5-inc1', got {config!r}")
        self.config = config
        self.translate_const = translate_const
        self.interpolation = interpolation
        try:
            self.policy = rand_augment_transform(
                config, dict(translate_const=translate_const,
                             interpolation=_INTERPOLATION[interpolation]))
        except (AssertionError, ValueError) as err:
            raise ValueError(f'invalid RandAugment config {config!r}: {err}') from None

    def draw(self) -> List[Tuple[Callable, Tuple, Dict]]:
        """The clip's operations: ``(function, arguments, keyword arguments)`` each."""
        policy = self.policy
        ops = np.random.choice(policy.ops, policy.num_layers,
                               replace=policy.choice_weights is None, p=policy.choice_weights)
        drawn = []
        for op in ops:
            args = _draw_arguments(op)
            if args is not None:
                drawn.append((op.aug_fn, args, op.kwargs))
        return drawn

    def transform(self, results: Dict) -> Dict:
        drawn = self.draw()
        if not drawn:
            return results
        frames = [Image.fromarray(frame) for frame in results['imgs']]
        for fn, args, kwargs in drawn:
            frames = [fn(frame, *args, **kwargs) for frame in frames]
        results['imgs'] = [np.asarray(frame.convert('RGB')) for frame in frames]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(config={self.config!r}, '
                f'translate_const={self.translate_const}, '
                f'interpolation={self.interpolation!r})')
