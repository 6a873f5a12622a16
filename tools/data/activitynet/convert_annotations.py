"""Convert ActivityNet Captions into paragraph-retrieval annotation files.

Reads, from SRC, ``train.json`` and ``val_1.json`` (``{"v_ID": {"duration",
"timestamps": [[start, end], ...], "sentences": [...]}}``) and writes
``activitynet_train.json`` and ``activitynet_val1.json`` (val_1 is the usual test set):
one caption per video, its sentences sorted by start time (ties keep file order) and
joined with a space, videos in file order. The file is ``v_ID.<ext>`` or, as in
CLIP4Clip's copies, ``ID.<ext>``, whatever the extension (``.mp4``, ``.mkv``, ...).

    python tools/data/activitynet/convert_annotations.py data/activitynet/raw
"""
import os
import sys
from typing import Dict, List, Optional, Sequence

from projects.tempme_data import conversion

SPLITS = {'activitynet_train.json': 'train.json', 'activitynet_val1.json': 'val_1.json'}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def paragraph_entries(path: str) -> List['conversion.VideoEntry']:
    data = conversion.read_json(path)
    if not isinstance(data, dict):
        raise conversion.ConversionError(f'{path}: expected an object {{video_id: {{...}}}}')
    entries = []
    for video_id, item in data.items():
        where = f'{path}: video {video_id}'
        if not isinstance(item, dict):
            raise conversion.ConversionError(f'{where}: expected an object')
        stamps, sentences = item.get('timestamps'), item.get('sentences')
        if not isinstance(stamps, list) or not isinstance(sentences, list) or not sentences:
            raise conversion.ConversionError(
                f'{where}: needs non-empty "timestamps" and "sentences" lists')
        if len(stamps) != len(sentences):
            raise conversion.ConversionError(
                f'{where}: {len(stamps)} timestamps but {len(sentences)} sentences')
        segments = []
        for i, (stamp, sentence) in enumerate(zip(stamps, sentences)):
            if not isinstance(stamp, list) or len(stamp) != 2 or not all(map(_is_number, stamp)):
                raise conversion.ConversionError(
                    f'{where}: timestamps[{i}] is {stamp!r}, expected [start, end]')
            segments.append((float(stamp[0]),
                             conversion.clean_caption(sentence, f'{where}, sentences[{i}]')))
        names = [f'{video_id}.mp4']
        if video_id.startswith('v_'):
            names.append(f'{video_id[2:]}.mp4')
        entries.append(conversion.VideoEntry(video_id, tuple(names),
                                             [conversion.join_in_time_order(segments)]))
    return entries


def build_splits(src: str) -> Dict[str, List['conversion.VideoEntry']]:
    return {out: paragraph_entries(os.path.join(src, name)) for out, name in SPLITS.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    src_help = 'folder with ' + ', '.join(SPLITS.values())
    return conversion.converter_main(__doc__, src_help, 'data/activitynet/videos',
                                     'data/activitynet/annotations', build_splits, argv)


if __name__ == '__main__':
    sys.exit(main())
