"""Errors a user fixes by changing an input: this project's tools report them in one line.

Each names the file or config field at fault, so a traceback adds nothing but noise; the
scripts in ``tools/`` run their ``main`` through :func:`exit_on_user_error`, which prints
``error: <type>: <message>`` and exits with status 2 (:mod:`projects.tempme_cli`).
"""
from pathlib import Path
from typing import Callable, Optional, Tuple, Type, TypeVar

from projects.tempme_cli import UserError, run_tool

from .checkpoint import CheckpointLoadError
from .config_checks import ConfigMismatchError
from .datasets.frame_cache import FrameCacheError
from .datasets.video_text_dataset import AnnotationError, VideoCheckError
from .engine.strict_load import CheckpointMismatchError
from .file_configs import UnsafeFileConfigError
from .models.torchscript_weights import TorchScriptReadError

__all__ = ['USER_ERRORS', 'UserError', 'exit_on_user_error']

#: Bad checkpoints, configs whose fields disagree, annotations, unreadable videos, frame
#: caches, configs read from files, CLIP weight archives. Missing files
#: (``FileNotFoundError``) and :class:`UserError` are reported the same way.
USER_ERRORS: Tuple[Type[Exception], ...] = (
    AnnotationError, CheckpointLoadError, CheckpointMismatchError, ConfigMismatchError,
    FrameCacheError, TorchScriptReadError, UnsafeFileConfigError, VideoCheckError)

T = TypeVar('T')


def exit_on_user_error(main: Callable[[], T], root: Optional[Path] = None) -> T:
    """``main()``; a user error exits with status 2 and one line, ``error: ...``.

    ``root`` (the repository root) lets a missing relative path say that the configs'
    paths are relative to it, when the tool runs from another directory.
    """
    return run_tool(main, USER_ERRORS, root)
