"""What this project's scripts share before they import torch: one-line user errors.

Standard library only, so that a script can parse its arguments, answer ``--help`` and
refuse a missing config file at once, before the heavy imports (torch, mmengine's runner,
mmaction2) that take 5-20 s on a busy machine.

An error the user fixes by changing an input (a path, a config field) is reported as one
line, ``error: <message>``, on stderr, with exit status 2 (argparse's status for bad
arguments); anything else keeps its traceback. Paths in this project's configs
(``data_root``, ``ann_file``, ``model.clip.weights``) are relative to the directory a tool
runs from: the repository root. A missing relative path says so when the tool runs from
elsewhere.
"""
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, NoReturn, Optional, Tuple, Type, TypeVar

__all__ = ['EXIT_USER_ERROR', 'UserError', 'fail', 'relative_path_hint', 'require_file',
           'run_tool', 'missing_inputs']

#: Exit status of a user error: argparse's for bad arguments.
EXIT_USER_ERROR = 2

T = TypeVar('T')


class UserError(Exception):
    """An input the user has to change (a path, a config field); shown in one line."""


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit with :data:`EXIT_USER_ERROR`, no traceback.

    Messages are one line, except those that list several bad inputs, one per line.
    """
    print(f'error: {message}', file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def relative_path_hint(path: str, root: Optional[Path]) -> str:
    """What to add to "PATH not found" when PATH is relative and the tool runs outside
    ``root`` (the repository root, which this project's configs are written against)."""
    if root is None or os.path.isabs(path) or '://' in path:
        return ''
    cwd = Path.cwd().resolve()
    root = Path(root).resolve()
    if cwd == root:
        return ''
    there = ('; it exists there' if (root / path).exists() else '')
    return (f' (relative paths are read from the current directory {cwd}; this project\'s '
            f'configs expect the repository root {root}{there}: run the tools from it or '
            'give absolute paths)')


def require_file(path: str, what: str, root: Optional[Path] = None) -> None:
    """Refuse a missing file in one line, before anything heavy is imported."""
    if not os.path.isfile(path):
        kind = 'is a folder, not a file' if os.path.isdir(path) else 'not found'
        raise UserError(f'{what} {kind}: {path}{relative_path_hint(path, root)}')


def _joined(root: Optional[str], path: str) -> str:
    if not root or os.path.isabs(path) or '://' in path:
        return path
    return os.path.join(root, path)


def missing_inputs(cfg: Mapping[str, Any], splits: Iterable[str]) -> List[Tuple[str, str]]:
    """``(what, path)`` of each input a run of ``splits`` reads that does not exist.

    Read from the config as the datasets and the model resolve them: each split's
    ``data_root`` + ``ann_file`` and its video folder (``data_prefix['video']``; not
    when the split reads a frame cache), and ``model.clip.weights``. URLs are left to
    their loaders.
    """
    missing = []
    for split in splits:
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset') or {}
        root, ann_file = dataset.get('data_root'), dataset.get('ann_file')
        if ann_file:
            path = _joined(root, ann_file)
            if '://' not in path and not os.path.isfile(path):
                missing.append((f'{split} annotation file', path))
        prefix = dataset.get('data_prefix') or {}
        video = prefix.get('video') if isinstance(prefix, Mapping) else None
        cached = isinstance(prefix, Mapping) and 'frame_cache' in prefix
        if (video is not None or root) and not cached:
            folder = _joined(root, video) if video else root
            if '://' not in folder and not os.path.isdir(folder):
                missing.append((f'{split} video folder', folder))
    clip = (cfg.get('model') or {}).get('clip') or {}
    weights = clip.get('weights') if isinstance(clip, Mapping) else None
    if isinstance(weights, str) and '://' not in weights and not os.path.isfile(weights):
        missing.append(('CLIP weights (model.clip.weights)', weights))
    return list(dict.fromkeys(missing))


def check_inputs(cfg: Mapping[str, Any], splits: Iterable[str],
                 root: Optional[Path] = None) -> None:
    """Raise :class:`UserError` naming every missing input of :func:`missing_inputs`."""
    missing = missing_inputs(cfg, splits)
    if missing:
        listed = '; '.join(f'{what} not found: {path}' for what, path in missing)
        hints = {relative_path_hint(path, root) for _, path in missing} - {''}
        hint = ''.join(sorted(hints)[:1])
        weights = any(what.startswith('CLIP') for what, _ in missing)
        raise UserError(listed + hint + (
            ' (put the CLIP checkpoint there or set model.clip.weights with --cfg-options; '
            'nothing is downloaded)' if weights else ''))


def run_tool(main: Callable[[], T], user_errors: Tuple[Type[BaseException], ...] = (),
             root: Optional[Path] = None) -> T:
    """``main()``; a :class:`UserError`, a :class:`FileNotFoundError`, one of
    ``user_errors`` or, once the tool has imported the plugin, one of
    :data:`projects.tempme.user_errors.USER_ERRORS` ends in one line, ``error: <message>``,
    exit status 2."""
    try:
        return main()
    except UserError as err:
        fail(str(err))
    except FileNotFoundError as err:
        path = err.filename if isinstance(err.filename, str) else None
        message = f'{err.strerror}: {path}' if path and err.strerror else str(err)
        hint = relative_path_hint(path, root) if path else _hint_in_message(str(err), root)
        fail(f'{message}{hint}')
    except Exception as err:
        if isinstance(err, user_errors + _plugin_user_errors()):
            fail(f'{type(err).__name__}: {err}')
        raise


def _plugin_user_errors() -> Tuple[Type[BaseException], ...]:
    """The plugin's user-error types, once the tool has imported the plugin (never before:
    importing it takes seconds)."""
    if 'projects.tempme' not in sys.modules:
        return ()
    from projects.tempme.user_errors import USER_ERRORS
    return USER_ERRORS


def _hint_in_message(message: str, root: Optional[Path]) -> str:
    """The relative-path hint for a "... not found: PATH" message, if PATH is relative."""
    for token in message.replace("'", ' ').split():
        token = token.rstrip('.,;:')
        if '/' in token and not os.path.isabs(token) and not os.path.exists(token):
            return relative_path_hint(token, root)
    return ''
