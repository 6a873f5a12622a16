"""Convert the MSVD retrieval release (CLIP4Clip's ``msvd_data.zip``) into our files.

Reads, from SRC, ``raw-captions.pkl`` (``{video_id: [[token, ...], ...]}``) and
``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (the standard 1200 / 100 / 670
split, one video id per line) and writes ``msvd_{train,val,test}.json``: videos in list
order, each with all of its captions (tokens joined with spaces) in pickle order. The
pickle is read with an unpickler that only rebuilds built-in containers, strings and
numbers, so a tampered file cannot run code. Videos are ``<id>.avi`` (YouTubeClips),
or the same name with another extension.

    python tools/data/msvd/convert_annotations.py data/msvd/msvd_data
"""
import os
import sys
from typing import Dict, List, Optional, Sequence

from projects.tempme_data import conversion

CAPTIONS = 'raw-captions.pkl'
SPLITS = {'msvd_train.json': 'train_list.txt', 'msvd_val.json': 'val_list.txt',
          'msvd_test.json': 'test_list.txt'}


def load_captions(path: str) -> Dict[str, List[str]]:
    """``video_id -> captions`` from the pickle; token lists are joined with spaces."""
    data = conversion.load_pickle_safely(path)
    if not isinstance(data, dict):
        raise conversion.ConversionError(f'{path}: expected a dict {{video_id: captions}}')
    captions = {}
    for video_id, items in data.items():
        where = f'{path}: video {video_id!r}'
        if not isinstance(video_id, str) or not isinstance(items, (list, tuple)) or not items:
            raise conversion.ConversionError(
                f'{where}: expected a string id and a list of captions')
        texts = []
        for i, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                if not all(isinstance(token, str) for token in item):
                    raise conversion.ConversionError(
                        f'{where}, caption {i}: tokens must be strings')
                item = ' '.join(item)
            texts.append(conversion.clean_caption(item, f'{where}, caption {i}'))
        captions[video_id] = texts
    return captions


def build_splits(src: str) -> Dict[str, List['conversion.VideoEntry']]:
    captions_path = os.path.join(src, CAPTIONS)
    captions = load_captions(captions_path)
    splits = {}
    for out, list_name in SPLITS.items():
        list_path = os.path.join(src, list_name)
        ids = conversion.read_lines(list_path)
        entries = []
        for video_id in ids:
            if video_id not in captions:
                raise conversion.ConversionError(
                    f'{list_path}: video {video_id} has no captions in {captions_path}')
            entries.append(
                conversion.VideoEntry(video_id, (f'{video_id}.avi', ), captions[video_id]))
        if len(set(ids)) != len(ids):
            raise conversion.ConversionError(f'{list_path}: a video id is listed twice')
        splits[out] = entries
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    src_help = f'folder with {CAPTIONS} and ' + ', '.join(SPLITS.values())
    return conversion.converter_main(__doc__, src_help, 'data/msvd/videos',
                                     'data/msvd/annotations', build_splits, argv)


if __name__ == '__main__':
    sys.exit(main())
