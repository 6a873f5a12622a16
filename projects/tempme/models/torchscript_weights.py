"""Read the weights of a TorchScript archive without running anything in it.

OpenAI released CLIP as TorchScript archives (``ViT-B-32.pt``). ``torch.jit.load`` runs
the archive's code while loading (a scripted ``__setstate__`` can create files through
``torch.from_file``), and ``torch.load(weights_only=True)`` refuses TorchScript. An
archive is a zip: ``<name>/data.pkl`` pickles the module tree (classes named
``__torch__.*``, tensors rebuilt from records ``<name>/data/<key>``) and
``<name>/code/**.py`` declares each class's ``__parameters__`` and ``__buffers__``. This
module unpickles ``data.pkl`` with an unpickler that resolves only tensor rebuilding,
storage records, ordered dicts, TorchScript's list tags and inert stand-ins for the
``__torch__`` classes (everything else is refused), reads the declarations as text, and
returns the parameters and buffers by their ``state_dict`` names. The archive's code is
never compiled or run.

A weight file is data handed over by someone else, so reading it must cost about what its
size suggests: every size is checked against the zip directory before anything is read or
inflated, the module tree is walked once per module within fixed bounds, and every failure
is a one-line :class:`TorchScriptReadError` naming the file.
"""
import io
import os
import pickle
import re
import reprlib
import zipfile
import zlib
from collections import OrderedDict
from typing import Any, Dict, Iterator, Set, Tuple

import torch
from torch._utils import _rebuild_tensor_v2

# Bounds on what an archive can make the reader do. OpenAI's largest CLIP, ViT-L/14@336,
# has about 400 modules nested 6 deep (visual.transformer.resblocks.0.mlp.c_fc), a
# data.pkl of about 60 KB and about 300 KB of code, so each bound is tens of times what a
# real archive needs while keeping a hostile one cheap to refuse.
_MAX_DEPTH = 32
_MAX_MODULES = 10_000
# unpickling makes up to ~40 bytes of Python objects per pickled byte: 16 MB stays < 1 GB
_MAX_PICKLE_BYTES = 16 << 20
_MAX_CODE_BYTES = 16 << 20

_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}
# one line each ([ \t], not \s, which crosses lines and makes a file of newlines quadratic)
_DECLARATION = re.compile(
    r'^[ \t]*(__parameters__|__buffers__)[ \t]*=[ \t]*\[([^\]\n]*)\]', re.M)
_CLASS = re.compile(r'^class[ \t]+([\w.]+)[ \t]*\(', re.M)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
               RuntimeError, ValueError)

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120


class TorchScriptReadError(RuntimeError):
    """An archive that is not plain TorchScript weights."""


def _brief(text: str) -> str:
    """``text`` cut short for a message: names in an archive can be any length."""
    return _SHORT.repr(text)[1:-1]


def _one_line(err: BaseException) -> str:
    """An exception's message on one short line, whatever the archive put in it."""
    text = ' '.join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else f'{text[:300]}...'


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> bytes:
    """The ``file_size`` bytes the zip directory declares for ``info``, never more."""
    try:
        with archive.open(info) as stream:
            data = stream.read(info.file_size)  # zipfile stops inflating at file_size
    except _ZIP_ERRORS as err:
        raise TorchScriptReadError(
            f'{path}: cannot read {_brief(info.filename)}: {_one_line(err)}') from err
    if len(data) != info.file_size:
        raise TorchScriptReadError(f'{path}: {_brief(info.filename)} is truncated')
    return data


class _ScriptObject:
    """Inert stand-in for a ``__torch__`` class: keeps the pickled state, runs nothing."""

    type_name = ''

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _same(value: Any, *_: Any) -> Any:
    """TorchScript's list builders and type tags return their first argument unchanged."""
    return value


_ALLOWED = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('collections', 'OrderedDict'): OrderedDict,
    **{('torch.jit._pickle', name): _same for name in (
        'build_intlist', 'build_doublelist', 'build_boollist', 'build_tensorlist',
        'build_genericlist', 'restore_type_tag')},
}


class _WeightsUnpickler(pickle.Unpickler):

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.path = path
        self.storages: Dict[str, torch.storage.TypedStorage] = {}
        self.classes: Dict[str, type] = {}
        # Stored records that do not overlap fit in the file; zip entries whose data
        # overlap could otherwise make a small file load the same bytes many times.
        self.bytes_left = os.path.getsize(path)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == '__torch__' or module.startswith('__torch__.'):
            qualified = f'{module}.{name}'
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject, ), {'type_name': qualified})
            return self.classes[qualified]
        raise TorchScriptReadError(
            f'{self.path}: the archive asks for {_brief(module)}.'
            f'{_brief(name)}, which CLIP weights never hold; it was not loaded '
            '(it may run code). Use a state dict or safetensors file.')

    def persistent_load(self, pid: Tuple) -> torch.storage.TypedStorage:
        # ('storage', type, key, location, numel), as TorchScript writes it
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType) and type(pid[4]) is int and pid[4] >= 0):
            raise TorchScriptReadError(
                f'{self.path}: unexpected record reference {_SHORT.repr(pid)}')
        key, dtype, numel = str(pid[2]), pid[1].dtype, pid[4]
        if key in self.storages:
            storage = self.storages[key]
            if storage.dtype != dtype or storage.size() != numel:
                raise TorchScriptReadError(
                    f'{self.path}: tensor record data/{_brief(key)} is declared '
                    'twice with different types or sizes')
            return storage
        record = f'data/{_brief(key)}'
        try:
            info = self.archive.getinfo(f'{self.prefix}/data/{key}')
        except KeyError:
            raise TorchScriptReadError(f'{self.path}: tensor record {record} is missing') from None
        # TorchScript stores records uncompressed (they are mapped, not inflated); a
        # compressed one could inflate a small file to gigabytes
        if info.compress_type != zipfile.ZIP_STORED:
            raise TorchScriptReadError(
                f'{self.path}: tensor record {record} is compressed, which TorchScript never '
                'does; it was not inflated')
        nbytes = numel * dtype.itemsize
        if info.file_size != nbytes:  # shorter would leave memory uninitialised
            raise TorchScriptReadError(
                f'{self.path}: tensor record {record} holds {info.file_size} bytes but its '
                f'storage declares {nbytes}')
        self.bytes_left -= nbytes
        if self.bytes_left < 0:
            raise TorchScriptReadError(
                f'{self.path}: the tensor records add up to more than the file holds (zip '
                'entries that overlap)')
        raw = _read(self.archive, info, self.path)
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else \
            torch.UntypedStorage(0)
        self.storages[key] = torch.storage.TypedStorage(
            wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def _declared_state(archive: zipfile.ZipFile, prefix: str, path: str) -> Dict[str, Set[str]]:
    """``{qualified class name: parameter and buffer names}`` from the archive's code."""
    declared: Dict[str, Set[str]] = {}
    code = f'{prefix}/code/'
    budget = _MAX_CODE_BYTES  # code is compressed in real archives: bound what it inflates to
    for info in archive.infolist():
        name = info.filename
        if not (name.startswith(code) and name.endswith('.py')):
            continue
        budget -= info.file_size
        if budget < 0:
            raise TorchScriptReadError(
                f'{path}: the archive\'s code is over {_MAX_CODE_BYTES >> 20} MB; CLIP\'s is '
                'well under 1 MB')
        module = name[len(code):-len('.py')].replace('/', '.')
        text = _read(archive, info, path).decode('utf-8', errors='replace')
        classes = list(_CLASS.finditer(text))
        for i, match in enumerate(classes):
            end = classes[i + 1].start() if i + 1 < len(classes) else len(text)
            names: Set[str] = set()
            for decl in _DECLARATION.finditer(text, match.end(), end):
                names.update(n.strip().strip('"\'') for n in decl.group(2).split(',')
                             if n.strip())
            declared[f'{module}.{match.group(1)}'] = names
    return declared


def _named_tensors(obj: _ScriptObject, name: str, depth: int, declared: Dict[str, Set[str]],
                   seen: Dict[int, str], path: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """Parameters and buffers of ``obj`` and its submodules, visiting each module once.

    CLIP archives hold a tree. A module reached twice is refused, not named under each
    path: sharing in pairs gives 2**depth names, a module that contains itself infinitely
    many.
    """
    state = getattr(obj, 'state', None)
    if not isinstance(state, dict):
        return  # a class with its own __setstate__: no module attributes to read
    where = _SHORT.repr(name) if name else 'the root module'
    if id(obj) in seen:
        first = seen[id(obj)]
        if first == '' or name.startswith(f'{first}.'):
            raise TorchScriptReadError(f'{path}: module {where} contains itself')
        raise TorchScriptReadError(
            f'{path}: module {where} is also reached as {_SHORT.repr(first)}; CLIP archives '
            'never share modules')
    if depth > _MAX_DEPTH:
        raise TorchScriptReadError(
            f'{path}: modules are nested more than {_MAX_DEPTH} deep (at {where})')
    seen[id(obj)] = name
    if len(seen) > _MAX_MODULES:
        raise TorchScriptReadError(f'{path}: the archive holds more than {_MAX_MODULES} modules')
    own = declared.get(obj.type_name)
    for key, value in state.items():
        full = f'{name}.{key}' if name else str(key)
        if isinstance(value, _ScriptObject):
            yield from _named_tensors(value, full, depth + 1, declared, seen, path)
        elif isinstance(value, torch.Tensor) and (own is None or key in own):
            yield full, value


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a zip holding TorchScript code next to its pickled data."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('constants.pkl') or '/code/' in name
                       for name in archive.namelist())
    except _ZIP_ERRORS:
        return False  # not a readable zip: left to the state dict loader's own error


def read_torchscript_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript module archive, by ``state_dict`` name."""
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as err:
        raise TorchScriptReadError(f'{path}: not a readable zip: {_one_line(err)}') from err
    with archive:
        pickles = [i for i in archive.infolist()
                   if i.filename.endswith('/data.pkl') and i.filename.count('/') == 1]
        if len(pickles) != 1:
            raise TorchScriptReadError(
                f'{path}: expected one <name>/data.pkl, found '
                f'{_SHORT.repr([i.filename for i in pickles])}')
        info = pickles[0]
        if info.file_size > _MAX_PICKLE_BYTES:  # checked before anything is inflated
            raise TorchScriptReadError(
                f'{path}: {_brief(info.filename)} declares {info.file_size} bytes, '
                f'over {_MAX_PICKLE_BYTES >> 20} MB; CLIP\'s is well under 1 MB')
        prefix = info.filename.split('/')[0]
        unpickler = _WeightsUnpickler(_read(archive, info, path), archive, prefix, path)
        try:
            root = unpickler.load()
        except TorchScriptReadError:
            raise
        except Exception as err:  # malformed pickle: name the file
            raise TorchScriptReadError(
                f'{path}: cannot read the archive: {_one_line(err)}') from err
        if not isinstance(root, _ScriptObject):
            raise TorchScriptReadError(f'{path}: the archive does not hold a module')
        declared = _declared_state(archive, prefix, path)
        state = dict(_named_tensors(root, '', 0, declared, {}, path))
    if not state:
        raise TorchScriptReadError(f'{path}: no weights found in the archive')
    return state
