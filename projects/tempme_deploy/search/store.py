"""A video index on disk: L2-normalised embeddings of video windows plus a JSON manifest.

Layout of an index folder::

    manifest.json           format, model (config, checkpoint, fingerprint), windows, files,
                            failures, the approximate-search settings
    embeddings-<id>.npy     float32 (N, D): one row per window of a video
    rows-<id>.npy           (N,) records (file, start, end, list): row i is window
                            [start, end) seconds of manifest["files"][file]; its IVF list
    centroids-<id>.npy      float32 (nlist, D), only for an index with approximate search

A file's rows are consecutive and files keep their order, so a file is re-encoded or
dropped as a whole. Every save writes new array files, then replaces the manifest that
names them (temporary file + ``os.replace``, atomic on POSIX), then deletes the old ones.
A process killed at any point leaves the last saved manifest and the files it names
intact. Arrays load with ``allow_pickle=False``.
"""
import contextlib
import fcntl
import json
import math
import os
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..fileio import atomic_write, read_stamped_json, resolves_inside
from . import ann as ann_module
from .manifest import FileStat
from .moments import Moment, rank_moments
from .similarity import normalize_rows, select_top_k

FORMAT = 'tempme-video-index'
VERSION = 2
MANIFEST = 'manifest.json'
LOCK = '.lock'
#: How far from unit length a stored row may be (a save normalises them to ~1e-7).
NORM_TOLERANCE = 1e-3
#: One record per row: its file (index into ``files``), its seconds, its IVF list (-1: none).
ROW_DTYPE = np.dtype([('file', '<i8'), ('start', '<f8'), ('end', '<f8'), ('list', '<i4')])
#: Files an index folder may hold, by prefix: what a save writes and later deletes.
ARRAY_PREFIXES = ('embeddings-', 'rows-', 'centroids-')
#: Rows from which an index gets approximate search (exact below).
ANN_MIN_ROWS = 250_000
#: Rows an index may grow to, relative to those its IVF was trained on, before retraining.
ANN_REGROW = 2.0


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


def row_records(row_files: np.ndarray, spans: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows of the given files; ``spans`` (N, 2) seconds, unknown (0, NaN) when omitted."""
    rows = np.zeros(len(row_files), ROW_DTYPE)
    rows['file'] = row_files
    if spans is None:
        rows['end'] = np.nan
    else:
        spans = np.asarray(spans, np.float64).reshape(len(row_files), 2)
        rows['start'], rows['end'] = spans[:, 0], spans[:, 1]
    rows['list'] = -1
    return rows


class VideoIndex:
    """Embeddings of the windows of a folder of videos and what they were computed with.

    Args:
        directory: the index folder.
        model: what :func:`~projects.tempme.apis.inference.describe` reports; its
            ``fingerprint`` decides whether embeddings can be mixed.
        files: the indexed videos (:class:`FileStat`), each once.
        embeddings: (N, D) rows, normalised on the way in.
        failed: path -> error of videos that could not be read in the last update.
        root: the video folder the index mirrors.
        normalized: the rows are already unit length (as stored), keep them bit for bit.
        rows: (N,) :data:`ROW_DTYPE` records; default one row per file, times unknown.
        windows: how videos were cut (:meth:`WindowSettings.to_dict`), ``None`` if unknown.
        ann: the approximate-search settings (nlist, nprobe, trained_rows, recall) of
            ``centroids``; ``None`` for exact search only.
    """

    def __init__(self, directory: str, model: Dict, files: Sequence[FileStat] = (),
                 embeddings: Optional[np.ndarray] = None, failed: Optional[Dict] = None,
                 root: Optional[str] = None, normalized: bool = False,
                 rows: Optional[np.ndarray] = None, windows: Optional[Dict] = None,
                 ann: Optional[Dict] = None, centroids: Optional[np.ndarray] = None) -> None:
        self.directory = directory
        self.model = dict(model)
        self.files: List[FileStat] = list(files)
        if embeddings is None:
            embeddings = np.zeros((0, 0), np.float32)
        elif not normalized:
            embeddings = normalize_rows(embeddings)
        # stored rows are not normalised again: that would move them by an ulp per load
        if rows is None:
            if embeddings.shape[0] != len(self.files):
                raise ValueError(f'{len(self.files)} files but {embeddings.shape[0]} embeddings')
            rows = row_records(np.arange(len(self.files)))
        if len(rows) != embeddings.shape[0]:
            raise ValueError(f'{len(rows)} rows but {embeddings.shape[0]} embeddings')
        self._embeddings, self.rows = embeddings, rows
        self._pending: List[tuple] = []  # (rows, embeddings) added since the last read
        self.failed = dict(failed or {})
        self.root = root
        self.windows = windows
        self.ann_info, self.centroids = (ann, centroids) if ann is not None else (None, None)
        self._ann: Optional[ann_module.IvfIndex] = None

    def __len__(self) -> int:
        """Rows (windows) in the index."""
        return len(self.rows) + sum(len(r) for r, _ in self._pending)

    @property
    def num_files(self) -> int:
        return len(self.files)

    @property
    def embeddings(self) -> np.ndarray:
        self._flush()
        return self._embeddings

    def _flush(self) -> None:
        """Join the rows added since the last read (one copy, not one per addition)."""
        if not self._pending:
            return
        rows = [self.rows] + [r for r, _ in self._pending]
        blocks = [e for _, e in self._pending]
        if self._embeddings.shape[0]:
            blocks.insert(0, self._embeddings)
        self._embeddings, self.rows = np.concatenate(blocks), np.concatenate(rows)
        self._pending = []

    @property
    def row_files(self) -> np.ndarray:
        self._flush()
        return self.rows['file']

    @property
    def spans(self) -> np.ndarray:
        self._flush()
        return np.stack([self.rows['start'], self.rows['end']], 1)

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
        files = _file_entries(manifest, path)
        rows_path = _array_path(manifest, 'rows', directory, path)
        rows = _load_array(rows_path)
        check_rows(rows, rows_path, files, manifest.get('num_videos'))
        embeddings_path = _array_path(manifest, 'embeddings', directory, path)
        embeddings = _load_array(embeddings_path)
        check_embeddings(embeddings, embeddings_path, len(rows), manifest.get('dim'),
                         manifest.get('num_rows'),
                         lambda row: files[int(rows['file'][row])].path)
        model, failed, root = manifest.get('model'), manifest.get('failed'), manifest.get('root')
        windows, ann = manifest.get('windows'), manifest.get('ann')
        for key, value, kind in (('model', model, dict), ('failed', failed, (dict, type(None))),
                                 ('root', root, (str, type(None))),
                                 ('windows', windows, (dict, type(None))),
                                 ('ann', ann, (dict, type(None)))):
            if not isinstance(value, kind):
                raise ValueError(f'{path}: {key} has the wrong type ({type(value).__name__}); '
                                 'rebuild the index (--rebuild)')
        centroids = None
        if ann is not None:
            centroids = _load_ann(manifest, ann, directory, path, embeddings.shape[1], rows)
            ann = {key: value for key, value in ann.items() if key != 'centroids'}
        elif len(rows) and (rows['list'] != -1).any():
            raise ValueError(f'{rows_path}: rows name IVF lists but the manifest has no ann '
                             'entry; rebuild the index (--rebuild)')
        return cls(directory, model, files, embeddings, failed, root, normalized=True,
                   rows=rows, windows=windows, ann=ann, centroids=centroids)

    def save(self) -> None:
        """Write the arrays, then the manifest naming them; on failure the last save stays
        (a failed write raises ``OSError`` naming the file, from ``atomic_write``)."""
        self._flush()
        self._assign_new_rows()
        os.makedirs(self.directory, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        names = dict(embeddings=f'embeddings-{tag}.npy', rows=f'rows-{tag}.npy')
        arrays = dict(embeddings=self._embeddings, rows=self.rows)
        ann = None
        if self.ann_info is not None:
            names['centroids'] = f'centroids-{tag}.npy'
            arrays['centroids'] = self.centroids
            ann = dict(self.ann_info, centroids=names['centroids'])
        for key, name in names.items():
            atomic_write(os.path.join(self.directory, name),
                         lambda tmp, a=arrays[key]: _write_array(tmp, a))
        manifest = dict(format=FORMAT, version=VERSION, root=self.root, model=self.model,
                        windows=self.windows, embeddings=names['embeddings'],
                        rows=names['rows'], num_videos=len(self.files),
                        num_rows=len(self.rows), dim=int(self._embeddings.shape[1]),
                        ann=ann, files=[f.to_dict() for f in self.files], failed=self.failed)
        text = json.dumps(manifest, indent=1).encode()
        atomic_write(os.path.join(self.directory, MANIFEST),
                     lambda tmp: Path(tmp).write_bytes(text))
        current = set(names.values())
        for stale in os.listdir(self.directory):
            if stale.startswith(ARRAY_PREFIXES) and stale.endswith('.npy') and \
                    stale not in current:
                os.remove(os.path.join(self.directory, stale))

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

    def keep_files(self, keep: Sequence[int]) -> None:
        """Keep the files at these positions, in this order, with all their rows."""
        self._flush()
        keep = np.asarray(list(keep), np.int64)
        counts = np.bincount(self.rows['file'], minlength=len(self.files))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        sizes = counts[keep]
        # the rows of each kept file, file after file
        select = np.repeat(offsets[keep] - np.concatenate([[0], np.cumsum(sizes)[:-1]]),
                           sizes) + np.arange(int(sizes.sum()))
        self.files = [self.files[i] for i in keep]
        self.rows = self.rows[select]
        self.rows['file'] = np.repeat(np.arange(len(keep)), sizes)
        if self._embeddings.size:
            self._embeddings = self._embeddings[select]
        self._ann = None

    def sort_by_path(self) -> None:
        """Files (and their rows) in path order: the same index whatever order they came in."""
        order = sorted(range(len(self.files)), key=lambda i: self.files[i].path)
        if order != list(range(len(self.files))):
            self.keep_files(order)

    def add(self, files: Sequence[FileStat], embeddings: np.ndarray,
            spans: Optional[np.ndarray] = None, counts: Optional[Sequence[int]] = None) -> None:
        """Append videos: ``counts[i]`` consecutive rows of ``embeddings`` (and ``spans``)
        for ``files[i]`` (one row each by default)."""
        counts = np.ones(len(files), np.int64) if counts is None else np.asarray(counts, np.int64)
        if len(counts) != len(files) or int(counts.sum()) != len(embeddings) or \
                (counts < 1).any():
            raise ValueError(f'{len(files)} files ({int(counts.sum())} rows) but '
                             f'{len(embeddings)} embeddings')
        if not len(files):
            return
        embeddings = normalize_rows(embeddings)
        squared = np.einsum('ij,ij->i', embeddings, embeddings)
        bad = np.flatnonzero(~(np.abs(squared - 1) <= NORM_TOLERANCE))  # NaN rows too
        if bad.size:  # load would refuse the saved index
            owner = int(np.searchsorted(np.cumsum(counts), bad[0], side='right'))
            raise ValueError(f'{files[owner].path}: its embedding is not finite or zero; '
                             'not added to the index')
        width = self._embeddings.shape[1] if self._embeddings.shape[0] else None
        if width is not None and embeddings.shape[1] != width:
            raise ValueError(f'{files[0].path}: an embedding of {embeddings.shape[1]} numbers '
                             f'for an index of {width}')
        rows = row_records(len(self.files) + np.repeat(np.arange(len(files)), counts), spans)
        self.files.extend(files)
        self._pending.append((rows, embeddings))
        self._ann = None

    def check_dim(self, dim: int, what: str) -> None:
        """Refuse to rank this index with ``dim``-wide queries (``what`` names their source)."""
        if len(self) and self.embeddings.shape[1] != dim:
            raise ValueError(f'the index in {self.directory!r} holds {self.embeddings.shape[1]}-'
                             f'dimensional embeddings, {what} gives {dim}; rebuild the index '
                             'with this model (--rebuild)')

    # -- approximate search ---------------------------------------------------------------
    @property
    def ann(self) -> Optional[ann_module.IvfIndex]:
        """The IVF over the rows (built from the saved centroids and lists on first use)."""
        if self.ann_info is None or not len(self):
            return None
        self._flush()
        if self._ann is None:
            self._assign_new_rows()
            self._ann = ann_module.IvfIndex(self.centroids, self.rows['list'], self._embeddings,
                                            int(self.ann_info['nprobe']))
        return self._ann

    def _assign_new_rows(self) -> None:
        """Rows added since the IVF was trained join the list of their nearest centroid."""
        if self.ann_info is None or not len(self.rows):
            return
        new = np.flatnonzero(self.rows['list'] < 0)
        if new.size:
            self.rows['list'][new] = ann_module.assign_lists(self.centroids,
                                                             self._embeddings[new])
            self._ann = None

    def update_ann(self, min_rows: int = ANN_MIN_ROWS, rebuild: bool = False,
                   target_recall: float = 0.995, seed: int = 0) -> Optional[Dict]:
        """Give the index approximate search if it has at least ``min_rows`` rows (drop it
        below): lists trained when there are none, when ``rebuild``, or when the index grew
        past :data:`ANN_REGROW` times the rows they were trained on; otherwise new rows
        only join their nearest list. Returns the settings (``None``: exact only)."""
        self._flush()
        rows = len(self.rows)
        if rows < min_rows or not rows:
            self.ann_info = self.centroids = self._ann = None
            self.rows['list'] = -1
            return None
        trained = self.ann_info['trained_rows'] if self.ann_info else 0
        if rebuild or self.ann_info is None or rows > ANN_REGROW * trained:
            centroids = ann_module.train_centroids(self._embeddings, seed=seed)
            self.rows['list'] = ann_module.assign_lists(centroids, self._embeddings)
            self.centroids = centroids
            self.ann_info = dict(type='ivf-sq8', nlist=len(centroids), nprobe=1,
                                 trained_rows=rows, recall_at_10=None)
            self._ann = None
            nprobe, recall = ann_module.calibrate_nprobe(self.ann, self._embeddings,
                                                         target_recall)
            self.ann_info.update(nprobe=int(nprobe), recall_at_10=round(recall, 4))
            self._ann = None
        else:
            self._assign_new_rows()
        return self.ann_info

    # -- search ---------------------------------------------------------------------------
    def moment(self, row: int, score: float) -> Moment:
        record = self.rows[row]
        end = float(record['end'])
        return Moment(self.files[int(record['file'])].path, float(record['start']),
                      end if math.isfinite(end) else None, float(score))

    def _rank(self, top: Callable, k: int, per_video: int) -> List[Moment]:
        picks, scores = rank_moments(top, len(self.rows), self.rows['file'], self.spans, k,
                                     per_video)
        return [self.moment(r, scores[r]) for r in picks]

    def search(self, query: np.ndarray, k: int = 10, per_video: int = 1,
               exact: bool = False, nprobe: Optional[int] = None) -> List[Moment]:
        """The ``k`` best moments for a query embedding, best first: overlapping windows of
        a video count once (the best), at most ``per_video`` moments per video."""
        return self.search_many(np.asarray(query).reshape(1, -1), [k], per_video, exact,
                                nprobe)[0]

    def search_many(self, queries: np.ndarray, ks: Sequence[int], per_video: int = 1,
                    exact: bool = False, nprobe: Optional[int] = None) -> List[List[Moment]]:
        """:meth:`search` for (B, D) queries at once: exact search reads the stored
        embeddings once for the whole batch (one matrix product) instead of once per query."""
        if not len(self):
            return [[] for _ in ks]
        queries = normalize_rows(queries)
        embeddings = self.embeddings
        if queries.shape[1] != embeddings.shape[1]:
            raise ValueError(f'the query has {queries.shape[1]} dimensions, the index '
                             f'{embeddings.shape[1]}')
        found = []
        ivf = None if exact else self.ann
        if ivf is not None:
            for query, k in zip(queries, ks):
                found.append(self._rank(lambda m, q=query: ivf.search(q, m, nprobe), k,
                                        per_video))
            return found
        scores = embeddings @ queries.T
        for column, k in enumerate(ks):
            column_scores = np.ascontiguousarray(scores[:, column])
            found.append(self._rank(lambda m, s=column_scores: select_top_k(s, m), k,
                                    per_video))
        return found


def _write_array(path: str, array: np.ndarray) -> None:
    with open(path, 'wb') as f:  # a file object: np.save would append .npy to a name
        np.save(f, array, allow_pickle=False)


def _array_path(manifest: Dict, key: str, directory: str, manifest_path: str) -> str:
    """The index file the manifest names under ``key``: a plain name in the folder, not a
    link leading out of it."""
    name = manifest.get(key)
    if not isinstance(name, str) or os.path.basename(name) != name or name in ('', '.', '..'):
        raise ValueError(f'{manifest_path}: the {key} entry must name a file in the index '
                         'folder')
    path = os.path.join(directory, name)
    _refuse_links_out(path, directory)
    return path


def _load_array(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, TypeError, EOFError) as err:
        raise ValueError(f'{path}: cannot read the index ({type(err).__name__}: '
                         f'{err}); rebuild it (--rebuild)') from None


def _load_ann(manifest: Dict, ann: Dict, directory: str, path: str, dim: int,
              rows: np.ndarray) -> np.ndarray:
    """The IVF centroids the manifest names, checked against its settings and the rows."""
    for key in ('nlist', 'nprobe', 'trained_rows'):
        if type(ann.get(key)) is not int or ann[key] < 1:
            raise ValueError(f'{path}: ann.{key} must be a positive integer, got '
                             f'{ann.get(key)!r}; rebuild the index (--rebuild)')
    centroids_path = _array_path(ann, 'centroids', directory, path)
    centroids = _load_array(centroids_path)
    if centroids.dtype != np.float32 or centroids.shape != (ann['nlist'], dim) or \
            not np.isfinite(centroids).all():
        raise ValueError(f'{centroids_path}: holds {centroids.dtype} of shape '
                         f'{centroids.shape}, not finite float32 ({ann["nlist"]}, {dim}) '
                         'centroids; rebuild the index (--rebuild)')
    lists = rows['list']
    bad = np.flatnonzero((lists < 0) | (lists >= ann['nlist']))
    if bad.size:
        raise ValueError(f'{path}: row {int(bad[0])} names IVF list {int(lists[bad[0]])}, '
                         f'not one of the {ann["nlist"]}; rebuild the index (--rebuild)')
    return centroids


def _file_entries(manifest: Dict, path: str) -> List[FileStat]:
    """The manifest's ``files``, each checked for the fields and types a save writes."""
    entries = manifest.get('files')
    if not isinstance(entries, list):
        raise ValueError(f'{path}: files must be a list; rebuild the index (--rebuild)')
    files, seen = [], set()
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and entry.keys() == {'path', 'size', 'mtime_ns'}
                and isinstance(entry['path'], str) and type(entry['size']) is int
                and type(entry['mtime_ns']) is int):
            raise ValueError(f'{path}: files.{i} is not {{"path": str, "size": int, "mtime_ns": '
                             f'int}} ({str(entry)[:80]}); rebuild the index (--rebuild)')
        if entry['path'] in seen:
            raise ValueError(f'{path}: files.{i} ({entry["path"]}) is listed twice; rebuild the '
                             'index (--rebuild)')
        seen.add(entry['path'])
        files.append(FileStat(entry['path'], entry['size'], entry['mtime_ns']))
    return files


def check_rows(rows: np.ndarray, path: str, files: Sequence[FileStat],
               num_videos: object = None) -> None:
    """Refuse a rows table a save would not have written: another dtype, rows that do not
    give each file one run of consecutive rows in file order, or times that are not
    ``0 <= start <= end`` (an unknown end is NaN)."""
    def refuse(problem: str) -> ValueError:
        return ValueError(f'{path}: {problem}; rebuild the index (--rebuild)')

    if rows.dtype != ROW_DTYPE or rows.ndim != 1:
        raise refuse(f'holds {rows.dtype} of shape {rows.shape}, not (rows,) records of '
                     f'{ROW_DTYPE.descr}')
    owners = rows['file']
    steps = np.diff(owners)
    if (num_videos is not None and num_videos != len(files)) or (
            len(rows) and (owners[0] != 0 or owners[-1] != len(files) - 1
                           or ((steps != 0) & (steps != 1)).any())) or \
            (not len(rows) and files):
        raise refuse(f'has {len(rows)} rows for {len(files)} files (num_videos {num_videos}): '
                     'each file needs its own consecutive rows, in file order')
    start, end = rows['start'], rows['end']
    bad = np.flatnonzero(~(np.isfinite(start) & (start >= 0)
                           & (np.isnan(end) | (np.isfinite(end) & (end >= start)))))
    if bad.size:
        row = int(bad[0])
        raise refuse(f'row {row} ({files[int(owners[row])].path}) spans {start[row]}-{end[row]}'
                     ' s, not 0 <= start <= end')


def check_embeddings(embeddings: np.ndarray, path: str, rows: int, dim: object = None,
                     num_rows: object = None,
                     row_path: Optional[Callable[[int], str]] = None) -> None:
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
                     '(rows, dim)')
    if embeddings.shape[0] != rows or (num_rows is not None and num_rows != rows):
        raise refuse(f'has {embeddings.shape[0]} rows for {rows} windows (num_rows {num_rows})')
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
        where = f' ({row_path(row)})' if row_path is not None else ''
        raise refuse(f'row {row}{where} is {problem} (bad rows: {bad.size} of {rows})')
