"""Convert CLIP4Clip's MSR-VTT release (``msrvtt_data.zip``) into our annotation files.

Reads, from SRC: ``MSRVTT_data.json`` (``sentences``: ``video_id``/``caption``),
``MSRVTT_train.9k.csv`` and, when present, ``MSRVTT_train.7k.csv`` (column ``video_id``),
and ``MSRVTT_JSFUSION_test.csv`` (columns ``key,vid_key,video_id,sentence``). Writes:

* ``msrvtt_train_9k.json`` / ``msrvtt_train_7k.json``: every caption of each training
  video (20 in MSR-VTT), videos in csv order, captions in ``MSRVTT_data.json`` order;
* ``msrvtt_test_1k.json``: 1k-A, the csv's own sentence, one per video, in csv order;
* ``msrvtt_val.json`` and ``msrvtt_train_9k_minus_val.json``: a val split for the clean
  evaluation protocol (README, "Evaluation protocols"), since 9k / 1k-A has none. It is
  MSR-VTT's own validation split (``"split": "validate"`` in the ``videos`` list of
  ``MSRVTT_data.json``: video6513-video7009, 497 videos, all inside the 9k split), every
  caption of each, in 9k csv order; the second file is the 9k split without them. Written
  only when ``MSRVTT_data.json`` says which videos are validation videos.

    python tools/data/msrvtt/convert_annotations.py data/msrvtt/msrvtt_data
"""
import os
import sys
from typing import Dict, List, Optional, Sequence, Set

from projects.tempme_data import conversion

TRAIN_SPLITS = {'msrvtt_train_9k.json': 'MSRVTT_train.9k.csv',
                'msrvtt_train_7k.json': 'MSRVTT_train.7k.csv'}
TEST_CSV = 'MSRVTT_JSFUSION_test.csv'
SENTENCES = 'MSRVTT_data.json'
VAL_SPLITS = ('msrvtt_val.json', 'msrvtt_train_9k_minus_val.json')


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


def load_validation_ids(path: str) -> Optional[Set[str]]:
    """MSR-VTT's own validation videos (``videos[].split == 'validate'``), or ``None`` when
    the file does not say which split a video belongs to."""
    videos = conversion.read_json(path).get('videos')
    if not isinstance(videos, list) or not any(
            isinstance(v, dict) and 'split' in v for v in videos):
        return None
    return {v['video_id'] for v in videos
            if isinstance(v, dict) and v.get('split') == 'validate' and 'video_id' in v}


def val_splits(train_9k: Sequence['conversion.VideoEntry'],
               validation_ids: Set[str]) -> Dict[str, List['conversion.VideoEntry']]:
    """The 9k split cut into ``msrvtt_val.json`` and ``msrvtt_train_9k_minus_val.json``."""
    val = [entry for entry in train_9k if entry.video_id in validation_ids]
    if not val:
        raise conversion.ConversionError(
            f'{SENTENCES} names {len(validation_ids)} validation videos, none of them in '
            'the 9k training split')
    rest = [entry for entry in train_9k if entry.video_id not in validation_ids]
    return dict(zip(VAL_SPLITS, (val, rest)))


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
    validation_ids = load_validation_ids(sentences_path)
    if validation_ids is None:
        print(f'no val split written: {sentences_path} does not say which videos are '
              'validation videos (videos[].split)')
    else:
        splits.update(val_splits(splits['msrvtt_train_9k.json'], validation_ids))
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    src_help = f'folder with {SENTENCES}, the train csv(s) and {TEST_CSV}'
    return conversion.converter_main(__doc__, src_help, 'data/msrvtt/videos/all',
                                     'data/msrvtt/annotations', build_splits, argv)


if __name__ == '__main__':
    sys.exit(main())
