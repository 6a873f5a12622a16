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
import json
import os
import stat
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from tqdm import tqdm

from projects.tempme.apis.inference import (LoadedRetriever, VideoReader, check_frames, describe,
                                            encode_texts, encode_videos, export_video_reader,
                                            init_retriever)
from projects.tempme.config_checks import check_data_fits_model
from projects.tempme.file_configs import checked_file_config
from projects.tempme.known_warnings import ignore_known_warnings
from projects.tempme_deploy.onnx_retriever import ExportFormatError, OnnxRetriever
from projects.tempme_deploy.search import (FileStat, IndexBusyError, IndexModelMismatch, VideoIndex,
                                           plan_update, scan_videos)
from projects.tempme_deploy.search.store import MANIFEST
from projects.tempme_deploy.tokenizer import is_empty_query


# -- index --------------------------------------------------------------------------------
@dataclass
class IndexEncoder:
    """What an index update needs of a model, with either backend."""

    reader: VideoReader              # file -> uint8 (T, 3, H, W) frames, the test pipeline
    frames_shape: Tuple[int, ...]    # (T, 3, H, W) the model takes
    encode: Callable[[List[torch.Tensor]], np.ndarray]  # frames -> (B, D) embeddings
    model: Dict                      # what the index records (fingerprint decides mixing)


def torch_encoder(config: str, checkpoint: Optional[str], cfg_options: Optional[dict],
                  device: str) -> IndexEncoder:
    loaded = init_retriever(config, checkpoint, device=device, cfg_options=cfg_options)
    check_data_fits_model(loaded.cfg)
    model = dict(describe(loaded), cfg_options=cfg_options or {},
                 resolved_config=frozen_config(loaded.cfg))

    def encode(frames: List[torch.Tensor]) -> np.ndarray:
        feats = encode_videos(loaded, [f.to(device) for f in frames])
        return feats.float().cpu().numpy()

    return IndexEncoder(VideoReader(loaded.cfg), loaded.encoder.input_shape, encode, model)


def onnx_encoder(export_dir: str) -> IndexEncoder:
    """The video graph of an ONNX export; frames are read with the pipeline it records."""
    retriever = OnnxRetriever(export_dir)
    info = retriever.info
    reader = export_video_reader(info, export_dir)
    model = dict(retriever.description(), cfg_options={},
                 weights=f'ONNX export {os.path.abspath(export_dir)} ({retriever.precision}) '
                 f'of {info["model"]["weights"]}', resolved_config=info['resolved_config'])

    def encode(frames: List[torch.Tensor]) -> np.ndarray:
        return retriever.encode_videos(torch.stack(frames).numpy())

    return IndexEncoder(reader, retriever.frames_shape, encode, model)


class _DecodedVideos(torch.utils.data.Dataset):
    """Decode files with the test pipeline; a failure comes back as a message, not a raise."""

    def __init__(self, files: Sequence[FileStat], reader: VideoReader,
                 frames_shape: Tuple[int, ...]) -> None:
        self.files, self.reader, self.frames_shape = list(files), reader, frames_shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tuple[int, Optional[torch.Tensor], Optional[str]]:
        path = self.files[i].path
        try:
            frames = self.reader(path)
        except Exception as err:  # noqa: BLE001 - any decoder error skips this one file
            return i, None, f'{type(err).__name__}: {err}'.strip()
        # a clip the model cannot take is the config's fault, not the file's: raise
        check_frames(self.frames_shape, frames, path)
        return i, frames, None


def build_index(video_dir: str, index_dir: str, config: Optional[str] = None,
                checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                batch_size: int = 8, workers: int = 0, save_every: int = 100,
                rebuild: bool = False, device: str = 'cpu', progress: bool = True,
                onnx: Optional[str] = None) -> Dict[str, int]:
    """Bring the index in ``index_dir`` up to date with the videos under ``video_dir``.

    The model is ``config`` (+ ``checkpoint``) in PyTorch, or the ONNX export in
    ``onnx``; both record the same fingerprint, so their embeddings can be mixed.
    Returns counts: ``found``, ``encoded``, ``unchanged``, ``changed``, ``removed``,
    ``failed`` (unreadable, reported on stderr by path), ``skipped`` (named like videos but
    not regular files: FIFOs, sockets, devices, broken links; never opened, reported on
    stderr by path) and ``indexed``.
    """
    if (config is None) == (onnx is None):
        raise ValueError('give the model either as a config (--config) or as an ONNX export '
                         '(--onnx)')
    # the model first: a config or export that cannot be used leaves the index folder as it was
    encoder = onnx_encoder(onnx) if onnx else torch_encoder(config, checkpoint, cfg_options,
                                                            device)
    with VideoIndex.lock(index_dir):
        skipped: Dict[str, str] = {}
        current = scan_videos(video_dir, skipped=skipped)
        for path, reason in skipped.items():
            print(f'skipped {path}: {reason}', file=sys.stderr)
        stats = _update_index(video_dir, index_dir, current, encoder, batch_size, workers,
                              save_every, rebuild, progress)
        return dict(stats, skipped=len(skipped))


def frozen_config(cfg: Config) -> dict:
    """The resolved config as plain JSON data, so that querying never runs a config file."""
    try:
        return json.loads(json.dumps(cfg.to_dict()))
    except TypeError as err:
        raise ValueError(f'the config holds a value an index cannot record as data: {err}')


def _update_index(video_dir, index_dir, current, encoder: IndexEncoder, batch_size, workers,
                  save_every, rebuild, progress) -> Dict[str, int]:
    model = encoder.model
    root = os.path.abspath(video_dir)
    if VideoIndex.exists(index_dir) and not rebuild:
        index = VideoIndex.load(index_dir)
        index.check_model(model)
        index.model = model
    else:
        index = VideoIndex(index_dir, model)
    is_new = not VideoIndex.exists(index_dir) or rebuild
    index.root = root

    plan = plan_update(index.files, current)
    index.keep_rows(plan.keep)
    index.failed = {}
    stats = dict(found=len(current), encoded=0, unchanged=plan.unchanged,
                 changed=len(plan.changed), removed=len(plan.removed), failed=0)
    loader = torch.utils.data.DataLoader(
        _DecodedVideos(plan.encode, encoder.reader, encoder.frames_shape),
        batch_size=batch_size, num_workers=workers, collate_fn=list)
    since_save = 0
    with tqdm(total=len(plan.encode), unit='video', desc='encoding', disable=not progress,
              file=sys.stderr) as bar:
        for batch in loader:
            good = [(i, frames) for i, frames, error in batch if error is None]
            for i, _, error in batch:
                if error is not None:
                    path = plan.encode[i].path
                    index.failed[path] = error
                    tqdm.write(f'skipped unreadable video {path}: {error}', file=sys.stderr)
            if good:
                feats = np.asarray(encoder.encode([f for _, f in good]), np.float32)
                # a NaN or zero embedding would make the saved index unloadable: leave it out
                norms = np.linalg.norm(feats, axis=1)
                usable = np.isfinite(norms) & (norms > 0)
                for (i, _), ok in zip(good, usable):
                    if not ok:
                        path = plan.encode[i].path
                        index.failed[path] = 'the model gave a non-finite or zero embedding'
                        tqdm.write(f'skipped video {path}: {index.failed[path]}',
                                   file=sys.stderr)
                good = [g for g, ok in zip(good, usable) if ok]
                index.add([plan.encode[i] for i, _ in good], feats[usable])
            stats['encoded'] += len(good)
            stats['failed'] = len(index.failed)
            since_save += len(batch)
            bar.update(len(batch))
            if since_save >= save_every:
                index.save()
                since_save = 0
    if is_new or plan.encode or plan.removed or plan.changed or since_save:
        index.save()
    stats['indexed'] = len(index)
    return stats


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
                onnx: Optional[str] = None) -> List[Tuple[str, float]]:
    """The ``top_k`` videos of the index best matching ``text``: (path, cosine score).

    The text is encoded by the index's model in PyTorch, or by the ONNX export in
    ``onnx`` (which needs neither torch nor mmengine; its fingerprint must be the
    index's).
    """
    if is_empty_query(text):
        raise ValueError('the query is empty (only spaces, control or zero-width characters): '
                         'say what to look for')
    if top_k < 1:
        raise ValueError(f'--top-k must be >= 1, got {top_k}')
    index = VideoIndex.load(index_dir)
    if onnx is not None:
        retriever = OnnxRetriever(onnx, load_video=False)
        index.check_model(retriever.description())
        index.check_dim(retriever.dim, f'the export {onnx!r}')
        return index.search(retriever.encode_texts([text])[0], top_k)
    loaded = load_index_model(index, config, checkpoint, device)
    query = encode_texts(loaded, [text])[0].float().cpu().numpy()
    return index.search(query, top_k)


def sample_frames(path: str, count: int, height: int) -> np.ndarray:
    """``count`` frames spread over the video, side by side, ``height`` pixels high.

    ``path`` comes from the index: anything but a regular file (a FIFO would block the
    decoder forever) is refused without being opened.
    """
    import cv2
    import decord
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f'{path} is not a regular file')
    reader = decord.VideoReader(path)
    idx = np.linspace(0, len(reader) - 1, count).round().astype(int)
    frames = reader.get_batch(list(idx)).asnumpy()
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    gap = np.full((height, 4, 3), 255, np.uint8)
    tiles = []
    for frame in frames:
        tiles += [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), gap]
    return np.concatenate(tiles[:-1], axis=1)


def draw_contact_sheet(hits: Sequence[Tuple[str, float]], text: str, out: str,
                       frames: int = 4, height: int = 96) -> None:
    """One row per hit: a few frames, its rank, score and path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = max(len(hits), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(2 + frames * 1.6, 0.4 + 1.45 * rows), dpi=100,
                             squeeze=False)
    for ax, (rank, (path, score)) in zip(axes[:, 0], enumerate(hits, 1)):
        try:
            strip = sample_frames(path, frames, height)
        except Exception as err:  # noqa: BLE001 - an unreadable hit still gets its row
            strip = np.full((height, frames * height, 3), 200, np.uint8)
            path = f'{path} (unreadable now: {type(err).__name__})'
        ax.imshow(strip, interpolation='nearest')
        ax.set_title(f'{rank}. {score:.3f}  {path}', fontsize=7, loc='left')
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
    index.add_argument('--batch-size', type=_positive, default=8, help='videos per forward pass')
    index.add_argument('--workers', type=int, default=2, help='decoding processes')
    index.add_argument('--save-every', type=int, default=100,
                       help='save progress after this many videos (resumable)')
    index.add_argument('--rebuild', action='store_true',
                       help='re-encode everything, e.g. after changing the model')
    index.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    index.add_argument('--cfg-options', nargs='+', action=DictAction,
                       help='override config entries (recorded in the index)')
    index.add_argument('--no-progress', action='store_true', help='no progress bar')

    query = sub.add_parser('query', help='rank the indexed videos for a text')
    query.add_argument('index', help='index folder')
    query.add_argument('text', help='what to look for')
    query.add_argument('--top-k', type=_positive, default=10, help='number of hits (>= 1)')
    query.add_argument('--json', action='store_true', help='print JSON')
    query.add_argument('--sheet', help='save a contact sheet of the hits (PNG)')
    query.add_argument('--sheet-frames', type=int, default=4, help='frames per hit on the sheet')
    query.add_argument('--config', help='config to use instead of the recorded one')
    query.add_argument('--checkpoint', help='checkpoint to use instead of the recorded one')
    query.add_argument('--device', default='cpu')
    query.add_argument('--onnx', help='encode the query with this ONNX export (no torch '
                       'model is built)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == 'index':
        stats = build_index(args.video_dir, args.index, args.config, args.checkpoint,
                            args.cfg_options, args.batch_size, args.workers, args.save_every,
                            args.rebuild, args.device, progress=not args.no_progress,
                            onnx=args.onnx)
        print(f'index {args.index}: {stats["indexed"]} videos; {stats["encoded"]} encoded, '
              f'{stats["unchanged"]} unchanged, {stats["changed"]} changed, '
              f'{stats["removed"]} removed, {stats["failed"]} unreadable, '
              f'{stats["skipped"]} skipped (not regular files)'
              + (' (listed above)' if stats['failed'] or stats['skipped'] else ''))
        return stats
    hits = query_index(args.index, args.text, args.top_k, args.config, args.checkpoint,
                       args.device, onnx=args.onnx)
    if args.json:
        print(json.dumps(dict(query=args.text, index=os.path.abspath(args.index),
                              results=[dict(rank=r, path=p, score=s)
                                       for r, (p, s) in enumerate(hits, 1)]), indent=1))
    else:
        for rank, (path, score) in enumerate(hits, 1):
            print(f'{rank:3d}  {score:.4f}  {path}')
    if args.sheet:
        draw_contact_sheet(hits, args.text, args.sheet, args.sheet_frames)
        if not args.json:
            print(f'contact sheet: {args.sheet}')
    return hits


if __name__ == '__main__':
    with ignore_known_warnings():
        try:
            main()
        except (IndexModelMismatch, IndexBusyError, FileNotFoundError, NotADirectoryError,
                ExportFormatError, ValueError, OSError) as err:
            sys.exit(f'error: {err}')
