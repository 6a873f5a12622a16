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

from ..fileio import atomic_write, read_stamped_json
from .manifest import FileStat
from .similarity import normalize_rows, select_top_k, top_k

FORMAT = 'tempme-video-index'
VERSION = 1
MANIFEST = 'manifest.json'
LOCK = '.lock'


class IndexModelMismatch(RuntimeError):
    """The index holds embeddings of another model than the one asked for."""


class IndexBusyError(RuntimeError):
    """Another process is updating the index."""


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
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'no video index in {directory!r} (no {MANIFEST}); '
                                    'build one with `tools/search.py index`')
        manifest = read_stamped_json(path, FORMAT, VERSION, 'index manifest',
                                     hint='; rebuild the index (--rebuild)')
        embeddings_path = os.path.join(directory, str(manifest.get('embeddings')))
        if os.path.basename(embeddings_path) != manifest.get('embeddings'):
            raise ValueError(f'{path}: the embeddings entry must name a file in the index folder')
        try:
            embeddings = np.load(embeddings_path, allow_pickle=False)
            files = [FileStat(**entry) for entry in manifest['files']]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(f'{embeddings_path}: cannot read the index ({type(err).__name__}: '
                             f'{err}); rebuild it (--rebuild)') from None
        if embeddings.ndim != 2 or embeddings.shape[0] != len(files):
            raise ValueError(f'{directory}: {manifest["embeddings"]} has shape '
                             f'{embeddings.shape} for {len(files)} files; rebuild the index '
                             '(--rebuild)')
        return cls(directory, manifest['model'], files, embeddings, manifest.get('failed'),
                   manifest.get('root'), normalized=True)

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
        if self.embeddings.shape[0] == 0:
            self.embeddings = embeddings
        else:
            self.embeddings = np.concatenate([self.embeddings, embeddings])
        self.files.extend(files)

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
