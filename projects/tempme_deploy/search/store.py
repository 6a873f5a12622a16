"""A video index on disk: L2-normalised embeddings plus a JSON manifest.

Layout of an index folder::

    manifest.json           format, model (config, checkpoint, fingerprint), files, failures
    embeddings-<id>.npy     float32 (N, D); row i belongs to manifest["files"][i]

Every save writes a new embeddings file, then replaces the manifest that names it
(temporary file + ``os.replace``, atomic on POSIX), then deletes the old embeddings
file. A process killed at any point leaves the last saved manifest and the file it
names intact. Arrays load with ``allow_pickle=False``.
"""
import contextlib
import fcntl
import json
import os
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import atomic_write, read_stamped_json, resolves_inside
from .manifest import FileStat
from .similarity import normalize_rows, select_top_k, top_k

FORMAT = 'tempme-video-index'
VERSION = 1
MANIFEST = 'manifest.json'
LOCK = '.lock'
#: How far from unit length a stored row may be (a save normalises them to ~1e-7).
NORM_TOLERANCE = 1e-3


class IndexModelMismatch(RuntimeError):
    """The index holds embeddings of another model than the one asked for."""


class IndexBusyError(RuntimeError):
    """Another process is updating the index."""


def _refuse_links_out(path: str, directory: str) -> None:
    """An index file that is a link leading out of the index folder is not read: a folder
    handed over must not make the tools read (or the service serve) files elsewhere."""
    if os.path.lexists(path) and not resolves_inside(path, directory):
        raise ValueError(f'{path}: a link to {os.path.realpath(path)!r}, outside the index '
                         'folder; refusing to read it')


class VideoIndex:
    """Embeddings of a folder of videos and what they were computed with.

    Args:
        directory: the index folder.
        model: what :func:`~projects.tempme.apis.inference.describe` reports; its
            ``fingerprint`` decides whether embeddings can be mixed.
        files: one :class:`FileStat` per row of ``embeddings``.
        embeddings: (N, D) rows, normalised on the way in.
        failed: path -> error of videos that could not be read in the last update.
        root: the video folder the index mirrors.
        normalized: the rows are already unit length (as stored), keep them bit for bit.
    """

    def __init__(self, directory: str, model: Dict, files: Sequence[FileStat] = (),
                 embeddings: Optional[np.ndarray] = None, failed: Optional[Dict] = None,
                 root: Optional[str] = None, normalized: bool = False) -> None:
        self.directory = directory
        self.model = dict(model)
        self.files: List[FileStat] = list(files)
        if embeddings is None:
            embeddings = np.zeros((0, 0), np.float32)
        elif not normalized:
            embeddings = normalize_rows(embeddings)
        # stored rows are not normalised again: that would move them by an ulp per load
        self.embeddings = embeddings
        if self.embeddings.shape[0] != len(self.files):
            raise ValueError(f'{len(self.files)} files but {self.embeddings.shape[0]} embeddings')
        self.failed = dict(failed or {})
        self.root = root

    def __len__(self) -> int:
        return len(self.files)

    # -- disk ---------------------------------------------------------------------------
    @staticmethod
    def exists(directory: str) -> bool:
        return os.path.isfile(os.path.join(directory, MANIFEST))

    @staticmethod
    @contextlib.contextmanager
    def lock(directory: str) -> Iterator[None]:
        """Hold the index for one updating process; a second one is refused at once."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, LOCK)
        with open(path, 'a+') as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise IndexBusyError(
                    f'the index in {directory!r} is being updated by another process '
                    f'({handle.read().strip() or "pid unknown"}); wait for it to finish') from None
            handle.seek(0)
            handle.truncate()
            handle.write(f'pid {os.getpid()}')
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @classmethod
    def load(cls, directory: str) -> 'VideoIndex':
        """Read an index folder; anything a save would not have written is refused
        (``ValueError`` naming the file and field, with the way out)."""
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'no video index in {directory!r} (no {MANIFEST}); '
                                    'build one with `tools/search.py index`')
        _refuse_links_out(path, directory)
        manifest = read_stamped_json(path, FORMAT, VERSION, 'index manifest',
                                     hint='; rebuild the index (--rebuild)')
        name = manifest.get('embeddings')
        if not isinstance(name, str) or os.path.basename(name) != name or \
                name in ('', '.', '..'):
            raise ValueError(f'{path}: the embeddings entry must name a file in the index folder')
        embeddings_path = os.path.join(directory, name)
        _refuse_links_out(embeddings_path, directory)
        files = _file_entries(manifest, path)
        try:
            embeddings = np.load(embeddings_path, allow_pickle=False)
        except (OSError, ValueError, TypeError, EOFError) as err:
            raise ValueError(f'{embeddings_path}: cannot read the index ({type(err).__name__}: '
                             f'{err}); rebuild it (--rebuild)') from None
        check_embeddings(embeddings, embeddings_path, len(files), manifest.get('dim'),
                         manifest.get('num_videos'), files)
        model, failed, root = manifest.get('model'), manifest.get('failed'), manifest.get('root')
        for key, value, kind in (('model', model, dict), ('failed', failed, (dict, type(None))),
                                 ('root', root, (str, type(None)))):
            if not isinstance(value, kind):
                raise ValueError(f'{path}: {key} has the wrong type ({type(value).__name__}); '
                                 'rebuild the index (--rebuild)')
        return cls(directory, model, files, embeddings, failed, root, normalized=True)

    def save(self) -> None:
        """Write embeddings, then the manifest naming them; on failure the last save stays
        (a failed write raises ``OSError`` naming the file, from ``atomic_write``)."""
        os.makedirs(self.directory, exist_ok=True)
        name = f'embeddings-{uuid.uuid4().hex[:12]}.npy'
        atomic_write(os.path.join(self.directory, name), self._write_embeddings)
        manifest = dict(format=FORMAT, version=VERSION, root=self.root, model=self.model,
                        embeddings=name, num_videos=len(self.files),
                        dim=int(self.embeddings.shape[1]),
                        files=[f.to_dict() for f in self.files], failed=self.failed)
        text = json.dumps(manifest, indent=1).encode()
        atomic_write(os.path.join(self.directory, MANIFEST),
                     lambda tmp: Path(tmp).write_bytes(text))
        for stale in os.listdir(self.directory):
            if stale.startswith('embeddings-') and stale.endswith('.npy') and stale != name:
                os.remove(os.path.join(self.directory, stale))

    def _write_embeddings(self, path: str) -> None:
        with open(path, 'wb') as f:  # a file object: np.save would append .npy to a name
            np.save(f, self.embeddings, allow_pickle=False)

    # -- contents -------------------------------------------------------------------------
    def check_model(self, model: Dict) -> None:
        """Refuse to mix embeddings of two models."""
        old, new = self.model.get('fingerprint'), model.get('fingerprint')
        if old != new:
            raise IndexModelMismatch(
                f'the index in {self.directory!r} was built with another model '
                f'(fingerprint {old}: config {self.model.get("config")}, checkpoint '
                f'{self.model.get("checkpoint")}); this one is {new} (config '
                f'{model.get("config")}, checkpoint {model.get("checkpoint")}). Embeddings of '
                'different models are not comparable: pass --rebuild to re-encode every video '
                'with this model, or use another --index folder.')

    def keep_rows(self, rows: Sequence[int]) -> None:
        rows = list(rows)
        self.files = [self.files[i] for i in rows]
        self.embeddings = self.embeddings[rows] if self.embeddings.size else self.embeddings

    def add(self, files: Sequence[FileStat], embeddings: np.ndarray) -> None:
        if len(files) != len(embeddings):
            raise ValueError(f'{len(files)} files but {len(embeddings)} embeddings')
        if not len(files):
            return
        embeddings = normalize_rows(embeddings)
        squared = np.einsum('ij,ij->i', embeddings, embeddings)
        bad = np.flatnonzero(~(np.abs(squared - 1) <= NORM_TOLERANCE))  # NaN rows too
        if bad.size:  # load would refuse the saved index
            raise ValueError(f'{files[int(bad[0])].path}: its embedding is not finite or zero; '
                             'not added to the index')
        if self.embeddings.shape[0] == 0:
            self.embeddings = embeddings
        else:
            self.embeddings = np.concatenate([self.embeddings, embeddings])
        self.files.extend(files)

    def check_dim(self, dim: int, what: str) -> None:
        """Refuse to rank this index with ``dim``-wide queries (``what`` names their source)."""
        if len(self.files) and self.embeddings.shape[1] != dim:
            raise ValueError(f'the index in {self.directory!r} holds {self.embeddings.shape[1]}-'
                             f'dimensional embeddings, {what} gives {dim}; rebuild the index '
                             'with this model (--rebuild)')

    def search(self, query: np.ndarray, k: int = 10) -> List[Tuple[str, float]]:
        """The ``k`` best (path, cosine score) for a query embedding."""
        rows, scores = top_k(self.embeddings, query, k)
        return [(self.files[r].path, float(s)) for r, s in zip(rows, scores)]

    def search_many(self, queries: np.ndarray,
                    ks: Sequence[int]) -> List[List[Tuple[str, float]]]:
        """:meth:`search` for (B, D) queries at once: one matrix product reads the stored
        embeddings once for the whole batch instead of once per query."""
        if not len(self.files):
            return [[] for _ in ks]
        scores = self.embeddings @ normalize_rows(queries).T
        found = []
        for column, k in enumerate(ks):
            rows, values = select_top_k(np.ascontiguousarray(scores[:, column]), k)
            found.append([(self.files[r].path, float(s)) for r, s in zip(rows, values)])
        return found


def _file_entries(manifest: Dict, path: str) -> List[FileStat]:
    """The manifest's ``files``, each checked for the fields and types a save writes."""
    entries = manifest.get('files')
    if not isinstance(entries, list):
        raise ValueError(f'{path}: files must be a list; rebuild the index (--rebuild)')
    files = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and entry.keys() == {'path', 'size', 'mtime_ns'}
                and isinstance(entry['path'], str) and type(entry['size']) is int
                and type(entry['mtime_ns']) is int):
            raise ValueError(f'{path}: files.{i} is not {{"path": str, "size": int, "mtime_ns": '
                             f'int}} ({str(entry)[:80]}); rebuild the index (--rebuild)')
        files.append(FileStat(entry['path'], entry['size'], entry['mtime_ns']))
    return files


def check_embeddings(embeddings: np.ndarray, path: str, rows: int, dim: object = None,
                     num_videos: object = None, files: Sequence[FileStat] = ()) -> None:
    """Refuse stored embeddings a save would not have written: another dtype or shape than
    the manifest says, a row that is not finite or not of unit length (such a row would be
    silently dropped from rankings, or outrank every other video).

    One pass of ``einsum`` over the rows: measured 0.15 s and a 4 MiB temporary for 1M x 512
    float32 (2 GiB, which takes longer to read from disk).
    """
    def refuse(problem: str) -> ValueError:
        return ValueError(f'{path}: {problem}; rebuild the index (--rebuild)')

    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise refuse(f'holds {embeddings.dtype} of shape {embeddings.shape}, not float32 '
                     '(videos, dim)')
    if embeddings.shape[0] != rows or (num_videos is not None and num_videos != rows):
        raise refuse(f'has {embeddings.shape[0]} rows for {rows} files (num_videos '
                     f'{num_videos})')
    if rows and (dim is not None and dim != embeddings.shape[1] or not embeddings.shape[1]):
        raise refuse(f'has rows of {embeddings.shape[1]} numbers, the manifest says dim={dim}')
    # a NaN or infinite entry makes its row's squared norm NaN or infinite: out of range too
    squared = np.einsum('ij,ij->i', embeddings, embeddings)
    bad = np.flatnonzero(~((squared >= (1 - NORM_TOLERANCE) ** 2)
                           & (squared <= (1 + NORM_TOLERANCE) ** 2)))
    if bad.size:
        row = int(bad[0])
        problem = ('not finite' if not np.isfinite(embeddings[row]).all()
                   else f'of norm {float(np.sqrt(squared[row])):.6g}, not 1')
        where = f' ({files[row].path})' if row < len(files) else ''
        raise refuse(f'row {row}{where} is {problem} (bad rows: {bad.size} of {rows})')
