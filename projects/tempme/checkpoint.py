"""Checkpoint I/O in one place: safe loading, comparison with a model, adapter filling.

Every checkpoint this project opens (``load_from``, ``--resume``, ``tools/test.py``, the
search and visualisation tools, converters), local or ``http(s)://``, is loaded by
:func:`safe_load_checkpoint`: ``torch.load(weights_only=True)`` with an explicit allow-list
of the few non-tensor types mmengine checkpoints hold (:data:`SAFE_CHECKPOINT_GLOBALS`),
passed to torch for that one call only. mmengine's own loaders take this path inside
:func:`safe_checkpoint_loading`, which this project's runner and tools enter; code outside
the block (another project in the same process) keeps mmengine's and torch's behaviour.
Whether a checkpoint fits a model is decided by :func:`compare_state_dicts` and reported by
:func:`format_mismatch`; adapter-only (PEFT) checkpoints are completed with the model's
own frozen weights by :func:`fill_adapter_state`.
"""
import contextlib
import hashlib
import os
import pickle
import re
import types
import urllib.parse
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import is_model_wrapper

from ..tempme_deploy.fileio import resolves_inside

__all__ = [
    'SAFE_CHECKPOINT_GLOBALS', 'CheckpointLoadError', 'CheckpointNotFoundError',
    'StateDictMismatch', 'UnsafeCheckpointError', 'cached_checkpoint_path', 'compare_state_dicts',
    'download_checkpoint',
    'fill_adapter_state', 'format_mismatch', 'latest_checkpoint', 'safe_checkpoint_loading',
    'safe_load_checkpoint',
    'safe_load_url', 'state_dict_of', 'strip_ddp_prefix', 'unwrap_model'
]

# -- safe loading -----------------------------------------------------------------------------

# HistoryBuffer statistics mmengine registers by default (``_set_default_statistics``).
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_statistic(owner: Any, name: str) -> Callable:
    """Restricted ``getattr`` for checkpoints: only HistoryBuffer's default statistics.

    ``HistoryBuffer.__getstate__`` stores its statistic methods, and pickle protocol 2 writes
    each as ``builtins.getattr(HistoryBuffer, 'min')``. Allow-listing the real ``getattr`` would
    let a checkpoint fetch any attribute of any loaded object, so this stand-in is registered
    under that name instead and refuses everything else.
    """
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only the statistics of '
        f'mmengine HistoryBuffer ({", ".join(sorted(_HISTORY_BUFFER_STATISTICS))}) are allowed')


def _numpy_multiarray() -> types.ModuleType:
    """numpy's multiarray module (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    core = getattr(np, '_core', None)
    return core.multiarray if core is not None else np.core.multiarray


def _safe_checkpoint_globals() -> Tuple[Union[Callable, Tuple[Callable, str]], ...]:
    multiarray = _numpy_multiarray()
    entries: List[Union[Callable, Tuple[Callable, str]]] = [
        # message_hub['log_scalars'] values
        HistoryBuffer,
        (_history_buffer_statistic, 'builtins.getattr'),
        # HistoryBuffer histories (ndarrays) and numpy scalars in message_hub['runtime_info']
        np.ndarray,
        np.dtype,
    ]
    # Pickles name these by the numpy that wrote them: numpy._core (2.x) or numpy.core (1.x).
    for package in ('numpy._core', 'numpy.core'):
        entries.append((multiarray._reconstruct, f'{package}.multiarray._reconstruct'))
        entries.append((multiarray.scalar, f'{package}.multiarray.scalar'))
    # Rebuilt dtypes are instances of per-dtype classes (numpy.dtypes.Float64DType, ...):
    # float64 / int64 for the logged values and counts, float32 / int32 for values computed in
    # single precision and for counts on platforms whose default integer is 32-bit.
    for name in ('float64', 'int64', 'float32', 'int32'):
        dtype_class = type(np.dtype(name))
        if dtype_class is not np.dtype:
            entries.append(dtype_class)
    return tuple(entries)


#: Everything an mmengine Runner checkpoint holds beyond torch's own weights_only allow-list
#: (tensors, OrderedDict, Counter for MultiStepLR milestones, ... are allowed by torch).
SAFE_CHECKPOINT_GLOBALS = _safe_checkpoint_globals()


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded with ``weights_only=True``."""


class CheckpointNotFoundError(CheckpointLoadError, FileNotFoundError):
    """No checkpoint at the path: a ``FileNotFoundError``, as mmengine and torch raise."""


class UnsafeCheckpointError(CheckpointLoadError, pickle.UnpicklingError):
    """The checkpoint asks for code outside the allow-list: an ``UnpicklingError``, as
    ``torch.load(weights_only=True)`` raises."""


def _refused_globals(path: Union[str, os.PathLike]) -> List[str]:
    """Globals a checkpoint would import that the allow-list does not contain."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
    except Exception:  # not a zip checkpoint, or torch too old: the error says enough
        return []
    allowed = {entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'
               for entry in SAFE_CHECKPOINT_GLOBALS}
    return [name for name in unsafe if name not in allowed]


_URL_SCHEMES = ('http://', 'https://')


# torch.hub's convention: ``name-<sha256 prefix>.ext`` (at least 8 hex digits)
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,})\.')


def _check_hash_prefix(path: str, url: str) -> None:
    """Refuse ``path`` unless its SHA-256 starts with the prefix in its file name."""
    match = _HASH_IN_NAME.search(os.path.basename(path))
    if match is None:
        raise CheckpointLoadError(
            f'check_hash is set but the file name of {url!r} carries no hash '
            '(torch.hub convention: name-<sha256 prefix>.pth)')
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise CheckpointLoadError(
            f'checkpoint {path!r} (from {url!r}) does not match the hash in its name: '
            f'sha256 {digest.hexdigest()[:len(match.group(1))]} != {match.group(1)}')


def cached_checkpoint_path(url: str, model_dir: Optional[str] = None,
                           file_name: Optional[str] = None) -> str:
    """Where :func:`download_checkpoint` keeps ``url``: ``<model_dir>/<url hash>/<name>``.

    torch.hub keys its cache by file name alone, so ``.../a/best.pth`` and ``.../b/best.pth``
    would share one copy; a folder per URL (SHA-256 of the whole URL) keeps them apart.
    ``model_dir`` defaults to torch.hub's (``<hub dir>/checkpoints``).
    """
    name = file_name or os.path.basename(urllib.parse.urlparse(url).path)
    if not name or name in ('.', '..'):
        raise CheckpointLoadError(f'cannot tell a file name from the checkpoint URL {url!r}')
    model_dir = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    return os.path.join(model_dir, hashlib.sha256(url.encode()).hexdigest()[:16], name)


def download_checkpoint(url: str, model_dir: Optional[str] = None, progress: bool = True,
                        file_name: Optional[str] = None, check_hash: bool = False) -> str:
    """The local copy of a checkpoint URL, downloaded once (:func:`cached_checkpoint_path`).

    The download goes to a temporary file that is renamed when complete. ``check_hash``
    verifies the SHA-256 prefix in the file name (torch.hub's convention), of a cached
    copy too.
    """
    cached = cached_checkpoint_path(url, model_dir, file_name)
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, None, progress=progress)
        except Exception as exc:
            raise CheckpointLoadError(f'cannot download checkpoint {url!r} to {cached!r}: '
                                      f'{exc}') from exc
    if check_hash:
        _check_hash_prefix(cached, url)
    return cached


def safe_load_url(url: str, model_dir: Optional[str] = None, map_location: Any = None,
                  progress: bool = True, check_hash: bool = False,
                  file_name: Optional[str] = None, weights_only: bool = True, **_: Any) -> Any:
    """``torch.hub.load_state_dict_from_url`` with :func:`safe_load_checkpoint` loading.

    torch's function loads with ``weights_only=False`` unless told otherwise, and mmengine
    (``load_from_http``, used for ``http(s)://``, ``torchvision://``, ``mmcls://`` and
    ``openmmlab://`` checkpoints) does not tell it; a cached or downloaded file could run
    code. ``weights_only`` is accepted for the signature and always true here.
    """
    del weights_only
    return safe_load_checkpoint(
        download_checkpoint(url, model_dir, progress, file_name, check_hash),
        map_location=map_location)


def _verify_records(path: Union[str, os.PathLike]) -> None:
    """Refuse a zip checkpoint with a record whose bytes fail their CRC.

    torch's reader does not check CRCs, so damaged bytes inside a tensor record load as
    changed weights without a word. Reading the file once more costs about as much as the
    load itself reads. Legacy (non-zip) checkpoints have no CRCs to check.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointLoadError(f'checkpoint {os.fspath(path)!r} is damaged: {exc}') from exc
    if bad is not None:
        raise CheckpointLoadError(f'checkpoint {os.fspath(path)!r} is damaged: record {bad!r} '
                                  'fails its CRC check (the file changed after it was written)')


def safe_load_checkpoint(path: Union[str, os.PathLike],
                         map_location: Any = 'cpu') -> Any:
    """Load a checkpoint with ``weights_only=True`` and :data:`SAFE_CHECKPOINT_GLOBALS`.

    ``path`` may be an ``http(s)://`` URL: it is downloaded into torch.hub's cache first.
    The allow-list is given to torch for this call only; what is registered globally is left
    as it was. Raises :class:`CheckpointNotFoundError` for a missing file,
    :class:`UnsafeCheckpointError` naming the file and the code it asked to run when torch
    refuses it, and :class:`CheckpointLoadError` when it cannot be read.
    """
    if isinstance(path, str) and path.startswith(_URL_SCHEMES):
        path = download_checkpoint(path)
    serialization = torch.serialization
    if not hasattr(serialization, 'safe_globals'):
        raise CheckpointLoadError(
            f'cannot load {os.fspath(path)!r} safely: torch {torch.__version__} has no '
            'torch.serialization.safe_globals (needs torch >= 2.5)')
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f'checkpoint not found: {os.fspath(path)!r}')
    _verify_records(path)
    registered = serialization.get_safe_globals()
    # safe_globals removes on exit what it was given, so pass only what is not yet registered.
    extra = [entry for entry in SAFE_CHECKPOINT_GLOBALS if entry not in registered]
    try:
        with serialization.safe_globals(extra):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_globals(path)
        why = (f'it asks to import {", ".join(refused)}, which no checkpoint of this project '
               'holds, so it may run code when unpickled and was not loaded. Never open a '
               'file you did not create with weights_only=False. ' if refused else '')
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {os.fspath(path)!r} with weights_only=True: {why}'
            f'torch says: {exc}') from exc
    except Exception as exc:
        raise CheckpointLoadError(
            f'cannot load checkpoint {os.fspath(path)!r} with weights_only=True (is it '
            f'complete and a torch checkpoint?): {exc}') from exc


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's loader for local paths, with :func:`safe_load_checkpoint`. mmengine logs
    the loader's name past its ``load_from_`` prefix: "Loads checkpoint by safe_local
    backend"."""
    return safe_load_checkpoint(os.path.expanduser(filename), map_location=map_location)


@contextlib.contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """Inside the block, mmengine loads every checkpoint with :func:`safe_load_checkpoint`.

    mmengine 0.10.7 (``setup.cfg`` pins ``<0.11``) loads local files with a bare
    ``torch.load`` (unrestricted unpickling on torch < 2.6; on later torch it refuses the
    HistoryBuffer objects of its own checkpoints, so ``--resume`` fails) and URLs through
    ``torch.hub``'s ``load_url``, which unpickles without restriction. ``load_from``,
    ``--resume``, ``init_cfg`` and ``tools/test.py`` go through those loaders, so
    :class:`~projects.tempme.engine.TempMeRunner` and this project's tools run inside this
    block. mmengine's local loader and ``load_url`` are put back on exit.
    """
    from mmengine.runner import checkpoint as mm_checkpoint
    loaders = mm_checkpoint.CheckpointLoader
    previous_local, previous_url = loaders._schemes[''], mm_checkpoint.load_url
    loaders.register_scheme(prefixes='', loader=load_from_safe_local, force=True)
    mm_checkpoint.load_url = safe_load_url
    try:
        yield
    finally:
        loaders.register_scheme(prefixes='', loader=previous_local, force=True)
        mm_checkpoint.load_url = previous_url


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, as a file inside ``work_dir``.

    mmengine resumes from whatever path the file holds. A work dir copied elsewhere (or
    handed over) names the original's absolute path, and a crafted one can name any file or
    URL. The name is resolved inside ``work_dir`` (by file name when it points elsewhere);
    a URL, or a file that is not inside ``work_dir`` once symlinks are followed, is refused.
    Returns None when there is no ``last_checkpoint``.
    """
    record = os.path.join(work_dir, 'last_checkpoint')
    if not os.path.isfile(record):
        return None
    with open(record, encoding='utf-8', errors='replace') as f:
        named = f.read().strip()
    if not named:
        return None
    if '://' in named:
        raise CheckpointLoadError(f'{record}: names {named!r}; resume reads checkpoints inside '
                                  'the work dir only, not URLs')
    candidate = named if os.path.isabs(named) else os.path.join(work_dir, named)
    if not resolves_inside(candidate, work_dir):
        candidate = os.path.join(work_dir, os.path.basename(named))
    if not os.path.isfile(candidate):
        raise CheckpointNotFoundError(f'{record}: names {named!r}, which is not a file in '
                                      f'{work_dir!r}')
    if not resolves_inside(candidate, work_dir):
        raise CheckpointLoadError(f'{record}: {candidate!r} leads outside the work dir '
                                  f'{work_dir!r} (a symlink); refusing to resume from it')
    return candidate


# -- what a checkpoint holds, and whether it fits --------------------------------------------

# Buffers mmengine's loader does not require either (BatchNorm step counters).
_IGNORED_MISSING = re.compile(r'(^|\.)num_batches_tracked$')


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / mmengine wrapper (or the model itself)."""
    return model.module if is_model_wrapper(model) else model


def state_dict_of(checkpoint: Any, source: str = 'checkpoint') -> Dict[str, Any]:
    """The weights of an mmengine checkpoint (``state_dict`` entry) or of a plain state dict."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{source} holds no state dict')
    return state


def strip_ddp_prefix(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Keys without the ``module.`` prefix DDP adds (mmengine strips it before loading)."""
    return {re.sub(r'^module\.', '', key): value for key, value in state.items()}


class StateDictMismatch(NamedTuple):
    """What keeps a checkpoint from loading exactly into a model."""

    missing: List[str]  # in the model, not in the checkpoint
    unexpected: List[str]  # in the checkpoint, not in the model
    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]  # key, checkpoint, model

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def compare_state_dicts(model_state: Mapping[str, Any],
                        checkpoint_state: Mapping[str, Any]) -> StateDictMismatch:
    """Missing, unexpected and shape-mismatched keys of ``checkpoint_state``."""
    missing = [k for k in model_state
               if k not in checkpoint_state and not _IGNORED_MISSING.search(k)]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    shapes = []
    for key, value in checkpoint_state.items():
        expected = model_state.get(key)
        if hasattr(value, 'shape') and hasattr(expected, 'shape') \
                and tuple(value.shape) != tuple(expected.shape):
            shapes.append((key, tuple(value.shape), tuple(expected.shape)))
    return StateDictMismatch(missing, unexpected, shapes)


def _listing(title: str, items: List[str], limit: int) -> str:
    shown = ''.join(f'\n    {item}' for item in items[:limit])
    more = f'\n    ... and {len(items) - limit} more' if len(items) > limit else ''
    return f'\n  {len(items)} {title}:{shown}{more}'


def format_mismatch(mismatch: StateDictMismatch, source: str, limit: int = 20) -> str:
    """A readable report: counts, the first ``limit`` keys of each kind, what to do."""
    text = f'checkpoint {source} does not fit the model built from the config:'
    if mismatch.missing:
        text += _listing('missing keys (in the model, not in the checkpoint)',
                         mismatch.missing, limit)
    if mismatch.unexpected:
        text += _listing('unexpected keys (in the checkpoint, not in the model)',
                         mismatch.unexpected, limit)
    if mismatch.shapes:
        text += _listing('shape mismatches (checkpoint vs model)',
                         [f'{k}: {tuple(a)} vs {tuple(b)}' for k, a, b in mismatch.shapes],
                         limit)
    return text


def fill_adapter_state(model_state: Mapping[str, Any], adapter_state: Mapping[str, Any],
                       source: str = 'adapter checkpoint') -> Tuple[Dict[str, Any], int]:
    """An adapter-only state completed with the model's own (frozen) weights.

    Returns the full state and how many entries came from the model. A key the model does
    not have means the checkpoint belongs to another model: :class:`KeyError`.
    """
    unexpected = sorted(k for k in adapter_state if k not in model_state)
    if unexpected:
        raise KeyError(f'{source} does not fit this model; unexpected keys: {unexpected[:10]}')
    filled = sum(1 for k in model_state if k not in adapter_state)
    return {**model_state, **adapter_state}, filled
