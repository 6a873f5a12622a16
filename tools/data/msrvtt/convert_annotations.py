"""Convert CLIP4Clip's MSR-VTT release (``msrvtt_data.zip``) into our annotation files.

Reads, from SRC: ``MSRVTT_data.json`` (``sentences``: ``video_id``/``caption``),
``MSRVTT_train.9k.csv`` and, when present, ``MSRVTT_train.7k.csv`` (column ``video_id``),
and ``MSRVTT_JSFUSION_test.csv`` (columns ``key,vid_key,video_id,sentence``). Writes:

* ``msrvtt_train_9k.json`` / ``msrvtt_train_7k.json``: every caption of each training
  video (20 in MSR-VTT), videos in csv order, captions in ``MSRVTT_data.json`` order;
* ``msrvtt_test_1k.json``: 1k-A, the csv's own sentence, one per video, in csv order.

    python tools/data/msrvtt/convert_annotations.py data/msrvtt/msrvtt_data
"""
import os
import sys
from typing import Dict, List, Optional, Sequence

from projects.tempme_data import conversion

TRAIN_SPLITS = {'msrvtt_train_9k.json': 'MSRVTT_train.9k.csv',
                'msrvtt_train_7k.json': 'MSRVTT_train.7k.csv'}
TEST_CSV = 'MSRVTT_JSFUSION_test.csv'
SENTENCES = 'MSRVTT_data.json'


def load_sentences(path: str) -> Dict[str, List[str]]:
    """``video_id -> captions`` in file order, from ``MSRVTT_data.json``."""
    data = conversion.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get('sentences'), list):
        raise conversion.ConversionError(f'{path}: expected an object with a "sentences" list')
    captions: Dict[str, List[str]] = {}
    for i, item in enumerate(data['sentences']):
        where = f'{path}: sentences[{i}]'
        if not isinstance(item, dict) or not isinstance(item.get('video_id'), str):
            raise conversion.ConversionError(
                f'{where}: expected an object with a "video_id" string')
        where += f' (video {item["video_id"]})'
        caption = conversion.clean_caption(item.get('caption'), where)
        captions.setdefault(item['video_id'], []).append(caption)
    return captions


def _unique_ids(path: str, rows: Sequence[Dict[str, str]]) -> List[str]:
    seen = set()
    ids = []
    for row in rows:
        video_id = row['video_id'].strip()
        if video_id in seen:
            raise conversion.ConversionError(f'{path}: video {video_id} is listed twice')
        seen.add(video_id)
        ids.append(video_id)
    return ids


def train_entries(csv_path: str, sentences_path: str,
                  sentences: Dict[str, List[str]]) -> List['conversion.VideoEntry']:
    ids = _unique_ids(csv_path, conversion.read_csv_rows(csv_path, ['video_id']))
    entries = []
    for video_id in ids:
        if video_id not in sentences:
            raise conversion.ConversionError(
                f'{csv_path}: video {video_id} has no caption in {sentences_path}')
        entries.append(conversion.VideoEntry(video_id, (f'{video_id}.mp4', ), sentences[video_id]))
    return entries


def test_entries(csv_path: str) -> List['conversion.VideoEntry']:
    rows = conversion.read_csv_rows(csv_path, ['video_id', 'sentence'])
    ids = _unique_ids(csv_path, rows)
    entries = []
    for video_id, row in zip(ids, rows):
        caption = conversion.clean_caption(row['sentence'], f'{csv_path}: video {video_id}')
        entries.append(conversion.VideoEntry(video_id, (f'{video_id}.mp4', ), [caption]))
    return entries


def build_splits(src: str) -> Dict[str, List['conversion.VideoEntry']]:
    sentences_path = os.path.join(src, SENTENCES)
    sentences = load_sentences(sentences_path)
    splits = {}
    for out_name, csv_name in TRAIN_SPLITS.items():
        csv_path = os.path.join(src, csv_name)
        if out_name.endswith('_7k.json') and not os.path.exists(csv_path):
            continue  # optional split
        splits[out_name] = train_entries(csv_path, sentences_path, sentences)
    splits['msrvtt_test_1k.json'] = test_entries(os.path.join(src, TEST_CSV))
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    src_help = f'folder with {SENTENCES}, the train csv(s) and {TEST_CSV}'
    return conversion.converter_main(__doc__, src_help, 'data/msrvtt/videos/all',
                                     'data/msrvtt/annotations', build_splits, argv)


if __name__ == '__main__':
    sys.exit(main())
