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
"""
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Iterator, Optional, Set, Tuple

import torch
from torch._utils import _rebuild_tensor_v2

_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}
_DECLARATION = re.compile(r'^\s*(__parameters__|__buffers__)\s*=\s*\[([^\]]*)\]', re.M)
_CLASS = re.compile(r'^class\s+([\w.]+)\s*\(', re.M)


class TorchScriptReadError(RuntimeError):
    """An archive that is not plain TorchScript weights."""


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
            f'{self.path}: the archive asks for {module}.{name}, which CLIP weights never '
            'hold; it was not loaded (it may run code). Use a state dict or safetensors file.')

    def persistent_load(self, pid: Tuple) -> torch.storage.TypedStorage:
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise TorchScriptReadError(f'{self.path}: unexpected record reference {pid!r}')
        key = str(pid[2])
        if key not in self.storages:
            try:
                raw = self.archive.read(f'{self.prefix}/data/{key}')
            except KeyError:
                raise TorchScriptReadError(
                    f'{self.path}: tensor record data/{key} is missing') from None
            untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else \
                torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(
                wrap_storage=untyped, dtype=pid[1].dtype, _internal=True)
        return self.storages[key]


def _declared_state(archive: zipfile.ZipFile, prefix: str) -> Dict[str, Set[str]]:
    """``{qualified class name: parameter and buffer names}`` from the archive's code."""
    declared: Dict[str, Set[str]] = {}
    code = f'{prefix}/code/'
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith('.py')):
            continue
        module = name[len(code):-len('.py')].replace('/', '.')
        text = archive.read(name).decode('utf-8', errors='replace')
        classes = list(_CLASS.finditer(text))
        for i, match in enumerate(classes):
            end = classes[i + 1].start() if i + 1 < len(classes) else len(text)
            names: Set[str] = set()
            for decl in _DECLARATION.finditer(text, match.end(), end):
                names.update(n.strip().strip('"\'') for n in decl.group(2).split(',')
                             if n.strip())
            declared[f'{module}.{match.group(1)}'] = names
    return declared


def _named_tensors(obj: Any, prefix: str, declared: Dict[str, Set[str]]
                   ) -> Iterator[Tuple[str, torch.Tensor]]:
    state = getattr(obj, 'state', None)
    if not isinstance(state, dict):
        return  # a class with its own __setstate__: no module attributes to read
    own: Optional[Set[str]] = declared.get(obj.type_name)
    for key, value in state.items():
        if isinstance(value, _ScriptObject):
            yield from _named_tensors(value, f'{prefix}{key}.', declared)
        elif isinstance(value, torch.Tensor) and (own is None or key in own):
            yield f'{prefix}{key}', value


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a zip holding TorchScript code next to its pickled data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith('constants.pkl') or '/code/' in name
                   for name in archive.namelist())


def read_torchscript_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript module archive, by ``state_dict`` name."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(pickles) != 1:
            raise TorchScriptReadError(f'{path}: expected one <name>/data.pkl, found {pickles}')
        prefix = pickles[0].split('/')[0]
        unpickler = _WeightsUnpickler(archive.read(pickles[0]), archive, prefix, path)
        try:
            root = unpickler.load()
        except TorchScriptReadError:
            raise
        except Exception as err:  # malformed pickle: name the file
            raise TorchScriptReadError(f'{path}: cannot read the archive: {err}') from err
        if not isinstance(root, _ScriptObject):
            raise TorchScriptReadError(f'{path}: the archive does not hold a module')
        state = dict(_named_tensors(root, '', _declared_state(archive, prefix)))
    if not state:
        raise TorchScriptReadError(f'{path}: no weights found in the archive')
    return state
