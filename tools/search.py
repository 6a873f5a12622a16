"""Search your own videos with a TempMe retriever: build an index, then query it by text.

Examples::

    # encode every video under ~/videos (again only new or changed files on later runs)
    python tools/search.py index ~/videos --config configs/tempme_msrvtt.py \
        --checkpoint work_dirs/tempme_msrvtt/best.pth --index work_dirs/my_index
    # or encode with an ONNX export (tools/deployment/export_onnx.py) in ONNX Runtime
    python tools/search.py index ~/videos --onnx work_dirs/tempme_onnx --index work_dirs/my_index
    # the 10 best matches, as text, JSON, or a contact sheet
    python tools/search.py query work_dirs/my_index "a dog catches a frisbee" --top-k 10
    python tools/search.py query work_dirs/my_index "a dog catches a frisbee" --json
    python tools/search.py query work_dirs/my_index "a dog" --sheet hits.png
    python tools/search.py query work_dirs/my_index "a dog" --onnx work_dirs/tempme_onnx

The index (``projects/tempme_deploy/search``) keeps L2-normalised video embeddings and a JSON
manifest; a query is one matrix product over all of them (exact search).
"""
import argparse
import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from tqdm import tqdm

from projects.tempme.apis.inference import (LoadedRetriever, check_frames, describe, encode_texts,
                                            encode_videos, init_retriever)
from projects.tempme.apis.video_windows import WindowReader, default_window, export_window_reader
from projects.tempme.config_checks import check_data_fits_model
from projects.tempme.console import quiet_console
from projects.tempme.file_configs import checked_file_config
from projects.tempme.known_warnings import ignore_known_warnings
from projects.tempme_deploy.fileio import atomic_write
from projects.tempme_deploy.onnx_retriever import ExportFormatError, OnnxRetriever
from projects.tempme_deploy.search import (VIDEO_EXTENSIONS, FileStat, IndexBusyError,
                                           IndexModelMismatch, Moment, VideoIndex, Window,
                                           WindowSettings, plan_update, plan_windows, scan_videos,
                                           shard_by_duration)
from projects.tempme_deploy.search.store import ANN_MIN_ROWS, MANIFEST
from projects.tempme_deploy.tokenizer import is_empty_query


# -- index --------------------------------------------------------------------------------
@dataclass
class IndexEncoder:
    """What an index update needs of a model, with either backend."""

    reader: WindowReader             # file -> windows of uint8 (T, 3, H, W) frames
    frames_shape: Tuple[int, ...]    # (T, 3, H, W) the model takes
    encode: Callable[[List[torch.Tensor]], np.ndarray]  # frames -> (B, D) embeddings
    model: Dict                      # what the index records (fingerprint decides mixing)

    def default_window(self) -> WindowSettings:
        return default_window(self.reader.steps, self.frames_shape[0])


def torch_encoder(config: str, checkpoint: Optional[str], cfg_options: Optional[dict],
                  device: str) -> IndexEncoder:
    loaded = init_retriever(config, checkpoint, device=device, cfg_options=cfg_options)
    check_data_fits_model(loaded.cfg)
    model = dict(describe(loaded), cfg_options=cfg_options or {},
                 resolved_config=frozen_config(loaded.cfg))

    def encode(frames: List[torch.Tensor]) -> np.ndarray:
        feats = encode_videos(loaded, [f.to(device) for f in frames])
        return feats.float().cpu().numpy()

    return IndexEncoder(WindowReader(loaded.cfg), loaded.encoder.input_shape, encode, model)


def onnx_encoder(export_dir: str) -> IndexEncoder:
    """The video graph of an ONNX export; frames are read with the pipeline it records."""
    retriever = OnnxRetriever(export_dir)
    info = retriever.info
    reader = export_window_reader(info, export_dir)
    model = dict(retriever.description(), cfg_options={},
                 weights=f'ONNX export {os.path.abspath(export_dir)} ({retriever.precision}) '
                 f'of {info["model"]["weights"]}', resolved_config=info['resolved_config'])

    def encode(frames: List[torch.Tensor]) -> np.ndarray:
        return retriever.encode_videos(torch.stack(frames).numpy())

    return IndexEncoder(reader, retriever.frames_shape, encode, model)


@dataclass(frozen=True)
class Job:
    """Windows of one file to encode: all of them (``only`` None) or the listed ones."""

    key: int                          # the file's position in the update's plan
    file: FileStat
    only: Optional[Tuple[int, ...]] = None


class _DecodedWindows(torch.utils.data.IterableDataset):
    """Decode the jobs' windows with the test pipeline, file after file (each loader worker
    takes every n-th job). Yields ``(job, window index, window, frames, error, last)``; a
    failure comes back as a message closing its job, not as a raise."""

    def __init__(self, jobs: Sequence[Job], reader: WindowReader,
                 frames_shape: Tuple[int, ...], settings: WindowSettings) -> None:
        self.jobs, self.reader = list(jobs), reader
        self.frames_shape, self.settings = frames_shape, settings

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = (range(len(self.jobs)) if info is None
                else range(info.id, len(self.jobs), info.num_workers))
        for j in mine:
            path = self.jobs[j].file.path
            windows = self.reader.read(path, self.settings, self.jobs[j].only)
            pending = None
            while True:
                try:
                    item = next(windows, None)
                except Exception as err:  # noqa: BLE001 - any decoder error skips this file
                    yield j, None, None, None, f'{type(err).__name__}: {err}'.strip(), True
                    break
                if item is None:
                    if pending is None:
                        yield j, None, None, None, 'no frames to read', True
                    else:
                        yield (j, *pending, None, True)
                    break
                # a clip the model cannot take is the config's fault, not the file's: raise
                check_frames(self.frames_shape, item[2], path)
                if pending is not None:
                    yield (j, *pending, None, False)
                pending = item


def encode_jobs(jobs: Sequence[Job], encoder: IndexEncoder, settings: WindowSettings,
                batch_size: int, workers: int, progress: bool
                ) -> Iterator[Tuple[Job, Optional[List[Tuple[int, Window]]],
                                    Optional[np.ndarray], Optional[str]]]:
    """Encode the jobs' windows in batches (across files); yield each job once it is
    complete: ``(job, [(window index, window)], embeddings, None)`` in time order, or
    ``(job, None, None, error)``."""
    if not jobs:  # nothing to encode: no empty progress bar
        return
    loader = torch.utils.data.DataLoader(
        _DecodedWindows(jobs, encoder.reader, encoder.frames_shape, settings),
        batch_size=batch_size, num_workers=workers, collate_fn=list)
    parts: Dict[int, list] = {}
    failed: Dict[int, str] = {}
    with tqdm(total=len(jobs), unit='video', desc='encoding', disable=not progress,
              file=sys.stderr) as bar:
        for batch in loader:
            good = [item for item in batch if item[4] is None and item[0] not in failed]
            feats = np.asarray(encoder.encode([item[3] for item in good]), np.float32) if good \
                else np.zeros((0, 0), np.float32)
            norms = np.linalg.norm(feats, axis=1) if len(feats) else feats
            by_item = {id(item): row for item, row in zip(good, range(len(good)))}
            for item in batch:
                j, index, window, _, error, last = item
                if j in failed:
                    pass
                elif error is not None:
                    failed[j] = error
                elif not (np.isfinite(norms[by_item[id(item)]]) and norms[by_item[id(item)]] > 0):
                    # a NaN or zero embedding would make the saved index unloadable
                    failed[j] = 'the model gave a non-finite or zero embedding'
                else:
                    parts.setdefault(j, []).append((index, window, feats[by_item[id(item)]]))
                if not last:
                    continue
                bar.update(1)
                done = parts.pop(j, [])
                if j in failed:
                    yield jobs[j], None, None, failed.pop(j)
                else:
                    done.sort(key=lambda part: part[0])
                    yield jobs[j], [p[:2] for p in done], np.stack([p[2] for p in done]), None


class NoVideosError(ValueError):
    """The video folder holds no video; an index of nothing is refused."""


def build_index(video_dir: str, index_dir: str, config: Optional[str] = None,
                checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                batch_size: int = 8, workers: int = 0, save_every: int = 100,
                rebuild: bool = False, device: str = 'cpu', progress: bool = True,
                onnx: Optional[str] = None, window: Optional[float] = None,
                stride: Optional[float] = None, ann_min_rows: int = ANN_MIN_ROWS,
                rebuild_ann: bool = False, launcher: str = 'none') -> Dict[str, int]:
    """Bring the index in ``index_dir`` up to date with the videos under ``video_dir``.

    Each video is cut into windows of ``window`` seconds, one every ``stride`` seconds
    (default: the model's clip and half of it; an existing index keeps its own), one row
    each. The model is ``config`` (+ ``checkpoint``) in PyTorch, or the ONNX export in
    ``onnx``; both record the same fingerprint, so their embeddings can be mixed. With a
    ``launcher`` (``pytorch``, ``slurm``) the processes it started share the windows.
    Returns counts: ``found``, ``encoded`` (videos), ``windows`` (encoded now),
    ``unchanged``, ``changed``, ``removed``, ``failed`` (unreadable, reported on stderr by
    path), ``skipped`` (named like videos but not regular files: FIFOs, sockets, devices,
    broken links; never opened, reported on stderr by path), ``indexed`` (videos) and
    ``rows`` (windows in the index).
    """
    if (config is None) == (onnx is None):
        raise ValueError('give the model either as a config (--config) or as an ONNX export '
                         '(--onnx)')
    if not scan_videos(video_dir):
        raise NoVideosError(f'no videos found under {video_dir} (extensions: '
                            f'{", ".join(e.lstrip(".") for e in VIDEO_EXTENSIONS)})')
    rank, world = init_distributed(launcher)
    if device.startswith('cuda') and world > 1:
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()}'
    # the model first: a config or export that cannot be used leaves the index folder as it was
    encoder = onnx_encoder(onnx) if onnx else torch_encoder(config, checkpoint, cfg_options,
                                                            device)
    update = IndexUpdate(video_dir, index_dir, encoder, batch_size, workers, save_every,
                         rebuild, progress, window, stride, ann_min_rows, rebuild_ann)
    if world > 1:
        return update.run_distributed(rank, world)
    with VideoIndex.lock(index_dir):
        return update.run()


def init_distributed(launcher: str) -> Tuple[int, int]:
    """(rank, world size) of this process; starts the process group of a launcher.

    Indexing exchanges only small objects (plans, file lists) between ranks, so the group is
    gloo on every device, with a long timeout: ranks wait for each other only at the end,
    after encoding their share.
    """
    import datetime

    import torch.distributed as dist
    if launcher == 'none':
        return 0, 1
    if not dist.is_initialized():
        if launcher == 'slurm':
            _slurm_environment()
        elif launcher != 'pytorch':
            raise ValueError(f'--launcher must be none, pytorch or slurm, got {launcher!r}')
        dist.init_process_group('gloo', timeout=datetime.timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size()


def _slurm_environment() -> None:
    """torch.distributed's variables from slurm's, as mmengine's slurm launcher sets them."""
    import subprocess
    nodes = os.environ['SLURM_NODELIST']
    first = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
    os.environ.setdefault('MASTER_ADDR', first)
    os.environ.setdefault('MASTER_PORT', os.environ.get('PORT', '29500'))
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def frozen_config(cfg: Config) -> dict:
    """What a query rebuilds the model from (the model and the test pipeline), as plain JSON
    data, so that querying never runs a config file. Training and runtime settings are left
    out: a query never builds them, and their types need not be plain registered names."""
    kept = {key: cfg[key] for key in ('model', 'test_pipeline') if key in cfg}
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline')
    if pipeline is not None:
        kept['test_dataloader'] = dict(dataset=dict(pipeline=pipeline))
    try:
        return json.loads(json.dumps(Config(kept).to_dict()))
    except TypeError as err:
        raise ValueError(f'the config holds a value an index cannot record as data: {err}')


class IndexUpdate:
    """One update of an index folder, in one process or shared by the ranks of a launcher."""

    def __init__(self, video_dir, index_dir, encoder: IndexEncoder, batch_size, workers,
                 save_every, rebuild, progress, window, stride, ann_min_rows,
                 rebuild_ann) -> None:
        self.video_dir, self.index_dir, self.encoder = video_dir, index_dir, encoder
        self.batch_size, self.workers, self.save_every = batch_size, workers, save_every
        self.rebuild, self.progress = rebuild, progress
        self.window, self.stride = window, stride
        self.ann_min_rows, self.rebuild_ann = ann_min_rows, rebuild_ann

    def scan(self) -> Tuple[List[FileStat], int]:
        skipped: Dict[str, str] = {}
        current = scan_videos(self.video_dir, skipped=skipped)
        for path, reason in skipped.items():
            print(f'skipped {path}: {reason}', file=sys.stderr)
        if not current:
            raise NoVideosError(f'no videos found under {self.video_dir} (extensions: '
                                f'{", ".join(e.lstrip(".") for e in VIDEO_EXTENSIONS)})')
        return current, len(skipped)

    def open_index(self) -> Tuple[VideoIndex, bool]:
        """The index to update (a new one if there is none or ``rebuild``), its windows
        settled: the index's own unless others are asked for, which needs ``rebuild``."""
        model = self.encoder.model
        is_new = not VideoIndex.exists(self.index_dir) or self.rebuild
        if not is_new:
            index = VideoIndex.load(self.index_dir)
            index.check_model(model)
            index.model = model
        else:
            index = VideoIndex(self.index_dir, model)
        default = self.encoder.default_window()
        recorded = WindowSettings(**index.windows) if index.windows else None
        base = recorded if recorded is not None and not is_new else default
        seconds = self.window if self.window is not None else base.seconds
        if self.stride is not None:
            stride = self.stride
        elif self.window is not None:
            stride = max(seconds / 2, 1 / base.frame_rate)
        else:
            stride = base.stride
        settings = WindowSettings(seconds, stride, base.frame_rate)
        if not is_new and recorded is not None and settings != recorded:
            raise ValueError(f'the index in {self.index_dir!r} holds windows of '
                             f'{recorded.seconds:g} s every {recorded.stride:g} s; pass '
                             f'--rebuild to re-encode every video with {settings.seconds:g} s '
                             f'every {settings.stride:g} s, or use another --index folder')
        index.windows = settings.to_dict()
        index.root = os.path.abspath(self.video_dir)
        self.settings = settings
        return index, is_new

    def finish(self, index: VideoIndex) -> None:
        index.sort_by_path()
        index.update_ann(self.ann_min_rows, rebuild=self.rebuild_ann)
        index.save()

    # -- one process ----------------------------------------------------------------------
    def run(self) -> Dict[str, int]:
        current, skipped = self.scan()
        index, is_new = self.open_index()
        plan = plan_update(index.files, current)
        index.keep_files(plan.keep)
        index.failed = {}
        stats = dict(found=len(current), encoded=0, windows=0, unchanged=plan.unchanged,
                     changed=len(plan.changed), removed=len(plan.removed), failed=0,
                     skipped=skipped)
        jobs = [Job(i, f) for i, f in enumerate(plan.encode)]
        since_save = 0
        for job, windows, feats, error in encode_jobs(jobs, self.encoder, self.settings,
                                                      self.batch_size, self.workers,
                                                      self.progress):
            if error is not None:
                index.failed[job.file.path] = error
                tqdm.write(f'skipped unreadable video {job.file.path}: {error}',
                           file=sys.stderr)
            else:
                index.add([job.file], feats, [(w.start, w.end) for _, w in windows],
                          [len(windows)])
                stats['encoded'] += 1
                stats['windows'] += len(windows)
            stats['failed'] = len(index.failed)
            since_save += 1
            if since_save >= self.save_every:
                index.save()
                since_save = 0
        self.finish(index)
        return dict(stats, indexed=index.num_files, rows=len(index))

    # -- ranks of a launcher --------------------------------------------------------------
    def run_distributed(self, rank: int, world: int) -> Dict[str, int]:
        """Rank 0 plans (under the index lock) and merges; every rank encodes a share of
        the missing windows, balanced by duration, into partial files in the index folder.
        Partial files outlive a killed run: the next run with the same plan encodes only
        the windows they lack."""
        import torch.distributed as dist
        lock = VideoIndex.lock(self.index_dir) if rank == 0 else contextlib.nullcontext()
        with lock:
            planned = [None]
            if rank == 0:
                try:
                    current, skipped = self.scan()
                    index, _ = self.open_index()
                    plan = plan_update(index.files, current)
                    planned = [dict(plan=plan, settings=self.settings, skipped=skipped,
                                    found=len(current))]
                except Exception as err:  # noqa: BLE001 - every rank stops with the error
                    planned = [err]
            dist.broadcast_object_list(planned, src=0)
            if isinstance(planned[0], Exception):
                raise planned[0]
            plan, self.settings = planned[0]['plan'], planned[0]['settings']
            parts = PartialWindows(self.index_dir, self.encoder.model, self.settings,
                                   plan.encode)
            # each rank probes every world-th file: frames and fps decide the windows
            mine = {i: self._probe(f) for i, f in enumerate(plan.encode) if i % world == rank}
            gathered: List[Dict] = [None] * world
            dist.all_gather_object(gathered, mine)
            probes = {i: p for part in gathered for i, p in part.items()}
            todo = parts.missing(probes) if rank == 0 else None
            shared = [todo]
            dist.broadcast_object_list(shared, src=0)
            todo = shared[0]
            bounds = shard_by_duration([d for _, _, d in todo], world)[rank]
            share = todo[bounds[0]:bounds[1]]
            counts: List[int] = [0] * world
            dist.all_gather_object(counts, self._encode_share(parts, plan.encode, share))
            stats = dict(windows=counts[rank])
            if rank == 0:
                stats = self._merge(parts, plan, probes, planned[0], sum(counts))
            dist.barrier()
            return stats

    def _probe(self, file: FileStat) -> object:
        """(windows, their durations) of a file, or why it cannot be read."""
        try:
            windows = plan_windows(*self.encoder.reader.probe(file.path), self.settings)
            return len(windows), [w.end - w.start for w in windows]
        except Exception as err:  # noqa: BLE001 - an unreadable file is reported, not fatal
            return f'{type(err).__name__}: {err}'.strip()

    def _encode_share(self, parts: 'PartialWindows', files: Sequence[FileStat],
                      share: Sequence[Tuple[int, int, float]]) -> int:
        """Encode (file, window) pairs of ``share``; write them as partial files every
        ``save_every`` videos and at the end."""
        by_file: Dict[int, List[int]] = {}
        for key, window, _ in share:
            by_file.setdefault(key, []).append(window)
        jobs = [Job(key, files[key], tuple(windows)) for key, windows in by_file.items()]
        done, failed, encoded = [], {}, 0
        for job, windows, feats, error in encode_jobs(jobs, self.encoder, self.settings,
                                                      self.batch_size, self.workers,
                                                      self.progress):
            if error is not None:
                failed[job.key] = error
            else:
                done.append((job.key, windows, feats))
                encoded += len(windows)
            if len(done) + len(failed) >= self.save_every:
                parts.write(done, failed)
                done, failed = [], {}
        if done or failed:
            parts.write(done, failed)
        return encoded

    def _merge(self, parts: 'PartialWindows', plan, probes, planned, encoded) -> Dict[str, int]:
        index, _ = self.open_index()
        index.keep_files(plan.keep)
        index.failed = {}
        windows, failed = parts.read()
        stats = dict(found=planned['found'], encoded=0, windows=encoded,
                     unchanged=plan.unchanged, changed=len(plan.changed),
                     removed=len(plan.removed), skipped=planned['skipped'])
        for key, file in enumerate(plan.encode):
            probe = probes[key]
            error = probe if isinstance(probe, str) else failed.get(key)
            if error is None and set(windows.get(key, {})) != set(range(probe[0])):
                error = 'windows missing after every rank finished (run again to complete)'
            if error is not None:
                index.failed[file.path] = error
                print(f'skipped unreadable video {file.path}: {error}', file=sys.stderr)
                continue
            rows = [windows[key][w] for w in range(probe[0])]
            index.add([file], np.stack([r[2] for r in rows]), [(r[0], r[1]) for r in rows],
                      [len(rows)])
            stats['encoded'] += 1
        self.finish(index)
        parts.remove()
        return dict(stats, failed=len(index.failed), indexed=index.num_files, rows=len(index))


class PartialWindows:
    """Windows encoded by the ranks of one update, in files of the index folder.

    Folder ``partial-<plan>/`` where ``<plan>`` hashes the model's fingerprint, the window
    settings and the files to encode (path, size, mtime), so a later run of the same update
    finds them and a changed one ignores them. Each file ``<rank>-<uuid>.npz`` (written
    atomically) holds ``key``, ``window`` (int64), ``start``, ``end`` (float64),
    ``embeddings`` (float32) and ``failed`` (unicode (n, 2): key, error); read with
    ``allow_pickle=False`` and checked like the index itself.
    """

    def __init__(self, index_dir: str, model: Dict, settings: WindowSettings,
                 files: Sequence[FileStat]) -> None:
        digest = hashlib.sha256(json.dumps(dict(
            model=model.get('fingerprint'), windows=settings.to_dict(),
            files=[f.to_dict() for f in files]), sort_keys=True).encode()).hexdigest()[:16]
        self.index_dir = index_dir
        self.folder = os.path.join(index_dir, f'partial-{digest}')
        self.files = list(files)

    def write(self, done: Sequence, failed: Dict[int, str]) -> None:
        keys = [key for key, windows, _ in done for _ in windows]
        numbers = [i for _, windows, _ in done for i, _ in windows]
        spans = [(w.start, w.end) for _, windows, _ in done for _, w in windows]
        feats = [f for _, _, feats in done for f in feats]
        arrays = dict(key=np.asarray(keys, np.int64), window=np.asarray(numbers, np.int64),
                      start=np.asarray([s for s, _ in spans], np.float64).reshape(-1),
                      end=np.asarray([e for _, e in spans], np.float64).reshape(-1),
                      embeddings=np.asarray(feats, np.float32).reshape(len(keys), -1),
                      failed=np.asarray([[str(k), e] for k, e in failed.items()], str
                                        ).reshape(-1, 2))
        os.makedirs(self.folder, exist_ok=True)
        rank = int(os.environ.get('RANK', 0))
        path = os.path.join(self.folder, f'{rank}-{uuid.uuid4().hex[:12]}.npz')

        def save(tmp: str) -> None:
            with open(tmp, 'wb') as f:
                np.savez(f, **arrays)
        atomic_write(path, save)

    def _entries(self) -> List[str]:
        if not os.path.isdir(self.folder):
            return []
        _refuse_links_out(self.folder)
        return sorted(os.path.join(self.folder, n) for n in os.listdir(self.folder)
                      if n.endswith('.npz') and not n.startswith('.'))

    def read(self) -> Tuple[Dict[int, Dict[int, tuple]], Dict[int, str]]:
        """key -> window -> (start, end, embedding), and key -> error."""
        windows: Dict[int, Dict[int, tuple]] = {}
        failed: Dict[int, str] = {}
        for path in self._entries():
            _refuse_links_out(path)
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in
                              ('key', 'window', 'start', 'end', 'embeddings', 'failed')}
            except (OSError, ValueError, KeyError, EOFError) as err:
                raise ValueError(f'{path}: not a readable partial index ({err}); delete it '
                                 'and run again') from None
            n = len(arrays['key'])
            shapes_ok = all(arrays[name].shape == (n,) for name in ('window', 'start', 'end'))
            if not shapes_ok or arrays['embeddings'].ndim != 2 or \
                    arrays['embeddings'].shape[0] != n or arrays['embeddings'].dtype != \
                    np.float32 or (n and not (0 <= arrays['key'].min() and
                                              arrays['key'].max() < len(self.files))):
                raise ValueError(f'{path}: arrays of the wrong shape, type or range for this '
                                 'update; delete it and run again')
            for key, window, start, end, feat in zip(arrays['key'], arrays['window'],
                                                     arrays['start'], arrays['end'],
                                                     arrays['embeddings']):
                windows.setdefault(int(key), {})[int(window)] = (float(start), float(end), feat)
            for key, error in arrays['failed']:
                failed[int(key)] = str(error)
        return windows, failed

    def missing(self, probes: Dict[int, object]) -> List[Tuple[int, int, float]]:
        """(key, window, seconds) of every window of the readable files that no partial
        file holds, in file and time order."""
        windows, failed = self.read()
        todo = []
        for key in sorted(probes):
            probe = probes[key]
            if isinstance(probe, str) or key in failed:
                continue
            count, durations = probe
            have = windows.get(key, {})
            todo += [(key, w, durations[w]) for w in range(count) if w not in have]
        return todo

    def remove(self) -> None:
        if os.path.isdir(self.folder):
            shutil.rmtree(self.folder)


def _refuse_links_out(path: str) -> None:
    if os.path.islink(path):
        raise ValueError(f'{path}: a link in the index folder; refusing to read it')


# -- query --------------------------------------------------------------------------------
def load_index_model(index: VideoIndex, config: Optional[str] = None,
                     checkpoint: Optional[str] = None, device: str = 'cpu') -> LoadedRetriever:
    """The model an index was built with (or the given one), checked by fingerprint.

    The index records its resolved config as data; a config *file* is read only when the
    user names one with ``config`` (configs are Python: an index folder handed over by
    someone else must not run code).
    """
    info = index.model
    manifest = os.path.join(index.directory, MANIFEST)
    if config is not None:
        options = checked_file_config(info.get('cfg_options') or None, manifest,
                                      'model.cfg_options', flat=True)
        source = config
    elif isinstance(info.get('resolved_config'), dict):
        source = Config(checked_file_config(info['resolved_config'], manifest,
                                            'model.resolved_config'))
        options = None
    else:
        raise ValueError(f'the index in {index.directory!r} records no resolved config (it was '
                         'built by an older version): pass --config with the config it was '
                         'built with, or rebuild it with `tools/search.py index --rebuild`')
    loaded = init_retriever(source, checkpoint or info.get('checkpoint'), device=device,
                            cfg_options=options)
    index.check_model(describe(loaded))
    return loaded


def query_index(index_dir: str, text: str, top_k: int = 10, config: Optional[str] = None,
                checkpoint: Optional[str] = None, device: str = 'cpu',
                onnx: Optional[str] = None, per_video: int = 1, exact: bool = True,
                nprobe: Optional[int] = None) -> List[Moment]:
    """The ``top_k`` moments of the index best matching ``text``, best first.

    Overlapping windows of a video count as one moment (the best of them); ``per_video``
    moments of one video at most. The text is encoded by the index's model in PyTorch, or
    by the ONNX export in ``onnx`` (which needs neither torch nor mmengine; its fingerprint
    must be the index's). Exact by default: one query per run, and building an index's IVF
    at load costs more than one exact pass; ``exact=False`` uses it, as the service does.
    """
    if is_empty_query(text):
        raise ValueError('the query is empty (only spaces, control or zero-width characters): '
                         'say what to look for')
    if top_k < 1:
        raise ValueError(f'--top-k must be >= 1, got {top_k}')
    if per_video < 1:
        raise ValueError(f'--per-video must be >= 1, got {per_video}')
    index = VideoIndex.load(index_dir)
    if onnx is not None:
        retriever = OnnxRetriever(onnx, load_video=False)
        index.check_model(retriever.description())
        index.check_dim(retriever.dim, f'the export {onnx!r}')
        query = retriever.encode_texts([text])[0]
    else:
        loaded = load_index_model(index, config, checkpoint, device)
        query = encode_texts(loaded, [text])[0].float().cpu().numpy()
    return index.search(query, top_k, per_video=per_video, exact=exact, nprobe=nprobe)


def clock(seconds: Optional[float]) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` past an hour); ``end`` for an unknown end."""
    if seconds is None:
        return 'end'
    minutes, rest = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f'{hours}:{minutes:02d}:{rest:04.1f}' if hours else f'{minutes}:{rest:04.1f}')


def sample_frames(path: str, count: int, height: int, start: Optional[float] = None,
                  end: Optional[float] = None) -> Tuple[np.ndarray, List[float]]:
    """``count`` frames spread over ``[start, end)`` seconds of the video (all of it by
    default), side by side, ``height`` pixels high, and their times in seconds.

    ``path`` comes from the index: anything but a regular file (a FIFO would block the
    decoder forever) is refused without being opened.
    """
    import cv2
    import decord
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f'{path} is not a regular file')
    reader = decord.VideoReader(path)
    fps = reader.get_avg_fps() or 1.0
    first = int(round((start or 0.0) * fps))
    last = len(reader) - 1 if end is None else int(round(end * fps)) - 1
    first, last = min(max(first, 0), len(reader) - 1), min(max(last, first), len(reader) - 1)
    idx = np.linspace(first, last, count).round().astype(int)
    frames = reader.get_batch(list(idx)).asnumpy()
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    gap = np.full((height, 4, 3), 255, np.uint8)
    tiles = []
    for frame in frames:
        tiles += [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), gap]
    return np.concatenate(tiles[:-1], axis=1), [float(i / fps) for i in idx]


def draw_contact_sheet(hits: Sequence[Moment], text: str, out: str, frames: int = 4,
                       height: int = 96) -> None:
    """One row per moment: frames spread over it with their times, rank, span, score, path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = max(len(hits), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(2 + frames * 1.6, 0.55 + 1.6 * rows), dpi=100,
                             squeeze=False)
    for ax, (rank, hit) in zip(axes[:, 0], enumerate(hits, 1)):
        path = hit.path
        try:
            strip, times = sample_frames(path, frames, height, hit.start, hit.end)
        except Exception as err:  # noqa: BLE001 - an unreadable hit still gets its row
            strip, times = np.full((height, frames * height, 3), 200, np.uint8), []
            path = f'{path} (unreadable now: {type(err).__name__})'
        ax.imshow(strip, interpolation='nearest')
        tile = strip.shape[1] / max(len(times), 1)
        for i, t in enumerate(times):  # each frame's time under it
            ax.text((i + 0.5) * tile, strip.shape[0] + 2, clock(t), ha='center', va='top',
                    fontsize=6)
        ax.set_title(f'{rank}. {hit.score:.3f}  {clock(hit.start)}-{clock(hit.end)}  {path}',
                     fontsize=7, loc='left')
        ax.axis('off')
    if not hits:
        axes[0, 0].axis('off')
        axes[0, 0].text(0.5, 0.5, 'no videos in the index', ha='center')
    fig.suptitle(f'"{text}"  (cosine similarity)', fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# -- command line -------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be a positive number of seconds, got {text}')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    index = sub.add_parser('index', help='encode the videos of a folder (incremental)')
    index.add_argument('video_dir', help='folder searched recursively for '
                       'mp4/avi/mkv/mov/webm files')
    model = index.add_mutually_exclusive_group(required=True)
    model.add_argument('--config', help='model config (PyTorch backend)')
    model.add_argument('--onnx', help='ONNX export folder (tools/deployment/export_onnx.py) to '
                       'encode with in ONNX Runtime instead')
    index.add_argument('--checkpoint', help='trained checkpoint (whole or adapter-only); '
                       'default: the configured CLIP weights')
    index.add_argument('--index', required=True, help='index folder')
    index.add_argument('--window', type=_seconds, help='seconds per window (default: the '
                       "model's clip, 12 frames at 1 fps = 12 s; an existing index keeps its own)")
    index.add_argument('--stride', type=_seconds, help='seconds between window starts '
                       '(default: half a window)')
    index.add_argument('--batch-size', type=_positive, default=8, help='windows per forward pass')
    index.add_argument('--workers', type=int, default=2, help='decoding processes')
    index.add_argument('--save-every', type=_positive, default=100,
                       help='save progress after this many videos (resumable)')
    index.add_argument('--rebuild', action='store_true',
                       help='re-encode everything, e.g. after changing the model or windows')
    index.add_argument('--ann-min-rows', type=int, default=ANN_MIN_ROWS,
                       help='rows from which the index gets approximate search (IVF)')
    index.add_argument('--rebuild-ann', action='store_true',
                       help='retrain the approximate-search lists on the current rows')
    index.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    index.add_argument('--cfg-options', nargs='+', action=DictAction,
                       help='override config entries (recorded in the index)')
    index.add_argument('--no-progress', action='store_true', help='no progress bar')
    index.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                       help='share the work among the processes of this launcher '
                       '(tools/dist_index.sh, tools/slurm_index.sh)')
    index.add_argument('--local-rank', '--local_rank', type=int, default=0,
                       help=argparse.SUPPRESS)

    query = sub.add_parser('query', help='rank the indexed moments for a text')
    query.add_argument('index', help='index folder')
    query.add_argument('text', help='what to look for')
    query.add_argument('--top-k', type=_positive, default=10, help='number of moments (>= 1)')
    query.add_argument('--per-video', type=_positive, default=1,
                       help='moments of one video at most (they never overlap)')
    query.add_argument('--json', action='store_true', help='print JSON')
    query.add_argument('--sheet', help='save a contact sheet of the moments (PNG)')
    query.add_argument('--sheet-frames', type=int, default=4, help='frames per moment on the '
                       'sheet')
    query.add_argument('--ann', action='store_true',
                       help='use the index\'s approximate search (IVF), as the service does; '
                       'one query is faster exact, since the IVF is built at load')
    query.add_argument('--nprobe', type=_positive,
                       help='IVF lists scanned per query (default: the calibrated one)')
    query.add_argument('--config', help='config to use instead of the recorded one')
    query.add_argument('--checkpoint', help='checkpoint to use instead of the recorded one')
    query.add_argument('--device', default='cpu')
    query.add_argument('--onnx', help='encode the query with this ONNX export (no torch '
                       'model is built)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_console()  # mmengine's file-backend notices, logged when a video is opened
    if args.command == 'index':
        stats = build_index(args.video_dir, args.index, args.config, args.checkpoint,
                            args.cfg_options, args.batch_size, args.workers, args.save_every,
                            args.rebuild, args.device, progress=not args.no_progress,
                            onnx=args.onnx, window=args.window, stride=args.stride,
                            ann_min_rows=args.ann_min_rows, rebuild_ann=args.rebuild_ann,
                            launcher=args.launcher)
        if 'indexed' in stats:  # the rank that wrote the index
            print(f'index {args.index}: {stats["indexed"]} videos; {stats["encoded"]} encoded, '
                  f'{stats["unchanged"]} unchanged, {stats["changed"]} changed, '
                  f'{stats["removed"]} removed, {stats["failed"]} unreadable, '
                  f'{stats["skipped"]} skipped (not regular files)'
                  + (' (listed above)' if stats['failed'] or stats['skipped'] else '')
                  + f'; {stats["rows"]} windows, {stats["windows"]} encoded now')
        return stats
    hits = query_index(args.index, args.text, args.top_k, args.config, args.checkpoint,
                       args.device, onnx=args.onnx, per_video=args.per_video,
                       exact=not args.ann, nprobe=args.nprobe)
    if args.json:
        print(json.dumps(dict(query=args.text, index=os.path.abspath(args.index),
                              results=[dict(rank=r, **hit.to_dict())
                                       for r, hit in enumerate(hits, 1)]), indent=1))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f'{rank:3d}  {hit.score:.4f}  {clock(hit.start):>9}-{clock(hit.end):<9}  '
                  f'{hit.path}')
    if args.sheet:
        draw_contact_sheet(hits, args.text, args.sheet, args.sheet_frames)
        if not args.json:
            print(f'contact sheet: {args.sheet}')
    return hits


if __name__ == '__main__':
    with ignore_known_warnings():
        try:
            main()
        except NoVideosError as err:
            print(err, file=sys.stderr)
            sys.exit(2)
        except (IndexModelMismatch, IndexBusyError, FileNotFoundError, NotADirectoryError,
                ExportFormatError, ValueError, OSError) as err:
            sys.exit(f'error: {err}')
