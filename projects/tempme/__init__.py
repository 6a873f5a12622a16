"""TempMe for mmaction2: temporal token merging for efficient text-video retrieval.

Importing this package first applies the compatibility fixes for the dependency stack
(:mod:`projects.tempme.compat`), then registers every component in mmaction2's
registries, so configs can use it through ``custom_imports``.
"""
# isort: off
import warnings

# Known third-party warnings that every tool would otherwise print, filtered by message:
# - mmcv-lite has no compiled ops; mmaction2 imports mmcv's transformer bricks, which warn
#   that MultiScaleDeformableAttention is unavailable (no TempMe component uses it);
# - mmaction2 1.2.0 imports timm.models.layers, deprecated since timm 0.9.
warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')
warnings.filterwarnings('ignore', message='Importing from timm.models.layers is deprecated',
                        category=FutureWarning)

from . import compat  # noqa: F401,E402  (must run before anything imports mmaction.models)
# Importing the submodules registers their components.
from . import datasets, engine, evaluation, merging, models  # noqa: F401,E402
