"""Which videos an index must (re-)encode: scanning a folder and diffing it with the index.

A file is identified by its path and considered unchanged while its size and
modification time (nanoseconds) are the same, as ``make`` and ``rsync`` decide it:
reading every video to hash it would cost as much as decoding it.
"""
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Sequence

from ..datasets.video_check import VIDEO_EXTENSIONS


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


def scan_videos(root: str, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> List[FileStat]:
    """Every video under ``root`` (recursively, extension case ignored), sorted by path."""
    if not os.path.isdir(root):
        raise NotADirectoryError(f'video folder not found: {root!r}')
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(extensions):
                found.append(FileStat.of(os.path.join(folder, name)))
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
