"""Measure data loading per storage (raw videos, compressed videos, frame cache) against the
encoder it feeds.

Without ``--videos`` it generates an MSR-VTT-like set (H.264, 320x240, 30 fps, 10-30 s of
a drifting smooth texture with moving shapes), then prepares the compressed copy
(``tools/data/compress_videos.py``) and the frame cache (``tools/data/cache_frames.py``) in
``--work-dir`` and reports, for each storage:

- videos/s of the config's train and test pipelines in one process (one core), with the
  time split into decoding (or reading the cache), RandAugment and resizing; the storages
  are timed interleaved, video by video, over two rounds;
- videos/s of a DataLoader with ``--workers`` processes over the training pipeline;
- the pixel difference of its test clips to the raw pipeline's (mean / max grey levels)
  and the cosine of the video features through a random TempMe encoder;
- bytes per video on disk (for the cache: the training cache, frames as decoded; the
  evaluation cache holds the final clips, 12 x 224 x 224 x 3 bytes = 1.8 MB per video);
- what the config's RandAugment costs per clip on the raw clips, and each of its
  operations on its own (where the time goes);

and next to them the encoder's own videos/s (plain CLIP and TempMe, inference, this
device), so the table says which side bounds a run and how many loader cores one
accelerator needs. Writes Markdown (stdout), JSON (``--out``) and a PNG chart.

Example::

    python tools/analysis/benchmark_data.py --out work_dirs/data_bench/results.json
"""
from __future__ import annotations  # type hints name torch types without importing torch

import argparse
import copy
import json
import os
import os.path as osp
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

# torch, mmaction2 and the plugin are imported where used (after the arguments are parsed)
if TYPE_CHECKING:
    import torch
    from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

STORAGES = ('raw', 'compressed', 'cache')
#: Pipeline steps timed as decoding (or reading the cache), augmentation and resizing.
STAGES = {'DecordInit': 'decode', 'FpsGridSample': 'decode', 'DecordDecode': 'decode',
          'LoadCachedFrames': 'decode', 'ClipRandAugment': 'augment',
          'PILResizeCenterCrop': 'resize'}


# -- the generated set -------------------------------------------------------------------
def generate_videos(folder: str, count: int, seed: int = 0, width: int = 320,
                    height: int = 240, fps: int = 30) -> List[str]:
    """``count`` H.264 clips of 10-30 s: a drifting smooth texture with moving shapes.

    The texture is smooth noise (random values on a 4-pixel grid, upsampled), so the files
    have the bitrate of camera footage (about 0.25 Mbit/s, the order of MSR-VTT's 320x240
    files) rather than that of pixel noise.
    """
    import av
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = []
    for i in range(count):
        name = f'video{i}.mp4'
        names.append(name)
        path = osp.join(folder, name)
        if osp.isfile(path):
            continue
        seconds = int(rng.integers(10, 31))
        coarse = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
        texture = cv2.resize(coarse, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
        colours = rng.integers(0, 256, (3, 3))
        tmp = path + '.tmp.mp4'
        with av.open(tmp, 'w') as container:
            stream = container.add_stream('libx264', rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
            stream.options = {'preset': 'veryfast', 'crf': '23'}
            for k in range(seconds * fps):
                dx, dy = k % width, (k // 2) % height
                frame = texture[dy:dy + height, dx:dx + width].copy()
                for j, colour in enumerate(colours):
                    x = int((width - 40) * (0.5 + 0.5 * np.sin(k / (20 + 7 * j) + i + j)))
                    y = int((height - 40) * (0.5 + 0.5 * np.cos(k / (31 + 5 * j) + i)))
                    cv2.circle(frame, (x + 20, y + 20), 18, tuple(int(c) for c in colour), -1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    return names


# -- configs per storage ------------------------------------------------------------------
def storage_datasets(cfg: Config, storage: str, folders: Dict[str, str], ann_file: str,
                     cache_root: str) -> Dict[str, dict]:
    """``{split: dataset config}`` of the config's pipelines on one storage."""
    out = {}
    for split in ('train', 'test'):
        dataset = copy.deepcopy(cfg[f'{split}_dataloader'].dataset.to_dict())
        pipeline = dataset['pipeline']
        if storage == 'cache':
            # training: frames as decoded; evaluation: the final clips (configs/*_cached.py)
            rule = cache_rule_of(cfg, split)
            load = dict(type='LoadCachedFrames', cache_root=osp.join(cache_root, split),
                        **rule)
            pipeline = [load] + [s for s in pipeline if s['type'] not in (
                'DecordInit', 'FpsGridSample', 'DecordDecode')]
        folder = folders[storage]
        dataset.update(data_root='', ann_file=ann_file, data_prefix=dict(video=folder),
                       pipeline=pipeline, test_mode=split == 'test', check_videos=False)
        out[split] = dataset
    return out


def cache_rule_of(cfg: Config, split: str) -> dict:
    """The frame cache a split of the config would use (see configs/*_cached.py)."""
    from mmaction.registry import TRANSFORMS

    from projects.tempme.datasets.frame_cache import cache_rule
    pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
    sampler = next(s for s in pipeline if s['type'] == 'FpsGridSample')
    resize = [TRANSFORMS.build(s) for s in pipeline if s['type'] == 'PILResizeCenterCrop']
    if split == 'test' and resize:
        return cache_rule(sampler['clip_len'], sampler['frame_rate'], resize[0].size,
                          resize[0].interpolation)
    return cache_rule(sampler['clip_len'], sampler['frame_rate'])


# -- measurements -------------------------------------------------------------------------
def time_pipelines(dataset_cfgs: Dict[str, dict], rounds: int = 2) -> Dict[str, dict]:
    """One process per storage's pipeline, interleaved video by video (raw, compressed,
    cache, raw, ...) so that a machine whose speed drifts affects every storage alike, each
    storage seeded alike per video (the same RandAugment draws: operations cost 4 to 56 ms):
    videos/s, time per stage, and the clips of the last round. Also videos per CPU-second
    (the process's threads, decord's decoder included): other work on a shared machine
    slows the wall clock, and decord's seeks (a hand-over to its decoder thread each) more
    than the rest."""
    from mmaction.registry import DATASETS
    datasets = {}
    for storage, cfg in dataset_cfgs.items():
        datasets[storage] = DATASETS.build(dict(cfg, lazy_init=True))
        datasets[storage].full_init()
    stages = {s: dict(decode=0.0, augment=0.0, resize=0.0, other=0.0) for s in datasets}
    elapsed, cpu = dict.fromkeys(datasets, 0.0), dict.fromkeys(datasets, 0.0)
    clips: Dict[str, dict] = {s: {} for s in datasets}
    count = len(next(iter(datasets.values())))
    for r in range(rounds):
        for idx in range(count):
            for storage, dataset in datasets.items():
                random.seed(r * count + idx)
                np.random.seed(r * count + idx)
                results = copy.deepcopy(dataset.get_data_info(idx))
                start, cpu_start = time.perf_counter(), time.process_time()
                for transform in dataset.pipeline.transforms:
                    t0 = time.perf_counter()
                    results = transform(results)
                    stages[storage][STAGES.get(type(transform).__name__, 'other')] += \
                        time.perf_counter() - t0
                elapsed[storage] += time.perf_counter() - start
                cpu[storage] += time.process_time() - cpu_start
                clips[storage][dataset.videos[results['data_samples'].video_index]] = \
                    results['inputs']['video']
    n = rounds * count
    return {s: dict(videos_per_s=n / elapsed[s], videos_per_cpu_s=n / cpu[s],
                    ms_per_video={k: 1000 * v / n for k, v in stages[s].items()},
                    clips=clips[s]) for s in datasets}


def augment_costs(cfg: Config, clips: Sequence[Sequence[np.ndarray]],
                  per_op_clips: int = 8) -> dict:
    """ms per clip of the config's RandAugment (draws seeded per clip) and of each of its
    operations alone at its mean magnitude, which says where the time goes; ``clips``: the
    training frames as decoded."""
    from mmaction.registry import TRANSFORMS
    pipeline = cfg.train_dataloader.dataset.pipeline
    augment = TRANSFORMS.build(next(s for s in pipeline if s['type'] == 'ClipRandAugment'))
    start = time.perf_counter()
    for i, frames in enumerate(clips):
        random.seed(i)
        np.random.seed(i)
        augment(dict(imgs=list(frames)))
    whole = 1000 * (time.perf_counter() - start) / len(clips)
    per_op = {}
    for op in augment.policy.ops:
        args = op.level_fn(op.magnitude, op.hparams) if op.level_fn else ()
        start = time.perf_counter()
        for frames in clips[:per_op_clips]:
            for frame in frames:
                np.asarray(op.aug_fn(Image.fromarray(frame), *args, **op.kwargs).convert('RGB'))
        per_op[op.name] = 1000 * (time.perf_counter() - start) / len(clips[:per_op_clips])
    return dict(ms_per_clip=whole, ms_per_clip_by_op=per_op,
                frame_shape=list(clips[0][0].shape))


def loader_videos_per_s(dataset_cfg: dict, workers: int, batch_size: int = 8) -> float:
    """videos/s of a DataLoader over the training pipeline (after its workers started)."""
    import torch
    from mmaction.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    dataset = DATASETS.build(dataset_cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=pseudo_collate, shuffle=False,
                                         persistent_workers=workers > 0)
    iterator = iter(loader)
    next(iterator)  # workers started, first batch out
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += len(batch['inputs'])
    for batch in loader:  # a second pass, with the workers warm
        count += len(batch['inputs'])
    return count / (time.perf_counter() - start)


def build_encoders(cfg: Config, device: torch.device) -> Dict[str, torch.nn.Module]:
    """Random-weight TempMe and plain-CLIP retrievers of the config's geometry."""
    import torch
    from mmaction.registry import MODELS

    from projects.tempme.console import random_weights_expected
    models = {}
    for name, overrides in (('plain', dict(merge_layers=(), clips_per_merge=(), imgme_r=0,
                                           temporal_embedding=False)), ('tempme', {})):
        model_cfg = copy.deepcopy(cfg.model.to_dict())
        model_cfg['clip']['weights'] = None
        model_cfg['video_encoder'].update(overrides)
        model_cfg['lora'] = None
        model_cfg['train_mode'] = 'full'
        torch.manual_seed(0)
        with random_weights_expected():
            models[name] = MODELS.build(model_cfg).to(device).eval()
    return models


def video_features(model: torch.nn.Module, clips: Sequence[torch.Tensor],
                   device: torch.device) -> torch.Tensor:
    import torch
    preprocessor = model.data_preprocessor
    feats = []
    with torch.no_grad():
        for clip in clips:
            data = preprocessor(dict(inputs=dict(video=[clip.to(device)],
                                                 text=[torch.zeros(0, 1, dtype=torch.long)])))
            feats.append(torch.nn.functional.normalize(
                model.encode_video(data['inputs']['video']), dim=-1))
    return torch.cat(feats)


def encoder_videos_per_s(model: torch.nn.Module, clip: torch.Tensor, device: torch.device,
                         batch: int, rounds: int) -> float:
    import torch
    with torch.no_grad():
        return _encoder_videos_per_s(model, clip, device, batch, rounds)


def _encoder_videos_per_s(model: torch.nn.Module, clip: torch.Tensor, device: torch.device,
                          batch: int, rounds: int) -> float:
    import torch
    video = model.data_preprocessor(dict(inputs=dict(
        video=[clip.to(device)] * batch, text=[torch.zeros(0, 1, dtype=torch.long)] * batch))
    )['inputs']['video']
    model.encode_video(video)  # warm-up
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        model.encode_video(video)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return rounds * batch / (time.perf_counter() - start)


def folder_bytes(folder: str, names: Sequence[str], suffix: str = '') -> float:
    sizes = [osp.getsize(osp.join(folder, n + suffix)) for n in names
             if osp.isfile(osp.join(folder, n + suffix))]
    return float(np.mean(sizes)) if sizes else float('nan')


# -- report -------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    raw = report['storages']['raw']
    lines = [
        f'device: {report["device"]}; {report["num_videos"]} videos; encoder batch '
        f'{report["encoder_batch"]}; DataLoader with {report["workers"]} workers',
        '',
        '| storage | train videos/s/core | (x raw) | ms decode / augment / resize | test '
        'videos/s/core | (x raw) | loader videos/s | mean / max pixel diff | feature cosine '
        '| KB per video |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, s in report['storages'].items():
        ms = s['train_ms_per_video']
        lines.append(
            f'| {name} | {s["videos_per_s_core_train"]:.1f} | '
            f'{s["videos_per_s_core_train"] / raw["videos_per_s_core_train"]:.1f}x | '
            f'{ms["decode"]:.1f} / {ms["augment"]:.1f} / {ms["resize"]:.1f} | '
            f'{s["videos_per_s_core_test"]:.1f} | '
            f'{s["videos_per_s_core_test"] / raw["videos_per_s_core_test"]:.1f}x | '
            f'{s["videos_per_s_loader"]:.1f} | {s["pixel_mean_diff"]:.2f} / '
            f'{s["pixel_max_diff"]} | {s["feature_cosine_min"]:.4f} | '
            f'{s["bytes_per_video"] / 1024:.0f} |')
    storages = report['storages']
    lines += ['', 'per CPU-second of the process instead of the wall clock (train / test, x raw): '
              + ', '.join(f'{name} {st["videos_per_cpu_s_train"]:.1f} '
                          f'({st["videos_per_cpu_s_train"] / raw["videos_per_cpu_s_train"]:.1f}x)'
                          f' / {st["videos_per_cpu_s_test"]:.1f} '
                          f'({st["videos_per_cpu_s_test"] / raw["videos_per_cpu_s_test"]:.1f}x)'
                          for name, st in storages.items())]
    aug = report['augment']
    ms = aug['ms_per_clip']
    ops = sorted(aug['ms_per_clip_by_op'].items(), key=lambda kv: -kv[1])
    lines += ['', f'RandAugment on the raw clips ({"x".join(map(str, aug["frame_shape"]))} '
              f'frames, ms per clip): {ms:.1f}; each operation when drawn: '
              + ', '.join(f'{k} {v:.0f}' for k, v in ops)]
    enc = report['encoder_videos_per_s']
    lines += ['', f'encoder (inference, {report["device"]}): plain CLIP {enc["plain"]:.1f} '
              f'videos/s, TempMe {enc["tempme"]:.1f} videos/s', '',
              'loader cores one encoder needs (TempMe inference / test pipeline videos/s per '
              'core): ' + ', '.join(
                  f'{name} {enc["tempme"] / s["videos_per_s_core_test"]:.2f}'
                  for name, s in report['storages'].items())]
    return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(report['storages'])
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, 'videos_per_s_core_train', 'train pipeline, one core'),
                               (0.2, 'videos_per_s_core_test', 'test pipeline, one core')):
        values = [report['storages'][n][key] for n in names]
        bars = ax.bar(x + offset, values, 0.4, label=label)
        ax.bar_label(bars, labels=[f'{v:.1f}' if v < 100 else f'{v:.0f}' for v in values],
                     fontsize=7)
    enc = report['encoder_videos_per_s']
    device = report['device'].split(':')[0]
    where = 'all CPU cores' if device == 'cpu' else f'one {device} device'
    for value, style, label in ((enc['tempme'], '--', 'TempMe encoder'),
                                (enc['plain'], ':', 'plain CLIP encoder')):
        ax.axhline(value, color='k', linestyle=style, linewidth=1,
                   label=f'{label}, {where}, batch {report.get("encoder_batch", "?")}')
    ax.set_xticks(x, names)
    ax.set_yscale('log')
    ax.set_ylim(top=3 * max(max(report['storages'][n][k] for n in names)
                            for k in ('videos_per_s_core_train', 'videos_per_s_core_test')))
    ax.set_ylabel('videos per second (log scale)')
    ax.set_title('How fast one core prepares videos from each storage, next to the encoder '
                 'they feed', fontsize=9)
    ax.legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    import torch
    from mmaction.registry import TRANSFORMS
    from mmengine.config import Config

    import projects.tempme  # noqa: F401  (compatibility fixes + registration)
    from projects.tempme.datasets.frame_cache import update_cache
    torch.set_num_threads(1)  # "per core": the pipelines are single-threaded
    work = args.work_dir
    cfg = Config.fromfile(args.config)
    folders = dict(raw=args.videos or osp.join(work, 'raw'),
                   compressed=osp.join(work, 'compressed'), cache=None)
    if args.videos:
        names = sorted(n for n in os.listdir(args.videos) if n.lower().endswith('.mp4'))
        names = names[:args.num_videos] if args.num_videos else names
    else:
        print(f'generating {args.num_videos} videos in {folders["raw"]}', file=sys.stderr)
        names = generate_videos(folders['raw'], args.num_videos, args.seed)
    ann_file = osp.join(work, 'annotation.json')
    os.makedirs(work, exist_ok=True)
    Path(ann_file).write_text(json.dumps({n: [f'a video {i}'] for i, n in enumerate(names)}))
    subprocess.run([sys.executable, osp.join(ROOT, 'tools/data/compress_videos.py'),
                    folders['raw'], folders['compressed'], '--fps', str(args.fps),
                    '--workers', str(args.prepare_workers), '--no-progress'], check=True)
    folders['cache'] = folders['raw']  # the cache holds the raw videos' reference frames
    cache_root = osp.join(work, 'cache')
    datasets = {s: storage_datasets(cfg, s, folders, ann_file, cache_root) for s in STORAGES}
    for split in ('train', 'test'):
        update_cache(osp.join(cache_root, split),
                     [(n, osp.join(folders['raw'], n)) for n in names],
                     cache_rule_of(cfg, split), args.prepare_workers, progress=False)

    report = dict(device=str(args.device), num_videos=len(names), workers=args.workers,
                  encoder_batch=args.encoder_batch, config=args.config, storages={})
    clips = {}
    timed = {}
    for split in ('train', 'test'):
        print(f'timing the {split} pipelines, storages interleaved', file=sys.stderr)
        timed[split] = time_pipelines({s: datasets[s][split] for s in STORAGES})
    for storage in STORAGES:
        train, test = timed['train'][storage], timed['test'][storage]
        clips[storage] = test['clips']
        print(f'[{storage}] DataLoader with {args.workers} workers', file=sys.stderr)
        loader = loader_videos_per_s(datasets[storage]['train'], args.workers)
        bytes_per_video = (folder_bytes(osp.join(cache_root, 'train'), names, '.npy')
                           if storage == 'cache' else folder_bytes(folders[storage], names))
        report['storages'][storage] = dict(
            videos_per_s_core_train=train['videos_per_s'],
            videos_per_s_core_test=test['videos_per_s'],
            videos_per_cpu_s_train=train['videos_per_cpu_s'],
            videos_per_cpu_s_test=test['videos_per_cpu_s'],
            train_ms_per_video=train['ms_per_video'], test_ms_per_video=test['ms_per_video'],
            videos_per_s_loader=loader, bytes_per_video=bytes_per_video)

    print('timing RandAugment per path and per operation', file=sys.stderr)
    train_cache = TRANSFORMS.build(datasets['cache']['train']['pipeline'][0])
    report['augment'] = augment_costs(cfg, [
        train_cache(dict(filename=osp.join(folders['raw'], n), video=n))['imgs'] for n in names])

    device = torch.device(args.device)
    torch.set_num_threads(args.encoder_threads or os.cpu_count() or 1)
    models = build_encoders(cfg, device)
    raw_clips = [clips['raw'][n] for n in names]
    raw_feats = video_features(models['tempme'], raw_clips, device)
    for storage in STORAGES:
        diffs = [(clips[storage][n].int() - clips['raw'][n].int()).abs() for n in names]
        feats = raw_feats if storage == 'raw' else video_features(
            models['tempme'], [clips[storage][n] for n in names], device)
        cosine = (feats * raw_feats).sum(-1)
        report['storages'][storage].update(
            pixel_mean_diff=float(torch.stack([d.float().mean() for d in diffs]).mean()),
            pixel_max_diff=int(max(int(d.max()) for d in diffs)),
            feature_cosine_mean=float(cosine.mean()), feature_cosine_min=float(cosine.min()),
            bit_identical=all(torch.equal(clips[storage][n], clips['raw'][n]) for n in names))
    report['encoder_videos_per_s'] = {
        name: encoder_videos_per_s(model, raw_clips[0], device, args.encoder_batch,
                                   args.encoder_rounds) for name, model in models.items()}
    return report


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--videos', help='folder of .mp4 videos to use instead of generating')
    parser.add_argument('--num-videos', type=int, default=32,
                        help='videos to generate (or to take from --videos)')
    parser.add_argument('--config', default='configs/tempme_msrvtt.py',
                        help='config whose pipelines and model are measured')
    parser.add_argument('--work-dir', default='work_dirs/data_bench',
                        help='where the generated, compressed and cached data go')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='DataLoader workers (default: the config\'s 8, at most the '
                        'CPU count)')
    parser.add_argument('--prepare-workers', type=int, default=os.cpu_count() or 1,
                        help='processes compressing and caching')
    parser.add_argument('--fps', type=float, default=3, help='frame rate of the compressed copy')
    parser.add_argument('--device', default='auto',
                        help='device of the encoder: cpu, cuda, cuda:N or auto (cuda when '
                        'available; default)')
    parser.add_argument('--encoder-batch', type=int, default=8)
    parser.add_argument('--encoder-rounds', type=int, default=3)
    parser.add_argument('--encoder-threads', type=int, help='torch threads for the encoder '
                        '(default: every core)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='JSON results (a PNG chart is written next to it)')
    args = parser.parse_args(argv)
    from projects.tempme_cli import UserError, require_file
    require_file(args.config, 'config file', Path(ROOT))
    if args.videos and not osp.isdir(args.videos):
        raise UserError(f'--videos {args.videos}: no such folder')
    from projects.tempme.known_warnings import ignore_known_warnings
    from projects.tempme.profiling import resolve_device
    from projects.tempme_deploy.fileio import atomic_write
    args.device = str(resolve_device(args.device))  # before the minutes of preparation
    with ignore_known_warnings():
        report = run(args)
    print(markdown(report))
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
        chart = osp.splitext(args.out)[0] + '.png'
        plot(report, chart)
        md = osp.splitext(args.out)[0] + '.md'
        atomic_write(md, lambda tmp: Path(tmp).write_text(markdown(report) + '\n'))
        print(f'results written to {args.out}, {md} and {chart}')
    return report


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    run_tool(main, root=Path(ROOT))
