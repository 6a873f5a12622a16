"""Third-party warnings that concern no TempMe component, hidden by this project's tools.

Importing :mod:`projects.tempme` sets no warning filter: a process that imports the plugin
sees every warning it saw before. This project's scripts (``tools/``) run their ``main``
inside :func:`ignore_known_warnings`, so their output is not buried under warnings about
code they never run; the filters are restored when the block ends.
"""
import contextlib
import warnings
from typing import Iterator, Tuple, Type

__all__ = ['KNOWN_WARNINGS', 'ignore_known_warnings']

#: (category, message regex) of each warning hidden, and why it does not concern TempMe:
#: - mmcv-lite has no compiled ops; mmaction2 imports mmcv's transformer bricks, which warn
#:   that MultiScaleDeformableAttention is unavailable (no TempMe component uses it);
#: - mmaction2 1.2.0 imports timm.models.layers, deprecated since timm 0.9.
KNOWN_WARNINGS: Tuple[Tuple[Type[Warning], str], ...] = (
    (UserWarning, r'Fail to import ``MultiScaleDeformableAttention``'),
    (FutureWarning, r'Importing from timm\.models\.layers is deprecated'),
)


@contextlib.contextmanager
def ignore_known_warnings() -> Iterator[None]:
    """Hide :data:`KNOWN_WARNINGS` inside the block; every other warning shows as before."""
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings('ignore', message=message, category=category)
        yield
