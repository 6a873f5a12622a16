"""Check a config's data before training: annotations, every video, caption lengths.

Builds each split's dataset as training would, probes every video (exists, not empty,
decord opens it, first and last frame decode), and lists every unreadable one with its
reason. Exits 1 when any split has an unusable annotation or an unreadable video.

Example::

    python tools/analysis/check_dataset.py configs/tempme_msrvtt.py --split all
"""
import argparse
import copy
import json
import sys
from typing import Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

import projects.tempme  # noqa: F401  (compatibility fixes + registration)
from projects.tempme.datasets import AnnotationError, VideoTextRetrievalDataset
from projects.tempme.known_warnings import ignore_known_warnings

SPLITS = ('train', 'val', 'test')


def dataset_configs(cfg: Config, split: str) -> Dict[str, dict]:
    """``{split: dataset config}`` for the requested splits that the config defines."""
    wanted = SPLITS if split == 'all' else (split, )
    found = {}
    for name in wanted:
        loader = cfg.get(f'{name}_dataloader')
        if loader and loader.get('dataset'):
            found[name] = copy.deepcopy(loader['dataset'])
    if not found:
        raise KeyError(f'the config defines no {split} dataloader with a dataset')
    return found


def check_split(dataset_cfg: dict, threads: int) -> Dict[str, object]:
    """Build one split with every check on; the video check skips instead of raising."""
    from mmaction.registry import DATASETS

    cfg = dict(dataset_cfg, check_videos=True, on_bad_video='skip', check_threads=threads,
               lazy_init=True)
    try:
        dataset = DATASETS.build(cfg)
        if not isinstance(dataset, VideoTextRetrievalDataset):
            raise TypeError(f'{type(dataset).__name__} is not a VideoTextRetrievalDataset')
        dataset.full_init()
    except (AnnotationError, FileNotFoundError, RuntimeError, TypeError) as err:
        return dict(ok=False, error=f'{type(err).__name__}: {err}', bad_videos=[])
    meta = dataset.metainfo
    skipped = dataset.skipped_videos
    return dict(ok=not skipped, error=None, ann_file=dataset.ann_file,
                num_videos=meta['num_videos'] + len(skipped),
                num_captions=meta['num_captions'],
                num_truncated_captions=meta['num_truncated_captions'],
                bad_videos=[dict(path=path, reason=reason) for path, reason in skipped])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', choices=SPLITS + ('all', ), default='all',
                        help='which dataloaders to check (default: all)')
    parser.add_argument('--threads', type=int, default=4, help='videos probed at once')
    parser.add_argument('--out', help='also write the report as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'train_dataloader.dataset.data_root=DIR')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # The datasets log what they find; this tool prints it once, as a report.
    if not MMLogger.check_instance_created('check_dataset'):
        MMLogger.get_instance('check_dataset', log_level='ERROR')
    report: Dict[str, object] = {}
    checked: Dict[str, str] = {}
    for split, dataset_cfg in dataset_configs(cfg, args.split).items():
        key = json.dumps(dataset_cfg, sort_keys=True, default=str)
        if key in checked:
            report[split] = dict(report[checked[key]], same_as=checked[key])
            print(f'[{split}] same data as {checked[key]}')
            continue
        checked[key] = split
        result = check_split(dataset_cfg, args.threads)
        report[split] = result
        if result['error']:
            print(f'[{split}] FAILED: {result["error"]}')
            continue
        print(f'[{split}] {result["ann_file"]}: {result["num_videos"]} videos, '
              f'{len(result["bad_videos"])} unreadable, {result["num_captions"]} captions '
              f'of readable videos, {result["num_truncated_captions"]} longer than the '
              'tokenizer context (truncated)')
        for bad in result['bad_videos']:
            print(f'  {bad["path"]}: {bad["reason"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    ok = all(result['ok'] for result in report.values())
    if ok:
        print('all checked data is usable')
    elif any(result['error'] for result in report.values()):
        # an annotation or config problem: skipping videos cannot help
        print('PROBLEMS FOUND: fix the annotation or config errors above (FAILED lines)')
    else:
        print('PROBLEMS FOUND: fix the videos above, or set on_bad_video=\'skip\' on the '
              'dataset to train without the unreadable videos')
    if args.out:
        print(f'report written to {args.out}')
    return 0 if ok else 1


if __name__ == '__main__':
    with ignore_known_warnings():
        sys.exit(main())
