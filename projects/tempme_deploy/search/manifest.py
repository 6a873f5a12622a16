"""Which videos an index must (re-)encode: scanning a folder and diffing it with the index.

A file is identified by its path and considered unchanged while its size and
modification time (nanoseconds) are the same, as ``make`` and ``rsync`` decide it:
reading every video to hash it would cost as much as decoding it.
"""
import os
import stat
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from ..video_files import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FileStat:
    """A video file as the index saw it."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> 'FileStat':
        st = os.stat(path)
        return cls(os.path.abspath(path), st.st_size, st.st_mtime_ns)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


#: What a non-regular file is, by its ``stat`` mode.
_FILE_KINDS = ((stat.S_ISFIFO, 'FIFO'), (stat.S_ISSOCK, 'socket'),
               (stat.S_ISCHR, 'character device'), (stat.S_ISBLK, 'block device'),
               (stat.S_ISDIR, 'directory'))


def _not_regular(mode: int) -> str:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), 'other')
    return f'not a regular file ({kind})'


def scan_videos(root: str, extensions: Iterable[str] = VIDEO_EXTENSIONS,
                skipped: Optional[Dict[str, str]] = None) -> List[FileStat]:
    """Every video under ``root`` (recursively, extension case ignored), sorted by path.

    Only regular files (symbolic links followed) are videos: a FIFO, socket or device named
    ``*.mp4`` would block or never end the decoder that opens it, while the caller holds
    the index lock. Those, and links that lead nowhere, are decided from ``os.stat`` alone
    (never opened) and left out; ``skipped``, if given, receives path -> reason for each.
    """
    if not os.path.isdir(root):
        raise NotADirectoryError(f'video folder not found: {root!r}')
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.lower().endswith(extensions):
                continue
            path = os.path.abspath(os.path.join(folder, name))
            try:
                st = os.stat(path)
            except OSError as err:
                reason = f'cannot be read ({err.strerror or err})'
            else:
                if stat.S_ISREG(st.st_mode):
                    found.append(FileStat(path, st.st_size, st.st_mtime_ns))
                    continue
                reason = _not_regular(st.st_mode)
            if skipped is not None:
                skipped[path] = reason
    return sorted(found, key=lambda f: f.path)


@dataclass
class UpdatePlan:
    """How to bring an index up to date with the files on disk.

    ``keep`` are row numbers of the index to keep (in their order), ``encode`` the files
    to encode (new or changed), ``removed`` and ``changed`` the paths dropped from the
    index and the paths whose old rows are dropped because the file changed.
    """

    keep: List[int]
    encode: List[FileStat]
    removed: List[str]
    changed: List[str]

    @property
    def unchanged(self) -> int:
        return len(self.keep)


def plan_update(indexed: Sequence[FileStat], current: Sequence[FileStat]) -> UpdatePlan:
    """Diff the index's files (row order) against the files found now."""
    now = {f.path: f for f in current}
    keep, removed, changed, seen = [], [], [], set()
    for row, old in enumerate(indexed):
        new = now.get(old.path)
        if new is None:
            removed.append(old.path)
        elif new == old:
            keep.append(row)
            seen.add(old.path)
        else:
            changed.append(old.path)
    encode = [f for f in current if f.path not in seen]
    return UpdatePlan(keep, encode, removed, changed)
