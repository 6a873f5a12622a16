"""Convert DiDeMo's moment annotations into paragraph-retrieval annotation files.

Reads, from SRC, ``train_data.json``, ``val_data.json`` and ``test_data.json`` (the
LocalizingMoments release: a list of ``{video, times, description, ...}``, one per
moment, ``times`` holding each annotator's ``[start, end]`` in 5-second chunks) and the
split lists ``train_list.txt``, ``val_list.txt``, ``test_list.txt`` (one video name per
line, CLIP4Clip's DiDeMo data: a split keeps only the videos of its list, as CLIP4Clip's
loader does; ``--no-split-lists`` keeps every annotated video), and writes
``didemo_{train,val,test}.json``: one caption per video, its descriptions joined
in time order (by the mean annotated start; ties keep file order), videos in order of
first appearance. File names come from the video root, whatever the extension
(``.mov``, ``.mp4``, ``.3gp``, ...: the release mixes formats, and copies are often
transcoded to ``.mp4``).

    python tools/data/didemo/convert_annotations.py data/didemo/raw
"""
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from projects.tempme_data import conversion

SPLITS = {'didemo_train.json': 'train_data.json', 'didemo_val.json': 'val_data.json',
          'didemo_test.json': 'test_data.json'}
LISTS = {'didemo_train.json': 'train_list.txt', 'didemo_val.json': 'val_list.txt',
         'didemo_test.json': 'test_list.txt'}


def _start(times: object, where: str) -> float:
    """Mean annotated start (in chunks) of one moment."""
    if not isinstance(times, list) or not times:
        raise conversion.ConversionError(
            f'{where}: "times" must be a non-empty list of [start, end]')
    starts = []
    for t in times:
        if (not isinstance(t, (list, tuple)) or len(t) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t)):
            raise conversion.ConversionError(
                f'{where}: malformed time {t!r} (expected [start, end])')
        starts.append(float(t[0]))
    return sum(starts) / len(starts)


def paragraph_entries(path: str) -> List['conversion.VideoEntry']:
    data = conversion.read_json(path)
    if not isinstance(data, list):
        raise conversion.ConversionError(f'{path}: expected a list of moments')
    moments: Dict[str, List[Tuple[float, str]]] = {}
    for i, item in enumerate(data):
        where = f'{path}: entry {i}'
        if not isinstance(item, dict) or not isinstance(item.get('video'), str) \
                or not item['video'].strip():
            raise conversion.ConversionError(f'{where}: expected an object with a "video" name')
        video = item['video'].strip()
        where += f' (video {video})'
        start = _start(item.get('times'), where)
        moments.setdefault(video, []).append(
            (start, conversion.clean_caption(item.get('description'), where)))
    return [conversion.VideoEntry(video, (video, ), [conversion.join_in_time_order(segments)])
            for video, segments in moments.items()]


def build_splits(src: str, use_lists: bool = True) -> Dict[str, List['conversion.VideoEntry']]:
    splits = {out: paragraph_entries(os.path.join(src, name)) for out, name in SPLITS.items()}
    if not use_lists:
        return splits
    for out, entries in splits.items():
        path = os.path.join(src, LISTS[out])
        if not os.path.isfile(path):
            raise conversion.ConversionError(
                f'{path}: split list not found (CLIP4Clip\'s DiDeMo data has train_list.txt, '
                'val_list.txt and test_list.txt); put it there, or pass --no-split-lists to '
                'keep every annotated video')
        listed = set(conversion.read_lines(path))
        kept = [entry for entry in entries if entry.video_id in listed]
        if len(kept) < len(entries):
            print(f'{out}: {len(entries) - len(kept)} annotated videos are not in {path} and '
                  'are left out', file=sys.stderr)
        splits[out] = kept
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='folder with ' + ', '.join(SPLITS.values()) + ' and '
                        + ', '.join(LISTS.values()))
    parser.add_argument('--no-split-lists', action='store_true',
                        help='keep every annotated video instead of the videos of '
                        '*_list.txt (not the CLIP4Clip protocol)')
    conversion.add_common_arguments(parser, 'data/didemo/videos', 'data/didemo/annotations')
    args = parser.parse_args(argv)
    return conversion.run_conversion(lambda: build_splits(args.src, not args.no_split_lists), args)


if __name__ == '__main__':
    sys.exit(main())
