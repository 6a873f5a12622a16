"""An HTTP text-to-video search service over a video index and an ONNX export.

``GET /search?q=...&k=...`` answers a JSON list of ``{"path", "score"}``, best first;
``GET /health`` says what is served; ``POST /reload`` re-reads the index. The index
is also re-read when its manifest changes on disk (checked at most once a second), so
``tools/search.py index`` can update a served index in place.

A reload never serves a half-written index: an index save writes the embeddings file
before it atomically replaces the manifest naming it, and a reload builds a whole new
snapshot (manifest and embeddings) before swapping it in with one assignment. A reload
that fails (unreadable files, or an index of another model than the export's) keeps
the old snapshot serving and reports the error in ``/health``.
"""
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .onnx_retriever import OnnxRetriever
from .search import IndexModelMismatch, VideoIndex
from .search.store import MANIFEST

#: Bounds of a request.
MAX_QUERY_CHARS = 1000
MAX_K = 1000


class BadRequest(ValueError):
    """A request the service refuses (answered with HTTP 400)."""


@dataclass(frozen=True)
class Snapshot:
    """One loaded index and the manifest version it came from."""

    index: VideoIndex
    manifest_mtime_ns: int
    loaded_at: float


class BatchingEncoder:
    """Encode the queries that arrive together in one graph run.

    Requests wait on a future while one thread takes every query queued so far (up to
    ``max_batch``) and encodes them as a batch: under concurrent clients the text tower
    runs once per batch instead of once per query, which costs far less than that many
    single runs. Alone, a query runs at once (nothing waits for company). Scores may
    differ in the last float digits from a query encoded alone.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray],
                 max_batch: int = 32) -> None:
        self.encode, self.max_batch = encode, max_batch
        self._queue: 'queue.Queue[Tuple[str, Future]]' = queue.Queue()
        threading.Thread(target=self._serve, name='query-encoder', daemon=True).start()

    def __call__(self, text: str) -> np.ndarray:
        future: Future = Future()
        self._queue.put((text, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                embeddings = self.encode([text for text, _ in batch])
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), embedding in zip(batch, embeddings):
                future.set_result(embedding)


class SearchBackend:
    """Queries over the current index snapshot; thread-safe.

    Args:
        index_dir: the index folder (``tools/search.py index``).
        export_dir: the ONNX export of the model the index was built with.
        threads: ONNX Runtime intra-op threads.
        check_every: seconds between checks of the manifest for a newer index.
    """

    def __init__(self, index_dir: str, export_dir: str, threads: Optional[int] = None,
                 check_every: float = 1.0) -> None:
        self.index_dir = index_dir
        self.retriever = OnnxRetriever(export_dir, threads=threads, load_video=False)
        self.encode_query = BatchingEncoder(self.retriever.encode_texts)
        self.check_every = check_every
        self.reload_error: Optional[str] = None
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()
        self.snapshot = self._load()

    # -- index --------------------------------------------------------------------------
    def _manifest_mtime(self) -> int:
        return os.stat(os.path.join(self.index_dir, MANIFEST)).st_mtime_ns

    def _load(self, attempts: int = 3) -> Snapshot:
        """Read the index and check it belongs to the export's model."""
        for attempt in range(attempts):
            try:
                mtime = self._manifest_mtime()
                index = VideoIndex.load(self.index_dir)
                break
            except (OSError, ValueError):
                # a save replaced the manifest (and removed the file it named) between our
                # two reads: read again
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05)
        index.check_model(dict(fingerprint=self.retriever.fingerprint,
                               config=self.retriever.info['model']['config'],
                               checkpoint=self.retriever.info['model']['checkpoint']))
        return Snapshot(index, mtime, time.time())

    def reload(self) -> Snapshot:
        """Swap in the index on disk; on failure keep serving the old one and raise."""
        with self._reload_lock:
            try:
                snapshot = self._load()
            except (OSError, ValueError, IndexModelMismatch) as err:
                self.reload_error = f'{type(err).__name__}: {err}'
                raise
            self.snapshot, self.reload_error = snapshot, None
            return snapshot

    def maybe_reload(self) -> None:
        """Reload if the manifest changed since the served snapshot (rate-limited)."""
        now = time.monotonic()
        if now - self._last_check < self.check_every:
            return
        self._last_check = now
        try:
            changed = self._manifest_mtime() != self.snapshot.manifest_mtime_ns
        except OSError:
            changed = False  # the index folder is being replaced; keep serving
        if changed:
            try:
                self.reload()
            except (OSError, ValueError, IndexModelMismatch):
                pass  # reported by /health; the old snapshot keeps serving

    # -- queries ------------------------------------------------------------------------
    def search(self, query: Optional[str], k: int) -> List[Dict[str, object]]:
        if query is None or not query.strip():
            raise BadRequest('the query is empty: pass q=<what to look for>')
        if len(query) > MAX_QUERY_CHARS:
            raise BadRequest(f'the query has {len(query)} characters; at most '
                             f'{MAX_QUERY_CHARS} are accepted')
        if not 1 <= k <= MAX_K:
            raise BadRequest(f'k must be in [1, {MAX_K}], got {k}')
        self.maybe_reload()
        index = self.snapshot.index  # one read: the whole query uses one snapshot
        embedding = self.encode_query(query)
        return [dict(path=path, score=score) for path, score in index.search(embedding, k)]

    def health(self) -> Dict[str, object]:
        snapshot = self.snapshot
        return dict(status='ok' if self.reload_error is None else 'stale',
                    videos=len(snapshot.index), index=os.path.abspath(self.index_dir),
                    export=os.path.abspath(self.retriever.export_dir),
                    fingerprint=self.retriever.fingerprint,
                    loaded_at=snapshot.loaded_at, reload_error=self.reload_error)


def create_app(backend: SearchBackend):
    """The FastAPI application answering over ``backend``."""
    from fastapi import FastAPI, Query
    from fastapi.responses import JSONResponse

    app = FastAPI(title='TempMe video search', version='1')

    @app.get('/search')
    def search(q: Optional[str] = Query(None, description='what to look for'),
               k: int = Query(10, description=f'number of results, 1..{MAX_K}')):
        try:
            return backend.search(q, k)
        except BadRequest as err:
            return JSONResponse(status_code=400, content=dict(detail=str(err)))

    @app.get('/health')
    def health():
        return backend.health()

    @app.post('/reload')
    def reload():
        try:
            backend.reload()
        except IndexModelMismatch as err:
            return JSONResponse(status_code=409, content=dict(detail=str(err)))
        except (OSError, ValueError) as err:
            return JSONResponse(status_code=503, content=dict(detail=str(err)))
        return backend.health()

    return app
