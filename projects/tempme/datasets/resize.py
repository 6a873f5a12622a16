"""CLIP's resize and centre crop, through PIL exactly as the reference loader runs them.

mmaction2's ``Resize`` + ``CenterCrop`` resize with OpenCV (bilinear, no antialiasing
when shrinking) and round the crop offset down; the published TempMe loader uses
torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on PIL images (PIL's
antialiased bicubic, offset rounded half to even). On the reference fixture videos
the OpenCV path is off by 12 to 45 grey levels on average, this one by 0. The
torchvision functions are called on PIL images, as the reference does, rather than
re-implemented.
"""
from typing import Dict

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

_INTERPOLATION = {
    'bicubic': InterpolationMode.BICUBIC,
    'bilinear': InterpolationMode.BILINEAR,
}


def resize_center_crop(frame: np.ndarray, size: int,
                       interpolation: str = 'bicubic') -> np.ndarray:
    """Resize the short side of an (H, W, 3) uint8 frame to ``size``, then crop the centre."""
    height, width = frame.shape[:2]
    if min(height, width) == size:
        # short side already at size (compressed videos): torchvision's resize returns the
        # image unchanged, so only its centre crop (offsets rounded as F.center_crop) is left
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
        return np.ascontiguousarray(frame[top:top + size, left:left + size])
    image = Image.fromarray(frame)
    image = F.resize(image, size, interpolation=_INTERPOLATION[interpolation])
    image = F.center_crop(image, size)
    return np.asarray(image.convert('RGB'))


@TRANSFORMS.register_module()
class PILResizeCenterCrop(BaseTransform):
    """Short side to ``size`` with PIL (antialiased), then a ``size`` x ``size`` centre crop.

    Frames stay uint8 ``(H, W, 3)``; the data preprocessor normalises them.

    Args:
        size: Output side in pixels (the encoder's image size).
        interpolation: ``'bicubic'`` (the reference) or ``'bilinear'``.
    """

    def __init__(self, size: int = 224, interpolation: str = 'bicubic') -> None:
        if size < 1:
            raise ValueError(f'size must be >= 1, got {size}')
        if interpolation not in _INTERPOLATION:
            raise ValueError(
                f'interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}')
        self.size = size
        self.interpolation = interpolation

    def transform(self, results: Dict) -> Dict:
        imgs = [resize_center_crop(frame, self.size, self.interpolation)
                for frame in results['imgs']]
        results['imgs'] = imgs
        results['img_shape'] = imgs[0].shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size={self.size}, '
                f'interpolation={self.interpolation!r})')
