"""Errors a user fixes by changing an input: this project's tools report them in one line.

Each names the file or config field at fault, so a traceback adds nothing but noise; the
scripts in ``tools/`` catch :data:`USER_ERRORS` at their entry and exit with the message.
"""
import sys
from typing import Callable, Tuple, Type, TypeVar

from .checkpoint import CheckpointLoadError
from .config_checks import ConfigMismatchError
from .datasets.frame_cache import FrameCacheError
from .datasets.video_text_dataset import AnnotationError
from .engine.strict_load import CheckpointMismatchError
from .file_configs import UnsafeFileConfigError
from .models.torchscript_weights import TorchScriptReadError

__all__ = ['USER_ERRORS', 'exit_on_user_error']

#: Bad checkpoints, configs whose fields disagree, annotations, frame caches, configs read
#: from files, CLIP weight archives.
USER_ERRORS: Tuple[Type[Exception], ...] = (
    AnnotationError, CheckpointLoadError, CheckpointMismatchError, ConfigMismatchError,
    FrameCacheError, TorchScriptReadError, UnsafeFileConfigError)

T = TypeVar('T')


def exit_on_user_error(main: Callable[[], T]) -> T:
    """``main()``; a :data:`USER_ERRORS` exception exits with ``error: <type>: <message>``."""
    try:
        return main()
    except USER_ERRORS as err:
        sys.exit(f'error: {type(err).__name__}: {err}')
