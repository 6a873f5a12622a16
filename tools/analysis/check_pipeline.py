"""Check that a config's data pipeline feeds the model what the published TempMe loader does.

With a pipeline fixture (format: ``tests/data/README.md``; ``reference_pipeline.pt`` was
recorded by running the published loader), every video named in it is run through the
config's pipeline and compared: the frame indices must be identical and the uint8
pixels (before normalisation) within ``--max-mean-diff`` / ``--max-diff`` grey levels.
``--split train`` checks the training pipeline the same way with its random
augmentation left out (the reference's frame rule is the same in both splits).

Without a fixture it is a sanity check of your own videos: each one is run through the
pipeline, and its frame rate, frame count, chosen frames and clip shape are printed and
checked against what the model takes. ``--save OUT`` records the result in the fixture
format, so that another config (compressed videos, a frame cache, a changed pipeline)
can be compared with this one later.

Prints a row per video; exits 1 on any mismatch or unreadable video.

Examples::

    python tools/analysis/check_pipeline.py configs/tempme_msrvtt.py \\
        tests/data/reference_pipeline.pt --videos tests/data/videos
    python tools/analysis/check_pipeline.py configs/tempme_msrvtt.py \\
        --videos data/msrvtt/videos/all --limit 20 --save work_dirs/msrvtt_pipeline.pt
"""
from __future__ import annotations  # type hints name Config without importing mmengine

import argparse
import os
import os.path as osp
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np
from mmengine.config import DictAction

from projects.tempme_deploy.video_files import VIDEO_EXTENSIONS

# torch and the plugin are imported where used: --help and argument errors answer at once
if TYPE_CHECKING:
    from mmengine.config import Config

#: Steps left out of the training pipeline for the comparison: they draw at random.
RANDOM_TRANSFORMS = ('ClipRandAugment', )


def split_pipeline(cfg: Config, split: str) -> List[dict]:
    """The split's pipeline up to the frames, without caption and random steps; a frame
    cache step is pointed at the dataset's cache folder, which the dataset would pass it."""
    from projects.tempme.apis.inference import TEXT_TRANSFORMS
    from projects.tempme.datasets import data_prefix_folder
    loader = cfg.get(f'{split}_dataloader') or {}
    dataset = loader.get('dataset') or {}
    pipeline = dataset.get('pipeline')
    if not pipeline:
        raise KeyError(f'the config has no {split}_dataloader.dataset.pipeline')
    steps = [dict(step) for step in pipeline
             if step['type'] not in TEXT_TRANSFORMS + RANDOM_TRANSFORMS]
    for step in steps:
        if step['type'] == 'LoadCachedFrames' and not step.get('cache_root'):
            step['cache_root'] = data_prefix_folder(dataset, 'frame_cache')
    return steps


def run_pipeline(steps: List[dict], path: str, video: Optional[str] = None
                 ) -> Tuple[np.ndarray, np.ndarray, float, int]:
    """Frame indices, uint8 clip ``(T, 3, H, W)``, fps and frame count of one video.

    ``video`` is its annotation key (a frame cache finds entries by it).
    """
    from mmaction.registry import TRANSFORMS
    from mmengine.registry import DefaultScope

    import projects.tempme  # noqa: F401  (registers the transforms)

    with DefaultScope.overwrite_default_scope('mmaction'):
        transforms = [TRANSFORMS.build(step) for step in steps]
    results = dict(filename=path, video=video or osp.basename(path), start_index=0,
                   modality='RGB')
    indices = None
    for transform in transforms:
        results = transform(results)
        if 'frame_inds' in results:
            indices = np.asarray(results['frame_inds']).reshape(-1)
    if indices is None:
        raise ValueError('the pipeline has no frame sampler (no frame_inds)')
    frames = np.stack(results['imgs'])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f'the pipeline gave frames of shape {frames.shape} ({frames.dtype}), '
                         'expected uint8 (T, H, W, 3)')
    return (indices, frames.transpose(0, 3, 1, 2), float(results.get('avg_fps', float('nan'))),
            int(results.get('total_frames', -1)))


def model_input_shape(cfg: Config) -> Optional[Tuple[int, int, int, int]]:
    """``(T, 3, S, S)`` the config's video encoder takes, or ``None`` if not derivable."""
    from projects.tempme.config_checks import model_input_geometry
    frames, size = model_input_geometry(cfg)
    return None if frames is None or size is None else (frames, 3, size, size)


def pixel_difference(ours: np.ndarray, reference: np.ndarray) -> Tuple[float, int]:
    """Mean and max absolute difference in grey levels (0..255)."""
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    return float(diff.mean()), int(diff.max())


def check_against_fixture(cfg: Config, fixture: dict, videos: str, split: str,
                          max_mean: float, max_diff: int) -> bool:
    steps = split_pipeline(cfg, split)
    print(f'{"video":<36} {"frames":>6} {"mean|d|":>8} {"max|d|":>6}  result')
    ok = True
    for name, ref in fixture['videos'].items():
        path = osp.join(videos, name)
        try:
            indices, clip, _, _ = run_pipeline(steps, path)
        except Exception as err:  # any decoding failure is a row, not a traceback
            print(f'{name:<36} {"-":>6} {"-":>8} {"-":>6}  ERROR {type(err).__name__}: {err}')
            ok = False
            continue
        ref_indices = [int(i) for i in ref[f'{split}_indices']]
        same_frames = indices.tolist() == ref_indices
        reference = ref['test_uint8'].numpy()
        problems = []
        if not same_frames:
            problems.append(f'frames {indices.tolist()} != reference {ref_indices}')
        if clip.shape != reference.shape:
            problems.append(f'clip shape {clip.shape} != reference {reference.shape}')
            mean, worst = float('nan'), -1
        else:
            mean, worst = pixel_difference(clip, reference)
            if mean > max_mean or worst > max_diff:
                problems.append(f'pixels differ beyond mean {max_mean} / max {max_diff}')
        ok = ok and not problems
        print(f'{name:<36} {"same" if same_frames else "DIFF":>6} {mean:>8.3f} {worst:>6}  '
              + ('ok' if not problems else 'MISMATCH: ' + '; '.join(problems)))
    return ok


def list_videos(folder: str, limit: Optional[int]) -> List[str]:
    names = sorted(name for name in os.listdir(folder)
                   if osp.splitext(name)[1].lower() in VIDEO_EXTENSIONS)
    return names[:limit] if limit else names


def check_own_videos(cfg: Config, videos: str, limit: Optional[int],
                     save: Optional[str]) -> bool:
    import torch
    test_steps, train_steps = split_pipeline(cfg, 'test'), split_pipeline(cfg, 'train')
    expected = model_input_shape(cfg)
    names = list_videos(videos, limit)
    if not names:
        print(f'no video files ({", ".join(VIDEO_EXTENSIONS)}) in {videos}')
        return False
    print(f'model input: {expected or "unknown"} (T, 3, H, W)')
    print(f'{"video":<36} {"fps":>6} {"frames":>6}  clip               result')
    ok = True
    record: Dict[str, dict] = {}
    for name in names:
        path = osp.join(videos, name)
        try:
            indices, clip, fps, total = run_pipeline(test_steps, path)
            train_indices = run_pipeline(train_steps, path)[0]
        except Exception as err:
            print(f'{name:<36} {"-":>6} {"-":>6}  {"-":<18} ERROR {type(err).__name__}: {err}')
            ok = False
            continue
        problems = []
        if expected is not None and tuple(clip.shape) != expected:
            problems.append(f'the model takes {expected}')
        if indices.min() < 0 or indices.max() >= total:
            problems.append(f'frame index outside 0..{total - 1}')
        notes = ' (repeated frames: fewer frames than the clip)' if total < len(indices) else ''
        ok = ok and not problems
        print(f'{name:<36} {fps:>6.2f} {total:>6}  {str(tuple(clip.shape)):<18} '
              + ('ok' if not problems else 'ERROR: ' + '; '.join(problems))
              + f'  frames {indices.tolist()}{notes}')
        record[name] = dict(test_indices=indices.tolist(), train_indices=train_indices.tolist(),
                            test_mask=torch.ones(len(indices), dtype=torch.long),
                            train_mask=torch.ones(len(train_indices), dtype=torch.long),
                            test_uint8=torch.from_numpy(np.ascontiguousarray(clip)))
    if save:
        os.makedirs(osp.dirname(osp.abspath(save)), exist_ok=True)
        tmp = f'{save}.tmp{os.getpid()}'
        torch.save(dict(videos=record, settings=dict(config=cfg.filename)), tmp)
        os.replace(tmp, save)
        print(f'wrote {save} ({len(record)} videos)')
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[1:]))
    parser.add_argument('config', help='config whose pipelines are checked')
    parser.add_argument('fixture', nargs='?',
                        help='pipeline fixture (.pt) to compare with; without it, check '
                        'the videos in --videos on their own')
    parser.add_argument('--videos', required=True, help='folder holding the videos')
    parser.add_argument('--split', choices=('test', 'train', 'all'), default='test',
                        help='pipeline compared with the fixture (train: without its random '
                        'augmentation); default: test')
    parser.add_argument('--max-mean-diff', type=float, default=0.05,
                        help='largest mean |pixel difference| accepted, grey levels')
    parser.add_argument('--max-diff', type=int, default=3,
                        help='largest |pixel difference| accepted, grey levels')
    parser.add_argument('--limit', type=int, default=None,
                        help='without a fixture: check only the first N videos (sorted)')
    parser.add_argument('--save', help='without a fixture: write the results as a fixture')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, e.g. image_size=112')
    args = parser.parse_args(argv)
    if not osp.isdir(args.videos):
        parser.error(f'--videos: no such folder: {args.videos}')
    if args.fixture and args.save:
        parser.error('--save records your own videos: use it without a fixture')
    if args.fixture and not osp.isfile(args.fixture):
        parser.error(f'fixture not found: {args.fixture}')
    from projects.tempme_cli import require_file
    require_file(args.config, 'config file')
    from projects.tempme.console import quiet_console
    from projects.tempme.known_warnings import ignore_known_warnings
    quiet_console()  # mmengine's file-backend notices stay out of the table
    with ignore_known_warnings():
        return check(args, parser)


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Compare with the fixture, or check the videos on their own; the exit status."""
    import torch
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)

    if args.fixture is None:
        ok = check_own_videos(cfg, args.videos, args.limit, args.save)
    else:
        fixture = torch.load(args.fixture, weights_only=True, map_location='cpu')
        if not isinstance(fixture, dict) or not isinstance(fixture.get('videos'), dict):
            parser.error(f'{args.fixture}: not a pipeline fixture (no "videos" entry)')
        ok = True
        for split in (('test', 'train') if args.split == 'all' else (args.split, )):
            print(f'{split} pipeline of {args.config} vs {args.fixture}')
            ok = check_against_fixture(cfg, fixture, args.videos, split,
                                       args.max_mean_diff, args.max_diff) and ok
    print('MATCH' if ok and args.fixture else 'OK' if ok else 'MISMATCH' if args.fixture
          else 'PROBLEMS FOUND')
    return 0 if ok else 1


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    sys.exit(run_tool(main))
