"""Convert the LSMDC 2016 retrieval annotations into our annotation files.

Reads, from SRC, the tab-separated ``LSMDC16_annos_training.csv``,
``LSMDC16_annos_val.csv`` and ``LSMDC16_challenge_1000_publictect.csv`` (fields: clip id,
start/end aligned, start/end extracted, sentence; a clip may have several lines) and
writes ``lsmdc_train.json``, ``lsmdc_val.json`` and ``lsmdc_test_1k.json``: clips in
order of first appearance, each with its sentences in file order. Clips are
``<movie>/<clip id>.avi`` where the movie folder is the clip id up to its last ``_``
(``0001_American_Beauty_00.00.51.926-00.00.54.129`` is in ``0001_American_Beauty/``),
as MPII distributes them; a flat folder or another extension is found as well.

    python tools/data/lsmdc/convert_annotations.py data/lsmdc/raw
"""
import os
import sys
from typing import Dict, List, Optional, Sequence

from projects.tempme_data import conversion

SPLITS = {'lsmdc_train.json': 'LSMDC16_annos_training.csv',
          'lsmdc_val.json': 'LSMDC16_annos_val.csv',
          'lsmdc_test_1k.json': 'LSMDC16_challenge_1000_publictect.csv'}


def movie_folder(clip_id: str) -> str:
    """``0001_American_Beauty_00.00.51.926-00.00.54.129`` -> ``0001_American_Beauty``."""
    movie, sep, _ = clip_id.rpartition('_')
    return movie if sep and movie else ''


def clip_entries(path: str) -> List['conversion.VideoEntry']:
    captions: Dict[str, List[str]] = {}
    for line, fields in conversion.read_tsv_rows(path, 6):
        clip_id = fields[0].strip()
        where = f'{path}, line {line} (clip {clip_id!r})'
        if not movie_folder(clip_id):
            raise conversion.ConversionError(f'{where}: clip id has no movie prefix')
        captions.setdefault(clip_id, []).append(conversion.clean_caption(fields[5], where))
    return [conversion.VideoEntry(clip_id, (f'{movie_folder(clip_id)}/{clip_id}.avi',
                                            f'{clip_id}.avi'), sentences)
            for clip_id, sentences in captions.items()]


def build_splits(src: str) -> Dict[str, List['conversion.VideoEntry']]:
    return {out: clip_entries(os.path.join(src, name)) for out, name in SPLITS.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    src_help = 'folder with ' + ', '.join(SPLITS.values())
    return conversion.converter_main(__doc__, src_help, 'data/lsmdc/videos',
                                     'data/lsmdc/annotations', build_splits, argv)


if __name__ == '__main__':
    sys.exit(main())
