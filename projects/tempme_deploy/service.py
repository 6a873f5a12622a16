"""An HTTP text-to-video search service over a video index and an ONNX export.

``GET /search?q=...&k=...[&per_video=N]`` answers a JSON list of moments ``{"path", "start",
"end", "score"}`` (seconds; overlapping windows of a video merged into one moment, at most
``per_video`` per video), best first, from the same ranking as ``tools/search.py query``
(approximate search when the index has it); ``GET /health`` says what is served;
``POST /reload`` re-reads the index. The index is also re-read when its manifest changes on
disk (checked at most once a second), so ``tools/search.py index`` can update a served index
in place.

A reload never serves a half-written index: an index save writes the embeddings file
before it atomically replaces the manifest naming it, and a reload builds a whole new
snapshot (manifest and embeddings, checked: see :meth:`VideoIndex.load`) before swapping it
in with one assignment. A reload runs in a worker thread, never on the event loop: queries
keep being answered from the old snapshot while a large index loads. A reload that fails
(unreadable or invalid files, embeddings of another width than the export's, an index of
another model) keeps the old snapshot serving and reports the error in ``/health``; a
manifest refused so is not re-read until it changes again.
"""
import asyncio
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .onnx_retriever import OnnxRetriever
from .search import IndexModelMismatch, VideoIndex
from .search.store import MANIFEST
from .tokenizer import is_empty_query

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


class RequestBatcher:
    """Answer the requests that arrive together with one call of ``process``.

    Requests wait on a future while one thread takes the first request queued, gathers
    the others that arrive within ``max_wait`` seconds (up to ``max_batch``), and
    processes them as a batch. Under concurrent clients the text tower and the index scan
    then run once per batch instead of once per query, far cheaper than that many single
    runs, and in one thread, so ONNX Runtime's and numpy's thread pools never compete.
    Without the short wait, clients answered together come back a few milliseconds apart
    and split into small batches (measured: 8 clients settled into two batches of 4, at a
    third more latency); alone, a request waits ``max_wait`` at most.
    """

    def __init__(self, process: Callable[[List[Any]], List[Any]], max_batch: int = 32,
                 max_wait: float = 0.004) -> None:
        self.process, self.max_batch, self.max_wait = process, max_batch, max_wait
        self._queue: 'queue.Queue[Tuple[Any, Future]]' = queue.Queue()
        threading.Thread(target=self._serve, name='request-batcher', daemon=True).start()

    def submit(self, request: Any) -> Future:
        """Queue ``request``; the future holds its result."""
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                results = self.process([request for request, _ in batch])
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


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
        # ONNX Runtime's threads keep spinning between runs (its default): measured over
        # three load tests each, 2-4 ms lower median latency and 5% more queries/s than
        # without, as the batched text tower's runs follow one another closely
        self.retriever = OnnxRetriever(export_dir, threads=threads, load_video=False)
        self.answer = RequestBatcher(self._answer_batch)
        self.check_every = check_every
        self.reload_error: Optional[str] = None
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._refused_mtime: Optional[int] = None
        self._reload_started = threading.Event()
        self.snapshot = self._load()

    # -- index --------------------------------------------------------------------------
    def _manifest_mtime(self) -> int:
        return os.stat(os.path.join(self.index_dir, MANIFEST)).st_mtime_ns

    def _manifest_changed_since(self, mtime: Optional[int]) -> bool:
        try:
            return self._manifest_mtime() != mtime
        except OSError:
            return True

    def _load(self, attempts: int = 3) -> Snapshot:
        """Read the index and check it belongs to the export's model."""
        for attempt in range(attempts):
            mtime = None
            try:
                mtime = self._manifest_mtime()
                index = VideoIndex.load(self.index_dir)
                break
            except (OSError, ValueError):
                # a save replaced the manifest (and removed the file it named) between our
                # two reads: read again. An index that stays as it is is refused at once
                # (reading a large one again would cost seconds for the same answer).
                if attempt == attempts - 1 or not self._manifest_changed_since(mtime):
                    raise
                time.sleep(0.05)
        index.check_model(self.retriever.description())
        # same fingerprint but another width: a damaged or crafted index, refused before
        # it is swapped in (every query would fail on it)
        index.check_dim(self.retriever.dim, f'the export {self.retriever.export_dir!r}')
        index.ann  # an index with approximate search builds its IVF here, not in a query
        return Snapshot(index, mtime, time.time())

    def reload(self) -> Snapshot:
        """Swap in the index on disk; on failure keep serving the old one and raise.

        Blocking (a large index takes seconds to read and check): call it from a worker
        thread, as ``/reload`` and :meth:`maybe_reload` do.
        """
        with self._reload_lock:
            try:
                attempted: Optional[int] = self._manifest_mtime()
            except OSError:
                attempted = None
            try:
                snapshot = self._load()
            except (OSError, ValueError, IndexModelMismatch) as err:
                self.reload_error = f'{type(err).__name__}: {err}'
                self._refused_mtime = attempted
                raise
            self.snapshot, self.reload_error = snapshot, None
            return snapshot

    def maybe_reload(self) -> None:
        """Start a reload in a worker thread if the manifest changed since the served
        snapshot (rate-limited); never waits for it, so it may be called on the event loop."""
        now = time.monotonic()
        if now - self._last_check < self.check_every:
            return
        self._last_check = now
        try:
            mtime = self._manifest_mtime()
        except OSError:
            return  # the index folder is being replaced; keep serving
        if mtime in (self.snapshot.manifest_mtime_ns, self._refused_mtime) or \
                self._reload_started.is_set() or self._reload_lock.locked():
            return
        self._reload_started.set()
        threading.Thread(target=self._reload_quietly, name='index-reload', daemon=True).start()

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except (OSError, ValueError, IndexModelMismatch):
            pass  # reported by /health; the old snapshot keeps serving
        finally:
            self._reload_started.clear()

    # -- queries ------------------------------------------------------------------------
    def submit(self, query: Optional[str], k: int, per_video: int = 1) -> Future:
        """Check a request and queue it; the future holds its list of
        ``{path, start, end, score}``."""
        if is_empty_query(query):
            raise BadRequest('the query is empty (only spaces, control or zero-width '
                             'characters): pass q=<what to look for>')
        if len(query) > MAX_QUERY_CHARS:
            raise BadRequest(f'the query has {len(query)} characters; at most '
                             f'{MAX_QUERY_CHARS} are accepted')
        if not 1 <= k <= MAX_K:
            raise BadRequest(f'k must be in [1, {MAX_K}], got {k}')
        if not 1 <= per_video <= MAX_K:
            raise BadRequest(f'per_video must be in [1, {MAX_K}], got {per_video}')
        self.maybe_reload()
        return self.answer.submit((query, k, per_video))

    def _answer_batch(self, requests: List[Tuple[str, int, int]]
                      ) -> List[List[Dict[str, object]]]:
        index = self.snapshot.index  # one read: the whole batch uses one snapshot
        embeddings = self.retriever.encode_texts([query for query, _, _ in requests])
        answers: List[List[Dict[str, object]]] = [[] for _ in requests]
        # one matrix product per group of requests that rank alike
        for per_video in sorted({p for _, _, p in requests}):
            group = [i for i, (_, _, p) in enumerate(requests) if p == per_video]
            hits = index.search_many(embeddings[group], [requests[i][1] for i in group],
                                     per_video=per_video)
            for i, moments in zip(group, hits):
                answers[i] = [m.to_dict() for m in moments]
        return answers

    def health(self) -> Dict[str, object]:
        snapshot = self.snapshot
        return dict(status='ok' if self.reload_error is None else 'stale',
                    videos=snapshot.index.num_files, windows=len(snapshot.index),
                    search='approximate (IVF)' if snapshot.index.ann_info else 'exact',
                    index=os.path.abspath(self.index_dir),
                    export=os.path.abspath(self.retriever.export_dir),
                    fingerprint=self.retriever.fingerprint,
                    precision=self.retriever.precision,
                    loaded_at=snapshot.loaded_at, reload_error=self.reload_error,
                    reloading=self._reload_lock.locked())


def create_app(backend: SearchBackend):
    """The FastAPI application answering over ``backend``."""
    from fastapi import FastAPI, Query
    from fastapi.responses import JSONResponse

    app = FastAPI(title='TempMe video search', version='1')

    @app.get('/search')
    async def search(q: Optional[str] = Query(None, description='what to look for'),
                     k: int = Query(10, description=f'number of moments, 1..{MAX_K}'),
                     per_video: int = Query(1, description='moments of one video at most')):
        # async: the event loop waits on the batcher's future, no worker thread per request
        try:
            future = backend.submit(q, k, per_video)
        except BadRequest as err:
            return JSONResponse(status_code=400, content=dict(detail=str(err)))
        # the hits are plain JSON already: skip FastAPI's per-field encoding
        return JSONResponse(await asyncio.wrap_future(future))

    @app.get('/health')
    def health():
        return backend.health()

    @app.post('/reload')
    async def reload():
        # off the event loop: searches and /health keep being answered during a long load
        try:
            await asyncio.to_thread(backend.reload)
        except IndexModelMismatch as err:
            return JSONResponse(status_code=409, content=dict(detail=str(err)))
        except (OSError, ValueError) as err:
            return JSONResponse(status_code=503, content=dict(detail=str(err)))
        return backend.health()

    return app
