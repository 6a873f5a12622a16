"""Hostile TorchScript archives: each is refused quickly, with one line naming the file."""
import pickle
import signal
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import pytest
import torch

from projects.tempme.models.torchscript_weights import (_MAX_CODE_BYTES, _MAX_DEPTH, _MAX_MODULES,
                                                        _MAX_PICKLE_BYTES, TorchScriptReadError,
                                                        read_torchscript_state_dict)

_CODE = 'class Node(Module):\n  __parameters__ = ["weight", ]\n  __buffers__ = []\n'


@contextmanager
def _no_longer_than(seconds: float) -> Iterator[None]:
    """Fail instead of hanging the suite if a read loops (SIGALRM interrupts Python and re)."""
    if not hasattr(signal, 'setitimer'):
        yield
        return

    def expire(*_: object) -> None:
        raise TimeoutError(f'the read took over {seconds} s')

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


# Opcodes of data.pkl as TorchScript writes it (protocol 2), for module trees no
# torch.jit.save would produce.
def _text(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + struct.pack('<I', len(raw)) + raw


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack('<i', value)


def _put(slot: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack('<I', slot)


def _get(slot: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack('<I', slot)


def _module(slot: int, attrs: Dict[str, bytes]) -> bytes:
    """A ``__torch__.Node`` kept in memo ``slot`` (so ``attrs`` may refer back to it)."""
    items = b''.join(_text(key) + value for key, value in attrs.items())
    return (pickle.GLOBAL + b'__torch__\nNode\n' + pickle.EMPTY_TUPLE + pickle.NEWOBJ
            + _put(slot) + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS
            + pickle.BUILD)


def _tensor(key: str, numel: int, storage: str = 'FloatStorage') -> bytes:
    """A 1-d tensor over the whole of record ``data/<key>``."""
    pid = (pickle.MARK + _text('storage') + pickle.GLOBAL + f'torch\n{storage}\n'.encode()
           + _text(key) + _text('cpu') + _int(numel) + pickle.TUPLE + pickle.BINPERSID)
    hooks = pickle.GLOBAL + b'collections\nOrderedDict\n' + pickle.EMPTY_TUPLE + pickle.REDUCE
    return (pickle.GLOBAL + b'torch._utils\n_rebuild_tensor_v2\n' + pickle.MARK + pid
            + _int(0) + pickle.MARK + _int(numel) + pickle.TUPLE + pickle.MARK + _int(1)
            + pickle.TUPLE + pickle.NEWFALSE + hooks + pickle.TUPLE + pickle.REDUCE)


def _pickle(root: bytes) -> bytes:
    return pickle.PROTO + b'\x02' + root + pickle.STOP


def _archive(path: Path, data_pkl: bytes, records: Optional[Dict[str, bytes]] = None,
             pkl_compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip laid out like ``torch.jit.save``'s: ``a/data.pkl``, ``a/data/<key>``, code."""
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('a/data.pkl', data_pkl, compress_type=pkl_compression)
        for key, raw in (records or {}).items():
            archive.writestr(f'a/data/{key}', raw)
        archive.writestr('a/code/__torch__.py', _CODE, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr('a/version', '3\n')
    return path


def _rewrite(src: Path, dst: Path, change: Callable[[str, bytes], Tuple[bytes, int]]) -> Path:
    """A copy of ``src`` whose entries are ``change(name, data) -> (data, compression)``."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w') as b:
        for info in a.infolist():
            data, compression = change(info.filename, a.read(info))
            b.writestr(info.filename, data, compress_type=compression)
    return dst


class _Tiny(torch.nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)
        self.register_buffer('scale', torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x * self.scale)


@pytest.fixture
def scripted(tmp_path: Path) -> Path:
    path = tmp_path / 'tiny.pt'
    torch.jit.save(torch.jit.script(_Tiny()), str(path))
    return path


def _ones(numel: int) -> bytes:
    return torch.ones(numel).numpy().tobytes()


@pytest.mark.parametrize('compression', [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_handmade_archive_is_read(tmp_path, compression):
    """The archives below differ from this one only in what each test is about."""
    tree = _module(0, {'weight': _tensor('0', 2), 'child': _module(1, {'weight': _tensor('1', 3)})})
    path = _archive(tmp_path / 'ok.pt', _pickle(tree), {'0': _ones(2), '1': _ones(3)},
                    pkl_compression=compression)
    state = read_torchscript_state_dict(str(path))
    assert {k: v.tolist() for k, v in state.items()} == {
        'weight': [1.0, 1.0], 'child.weight': [1.0, 1.0, 1.0]}


@pytest.mark.parametrize('levels, refusal', [
    (_MAX_DEPTH - 2, r"module '[ab.]+' is also reached as '[ab.]+'; CLIP archives never share"),
    (48, rf'modules are nested more than {_MAX_DEPTH} deep'),
])
def test_modules_shared_in_pairs_are_refused_quickly(tmp_path, levels, refusal):
    """Two attributes per level on the same next module: 2**levels paths in a 3 KB file."""
    data = _module(levels, {})  # the deepest level, built first
    for slot in range(levels - 1, -1, -1):
        data += _module(slot, {'a': _get(slot + 1), 'b': _get(slot + 1)})
    path = _archive(tmp_path / 'dag.pt', _pickle(data))
    assert path.stat().st_size < 4096
    with _no_longer_than(10), pytest.raises(TorchScriptReadError, match=rf'dag\.pt: {refusal}'):
        read_torchscript_state_dict(str(path))


@pytest.mark.parametrize('tree', [
    _module(0, {'weight': _tensor('0', 2), 'me': _get(0)}),
    _module(0, {'weight': _tensor('0', 2), 'child': _module(1, {'parent': _get(0)})}),
], ids=['itself', 'its-parent'])
def test_module_containing_itself_is_refused(tmp_path, tree):
    path = _archive(tmp_path / 'cycle.pt', _pickle(tree), {'0': _ones(2)})
    with _no_longer_than(10), pytest.raises(
            TorchScriptReadError, match=r'^\S*cycle\.pt: module .* contains itself$'):
        read_torchscript_state_dict(str(path))


@pytest.mark.parametrize('depth', [_MAX_DEPTH, _MAX_DEPTH + 1])
def test_modules_nested_past_the_bound_are_refused(tmp_path, depth):
    data = _module(depth, {'weight': _tensor('0', 2)})
    for slot in range(depth - 1, -1, -1):
        data = _module(slot, {'c': data})
    path = _archive(tmp_path / 'deep.pt', _pickle(data), {'0': _ones(2)})
    if depth <= _MAX_DEPTH:
        assert list(read_torchscript_state_dict(str(path))) == ['c.' * depth + 'weight']
        return
    with pytest.raises(TorchScriptReadError, match=r'deep\.pt: modules are nested more than'):
        read_torchscript_state_dict(str(path))


def test_too_many_modules_are_refused(tmp_path):
    children = {f'm{i}': _module(i + 1, {}) for i in range(_MAX_MODULES)}
    data = _module(0, {'weight': _tensor('0', 2), **children})
    path = _archive(tmp_path / 'wide.pt', _pickle(data), {'0': _ones(2)})
    with _no_longer_than(10), pytest.raises(
            TorchScriptReadError, match=rf'wide\.pt: the archive holds more than {_MAX_MODULES}'):
        read_torchscript_state_dict(str(path))


@pytest.mark.parametrize('delta', [-4, 4])
def test_record_of_another_size_than_its_storage_is_refused(tmp_path, scripted, delta):
    """Shorter used to load uninitialised memory as weights; longer read more than needed."""
    def resize(name: str, data: bytes) -> Tuple[bytes, int]:
        if '/data/' in name:
            data = data[:delta] if delta < 0 else data + b'\0' * delta
        return data, zipfile.ZIP_STORED

    path = _rewrite(scripted, tmp_path / 'resized.pt', resize)
    with pytest.raises(TorchScriptReadError,
                       match=r'resized\.pt: tensor record data/\d+ holds \d+ bytes but its '
                             r'storage declares \d+$'):
        read_torchscript_state_dict(str(path))


def test_compressed_record_is_refused_before_inflating(tmp_path, scripted):
    def deflate(name: str, data: bytes) -> Tuple[bytes, int]:
        return data, zipfile.ZIP_DEFLATED if '/data/' in name else zipfile.ZIP_STORED

    path = _rewrite(scripted, tmp_path / 'bomb.pt', deflate)
    with pytest.raises(TorchScriptReadError,
                       match=r'bomb\.pt: tensor record data/\d+ is compressed'):
        read_torchscript_state_dict(str(path))


def test_records_that_overlap_in_the_zip_are_refused(tmp_path):
    """Entries whose data hold the next entries: n records read from one payload."""
    n, payload = 64, b'\0' * 65536
    names = [f'a/data/{i}'.encode() for i in range(n)]
    header = struct.Struct(zipfile.structFileHeader)
    sizes = [sum(header.size + len(m) for m in names[i + 1:]) + len(payload) for i in range(n)]
    tree = _module(0, {f'w{i}': _tensor(str(i), sizes[i], 'ByteStorage') for i in range(n)})
    # entry 0 holds the local headers of entries 1..n-1, then the payload
    tail, crcs = payload, [0] * n
    for i in range(n - 1, 0, -1):
        crcs[i] = zlib.crc32(tail)
        tail = header.pack(zipfile.stringFileHeader, 20, 0, 0, 0, 0, 0, crcs[i], sizes[i],
                           sizes[i], len(names[i]), 0) + names[i] + tail
    path = tmp_path / 'overlap.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('a/data.pkl', _pickle(tree))
        archive.writestr('a/data/0', tail)
        offset = archive.getinfo('a/data/0').header_offset + header.size + len(names[0])
        for i in range(1, n):
            info = zipfile.ZipInfo(names[i].decode())
            info.header_offset, info.CRC = offset, crcs[i]
            info.compress_size = info.file_size = sizes[i]
            archive.filelist.append(info)
            archive.NameToInfo[info.filename] = info
            offset += header.size + len(names[i])
    assert sum(sizes) > 30 * path.stat().st_size
    with pytest.raises(TorchScriptReadError, match=r'overlap\.pt: the tensor records add up'):
        read_torchscript_state_dict(str(path))


def test_oversized_data_pkl_is_refused_before_inflating(tmp_path):
    data = _pickle(_module(0, {})) + b'\0' * _MAX_PICKLE_BYTES  # deflates to ~16 KB
    path = _archive(tmp_path / 'bomb.pt', data, pkl_compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(TorchScriptReadError,
                       match=r'bomb\.pt: a/data\.pkl declares \d+ bytes, over 16 MB'):
        read_torchscript_state_dict(str(path))


def test_oversized_code_is_refused_before_inflating(tmp_path):
    path = _archive(tmp_path / 'bomb.pt', _pickle(_module(0, {'weight': _tensor('0', 2)})),
                    {'0': _ones(2)})
    with zipfile.ZipFile(path, 'a') as archive:
        archive.writestr('a/code/__torch__/big.py', b'#' * (_MAX_CODE_BYTES + 1),
                         compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(TorchScriptReadError, match=r"bomb\.pt: the archive's code is over"):
        read_torchscript_state_dict(str(path))


def test_code_of_blank_lines_is_read_in_linear_time(tmp_path):
    """Declarations matched with \\s (which crosses lines) took minutes on 200 KB of these."""
    path = _archive(tmp_path / 'blank.pt', _pickle(_module(0, {'weight': _tensor('0', 2)})),
                    {'0': _ones(2)})
    with zipfile.ZipFile(path, 'a') as archive:
        archive.writestr('a/code/__torch__/blank.py',
                         'class Blank(Module):\n' + '\n' * 200_000 + ' ' * 200_000,
                         compress_type=zipfile.ZIP_DEFLATED)
    with _no_longer_than(10):
        assert list(read_torchscript_state_dict(str(path))) == ['weight']
