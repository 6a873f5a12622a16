"""Generate the synthetic order-sensitive text-video retrieval benchmark.

Writes ``videos/{split}_{index}.mp4``, ``train.json`` / ``val.json`` / ``test.json``
(mmaction2 ``VideoTextDataset`` format, keys relative to ``videos/``) and, last,
``meta.json`` (arguments, order-blind ceiling, chance, order-dependent caption ids).
An output directory whose meta.json records the same arguments is reused as is.

    python tools/data/make_synthetic.py --out data/synthetic --seed 0

The scene logic lives in :mod:`projects.tempme_data.synthetic` (numpy and OpenCV only), so
generating data does not import the training stack.
"""
import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from projects.tempme_data import synthetic

SPLITS = ('train', 'val', 'test')
VIDEO_DIR = 'videos'
_VIDEO_NAME = re.compile(r'^(train|val|test)_\d+\.mp4$')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/synthetic', help='output directory')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=1600, help='training videos')
    parser.add_argument('--num-val', type=int, default=200, help='validation videos')
    parser.add_argument('--num-test', type=int, default=200, help='test videos')
    parser.add_argument('--frames', type=int, default=12, help='frames per video (>= 4)')
    parser.add_argument('--size', type=int, default=56,
                        help='frame side in pixels (>= 32); configs/tempme_synthetic.py reads '
                        '56 px frames as 7 x 7 patches of 8 px')
    parser.add_argument('--captions-per-video', type=int, default=2)
    parser.add_argument(
        '--twin-fraction', type=float, default=0.5,
        help='share of the val/test videos that have an order twin (same frames, '
        'other order)')
    parser.add_argument(
        '--train-twin-fraction', type=float, default=1.0,
        help='the same for the training split: twins are the examples that teach order')
    parser.add_argument(
        '--fps', type=float, default=1.0,
        help='frame rate stored in the mp4 (1: a 1-fps resampler keeps every frame)')
    parser.add_argument('--force', action='store_true', help='regenerate even if present')
    args = parser.parse_args(argv)
    if args.frames < 4:
        parser.error('--frames must be >= 4 (two segments of >= 2 frames)')
    if args.size < 32 or args.size % 2:
        parser.error('--size must be even (mp4v stores 4:2:0 chroma) and >= 32')
    if min(args.num_train, args.num_val, args.num_test) < 0:
        parser.error('video counts must be >= 0')
    if args.num_test < 1:
        parser.error('--num-test must be >= 1 (the ceiling is computed on it)')
    if args.captions_per_video < 1:
        parser.error('--captions-per-video must be >= 1')
    if not (0.0 <= args.twin_fraction <= 1.0 and 0.0 <= args.train_twin_fraction <= 1.0):
        parser.error('--twin-fraction and --train-twin-fraction must be in [0, 1]')
    if args.fps <= 0:
        parser.error('--fps must be > 0')
    return args


def config_of(args: argparse.Namespace) -> Dict[str, object]:
    """Everything the output depends on: equal configs give identical data."""
    return {
        'generator_version': synthetic.GENERATOR_VERSION,
        'seed': args.seed,
        'num_train': args.num_train,
        'num_val': args.num_val,
        'num_test': args.num_test,
        'frames': args.frames,
        'size': args.size,
        'captions_per_video': args.captions_per_video,
        'twin_fraction': args.twin_fraction,
        'train_twin_fraction': args.train_twin_fraction,
        'fps': args.fps,
    }


def _write_json(path: Path, data: object) -> None:
    """Write through a temporary file so a reader never sees half a file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1) + '\n')
    os.replace(tmp, path)


def existing_is_complete(out: Path, config: Dict[str, object]) -> bool:
    """True if ``out`` holds a finished run with ``config`` (meta.json is written last)."""
    try:
        meta = json.loads((out / 'meta.json').read_text())
        if meta.get('config') != config:
            return False
        for split in SPLITS:
            names = json.loads((out / f'{split}.json').read_text())
            if len(names) != config[f'num_{split}']:
                return False
            if not all((out / VIDEO_DIR / name).is_file() for name in names):
                return False
    except (OSError, ValueError):
        return False
    return True


def _clear(out: Path) -> None:
    """Drop meta.json first, then this generator's previous outputs."""
    for name in ['meta.json'] + [f'{split}.json' for split in SPLITS]:
        (out / name).unlink(missing_ok=True)
    video_dir = out / VIDEO_DIR
    if video_dir.is_dir():
        for path in video_dir.iterdir():
            if _VIDEO_NAME.match(path.name):
                path.unlink()


def check_decodable(path: Path, frames: int, size: int) -> None:
    """Fail early if decord does not read back what OpenCV wrote.

    decord 0.6.0 cannot read some OpenCV mp4 sizes (48 and 72 px among the even sizes
    from 32 to 518).
    """
    import decord

    try:
        reader = decord.VideoReader(str(path))
        shape = reader.get_batch(list(range(len(reader)))).shape
    except decord.DECORDError as error:
        raise RuntimeError(f'decord cannot read {path} ({size} px); choose another --size: '
                           f'{str(error).splitlines()[0]}') from error
    if tuple(shape) != (frames, size, size, 3):
        raise RuntimeError(f'{path} decodes as {tuple(shape)}, expected '
                           f'{(frames, size, size, 3)}')


def generate(args: argparse.Namespace, progress: bool = True) -> Dict[str, object]:
    """Render every split into ``args.out`` and return the meta.json content."""
    out = Path(args.out)
    config = config_of(args)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / VIDEO_DIR).mkdir(exist_ok=True)
    split_meta = {}
    checked = False
    for index, split in enumerate(SPLITS):
        # one generator per split: the test split does not change with --num-train
        rng = np.random.default_rng([args.seed, index])
        videos = synthetic.sample_split(
            rng, config[f'num_{split}'], prefix=split, frames=args.frames, size=args.size,
            captions_per_video=args.captions_per_video,
            twin_fraction=args.train_twin_fraction if split == 'train' else args.twin_fraction,
            unique_captions=split != 'train')
        multisets: List[tuple] = []
        for video in tqdm(videos, desc=split, unit='video', disable=not progress):
            frames = synthetic.render_scene(video.scene, args.size)
            synthetic.write_video(str(out / VIDEO_DIR / video.name), frames, args.fps)
            multisets.append(synthetic.frame_multiset(frames))
            if not checked:
                check_decodable(out / VIDEO_DIR / video.name, args.frames, args.size)
                checked = True
        _write_json(out / f'{split}.json', synthetic.annotation(videos))
        split_meta[split] = dict(ann_file=f'{split}.json', video_dir=VIDEO_DIR,
                                 **synthetic.split_statistics(videos, multisets))
    test = split_meta['test']
    meta = {
        'seed': args.seed,
        'config': config,
        'order_blind_ceiling_t2v_R1': test['order_blind_ceiling_t2v_R1'],
        'order_dependent_ceiling_t2v_R1': test['order_dependent_ceiling_t2v_R1'],
        'chance_t2v_R1': test['chance_t2v_R1'],
        'definitions': {
            'order_blind_ceiling_t2v_R1':
                'percent of captions whose video shares its multiset of raw frames with '
                'no other video of the split (ties count against the model)',
            'order_dependent_captions':
                'global caption ids (file order, video by video) of captions whose video '
                'has a twin with the same frame multiset that the caption does not describe',
            'chance_t2v_R1': '100 / number of videos in the split',
        },
        'splits': split_meta,
    }
    _write_json(out / 'meta.json', meta)
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if not args.force and existing_is_complete(out, config_of(args)):
        print(f'{out}: synthetic data with these arguments is already there; skipping '
              '(use --force to regenerate)')
        return 0
    begin = time.perf_counter()
    meta = generate(args)
    elapsed = time.perf_counter() - begin
    for split in SPLITS:
        s = meta['splits'][split]
        print(f"{split}: {s['num_videos']} videos, {s['num_captions']} captions, "
              f"{s['num_videos_with_twin']} with an order twin, "
              f"{len(s['order_dependent_captions'])} order-dependent captions")
    print(f"test: order-blind ceiling t2v R@1 {meta['order_blind_ceiling_t2v_R1']:.2f}%, "
          f"on order-dependent captions {meta['order_dependent_ceiling_t2v_R1']}, "
          f"chance {meta['chance_t2v_R1']:.2f}%")
    print(f'wrote {out} in {elapsed:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
