"""Decode each video's reference frames once, into the frame cache a config reads.

The config's pipelines must start with ``LoadCachedFrames`` (for example
``configs/tempme_msrvtt_cached.py``); its ``clip_len``, ``frame_rate``, ``size`` and
``interpolation`` say what to cache (training: frames as decoded; evaluation: clips
resized and cropped already), the dataset's ``data_prefix['frame_cache']`` under
``data_root`` (or the step's own ``cache_root``) where. The videos come from the config's
datasets (annotation, ``data_root``, ``data_prefix``). Resumable: finished videos whose
source file is unchanged are skipped, each ``.npy`` is written to a temporary name and
renamed, and the manifest is saved every ``--save-every`` videos. A cache made for another
frame rule is discarded. A video that cannot be decoded is reported by path and does not
stop the others.

Example::

    python tools/data/cache_frames.py configs/tempme_msrvtt_cached.py --split all --workers 4
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Tuple

from mmaction.registry import TRANSFORMS
from mmengine.config import Config, DictAction

import projects.tempme  # noqa: F401  (registration)
from projects.tempme.console import quiet_console
from projects.tempme.datasets import data_prefix_folder, load_video_captions
from projects.tempme.datasets.frame_cache import (FrameCacheError, LoadCachedFrames,
                                                  cache_entry_path, check_cached_resize,
                                                  update_cache)
from projects.tempme.datasets.video_check import resolve_video_path
from projects.tempme.datasets.video_text_dataset import AnnotationError, check_paths_inside_root
from projects.tempme.known_warnings import ignore_known_warnings

SPLITS = ('train', 'val', 'test')


def cache_jobs(cfg: Config, splits: List[str]) -> Dict[str, Tuple[dict, List[Tuple[str, str]]]]:
    """``{cache folder: (rule, [(video key, source path), ...])}`` for the splits' caches.

    Splits that share a cache folder must ask for the same rule (training caches hold frames
    as decoded, evaluation caches may hold them resized: two folders).
    """
    jobs: Dict[str, Tuple[dict, List[Tuple[str, str]]]] = {}
    for split in splits:
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        if not dataset:
            continue
        pipeline = [TRANSFORMS.build(step) for step in dataset.pipeline]
        loaders = [step for step in pipeline if isinstance(step, LoadCachedFrames)]
        if not loaders:
            raise SystemExit(f'error: the {split} pipeline of the config has no '
                             'LoadCachedFrames step; use a *_cached config')
        try:
            check_cached_resize(pipeline)
        except ValueError as err:
            raise SystemExit(f'error: {split} pipeline: {err}') from None
        loader = loaders[0]
        rule = loader.rule
        # where LoadCachedFrames will read: its own cache_root, else the dataset's folder
        cache_root = loader.cache_root or data_prefix_folder(dataset, 'frame_cache')
        if cache_root is None:
            raise SystemExit(f'error: the {split} pipeline\'s LoadCachedFrames has no '
                             "cache_root and its dataset no data_prefix['frame_cache']")
        held, videos = jobs.setdefault(cache_root, (rule, []))
        if held != rule:
            raise SystemExit(f'error: {cache_root} is asked for {held} and {rule}')
        ann_file = osp.join(dataset.get('data_root') or '', dataset.ann_file)
        folder = data_prefix_folder(dataset, 'video') or dataset.get('data_root') or ''
        known = {key for key, _ in videos}
        annotation = load_video_captions(ann_file)
        keys = [key for key in annotation if key not in known]
        try:  # the dataset's rule, and the cache's own: no key may leave the cache folder
            if not dataset.get('allow_paths_outside_root', False):
                check_paths_inside_root(annotation, ann_file)
            for key in keys:
                cache_entry_path(cache_root, key)
        except (AnnotationError, FrameCacheError) as err:
            raise SystemExit(f'error: {err}') from None
        # the file DecordInit would open (a bare key gets .mp4), as the dataset resolves it
        videos.extend((key, resolve_video_path(osp.join(folder, key))) for key in keys)
    if not jobs:
        raise SystemExit('error: the config has no dataloader for the requested splits')
    return jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a config whose pipelines read LoadCachedFrames')
    parser.add_argument('--split', choices=SPLITS + ('all', ), default='all',
                        help='which datasets to cache (default: all)')
    parser.add_argument('--workers', type=int, default=1, help='decoding processes')
    parser.add_argument('--save-every', type=int, default=200,
                        help='save the manifest after this many videos (resumable)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.dataset.data_root=DIR')
    args = parser.parse_args(argv)
    quiet_console()  # mmengine's file-backend notices, logged when a video is opened
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    splits = list(SPLITS) if args.split == 'all' else [args.split]
    failed = 0
    for root, (rule, videos) in cache_jobs(cfg, splits).items():
        stats = update_cache(root, videos, rule, args.workers, args.save_every,
                             not args.no_progress)
        print(f'frame cache {root}: {stats["videos"]} videos; {stats["cached"]} cached, '
              f'{stats["unchanged"]} unchanged, {stats["failed"]} failed; '
              f'{stats["bytes"] / 2**30:.2f} GiB of frames')
        failed += stats['failed']
    return 1 if failed else 0


if __name__ == '__main__':
    with ignore_known_warnings():
        sys.exit(main())
