"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Used for checkpoints, metric files and similarity dumps, so a job killed while writing
leaves the previous version intact under the final name. Also the one rule for whether a
path in a folder handed over stays inside it once links are followed.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Callable, Dict, Type, Union

__all__ = ['atomic_write', 'read_stamped_json', 'resolves_inside', 'sha256_of', 'TMP_SUFFIX']

#: Suffix of the temporary files; ``.{name}.XXXX.tmp`` in the target's folder.
TMP_SUFFIX = '.tmp'


def resolves_inside(path: str, root: str) -> bool:
    """Whether ``path`` lies inside ``root`` once symlinks are followed (``root`` may itself
    be a link): a folder handed over must not make a reader open files elsewhere."""
    real_root = osp.realpath(root)
    return osp.commonpath([osp.realpath(path), real_root]) == real_root


def _file_mode(path: str) -> int:
    """The mode ``open(path, 'w')`` would give: the old file's, else 0o666 less the umask.

    ``mkstemp`` creates private (0o600) files; without this, checkpoints shared in a group
    folder would become unreadable to the others.
    """
    if osp.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Union[str, os.PathLike], write_fn: Callable[[str], None]) -> str:
    """Call ``write_fn(tmp_path)``, then rename the temporary file over ``path``.

    The temporary file lives in the target's folder so the final ``os.replace`` is a
    same-filesystem rename, which POSIX and Windows make atomic. Its data is flushed to
    disk before the rename, so a crash right after cannot leave an empty file behind. On an
    exception the temporary file is removed and ``path`` is untouched; a process killed
    mid-write leaves only a hidden ``.{name}.*.tmp`` file. Returns the absolute path.
    """
    path = osp.abspath(os.fspath(path))
    folder = osp.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.',
                                   suffix=TMP_SUFFIX)
        os.close(fd)
        os.chmod(tmp, _file_mode(path))
        write_fn(tmp)
        with open(tmp, 'r+b') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and osp.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and path not in str(err):
            # disk full, read-only folder, ...: say which file, keep the errno
            raise OSError(err.errno, f'cannot write {path}: {err.strerror or err}; the '
                          'previous version, if any, is intact') from err
        raise
    return path


def read_stamped_json(path: str, fmt: str, version: int, what: str, hint: str = '',
                      error: Type[Exception] = ValueError) -> Dict:
    """A JSON object file stamped ``{"format": fmt, "version": version, ...}``.

    Unreadable JSON or another format or version raise ``error`` naming ``path`` (with
    ``hint``, the way out, appended); the caller checks that the file exists.
    """
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise error(f'{path}: not a readable {what} ({err}){hint}') from None
    if not isinstance(data, dict) or data.get('format') != fmt or data.get('version') != version:
        raise error(f'{path}: not a {fmt} {what} of version {version}{hint}')
    return data


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
