"""Shared logic of the dataset converters in ``tools/data/<dataset>/``.

Each converter parses one public annotation format into :class:`VideoEntry` lists,
one per split; everything else lives here, so every dataset behaves the same way:

* video files are found under a video root whatever their extension or folder
  (:class:`VideoFileLookup`), because releases differ (DiDeMo's ``.mov``/``.3gp`` files,
  ActivityNet's ``v_`` prefix, LSMDC's per-movie folders, transcoded ``.mp4`` copies);
* a split with missing videos fails and names them, or, when asked, drops them and
  says how many (:func:`resolve_split`);
* annotations are written as ``{video_file: [caption, ...]}`` in a stated order,
  byte-for-byte reproducible, atomically (:func:`write_annotation`);
* malformed inputs fail with the file and the entry (:class:`ConversionError`);
* pickled caption files are read without executing anything (:func:`load_pickle_safely`).

Pure standard library, no torch or mmengine on import, so a converter's ``--help`` is
immediate.
"""
import argparse
import csv
import json
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, TextIO,
                    Tuple)

from projects.tempme_deploy.video_files import VIDEO_EXTENSIONS


class ConversionError(ValueError):
    """An input annotation file that cannot be converted as it is."""


class MissingVideosError(RuntimeError):
    """Videos named by the annotation are not under the video root."""

    def __init__(self, split: str, video_root: str, missing: Sequence['VideoEntry'],
                 total: int) -> None:
        self.split = split
        self.missing = [entry.video_id for entry in missing]
        lines = [f'  {entry.video_id} (looked for {", ".join(entry.candidates)})'
                 for entry in missing]
        super().__init__(
            f'split {split!r}: {len(missing)} of {total} videos are missing under '
            f'{video_root}:\n' + '\n'.join(lines) +
            '\nput them there, point --video-root elsewhere, or pass --drop-missing')


class VideoEntry(NamedTuple):
    """One video of a split: its dataset id, file names to look for, its captions."""

    video_id: str
    candidates: Tuple[str, ...]  # relative paths, most likely first
    captions: List[str]


@dataclass
class SplitResult:
    """A split after video resolution: the annotation and what was dropped."""

    annotation: Dict[str, List[str]]
    dropped: List[str]


# -- reading inputs ---------------------------------------------------------------------
def _not_utf8(path: str, err: UnicodeDecodeError) -> ConversionError:
    with open(path, 'rb') as f:
        line = f.read(err.start).count(b'\n') + 1
    return ConversionError(f'{path}, line {line}: not valid UTF-8 (byte {err.start}: '
                           f'{err.reason}); re-save the file as UTF-8')


def read_json(path: str) -> Any:
    """Parse a JSON file; errors name the file, line and column."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConversionError(f'{path}: file not found') from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except json.JSONDecodeError as err:
        raise ConversionError(
            f'{path}: malformed JSON at line {err.lineno}, column {err.colno}: '
            f'{err.msg}') from None


def read_lines(path: str) -> List[str]:
    """Non-empty, stripped lines of a text file (video id lists)."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise ConversionError(f'{path}: file not found') from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None


def read_csv_rows(path: str, columns: Sequence[str]) -> List[Dict[str, str]]:
    """Rows of a comma-separated file with a header that has at least ``columns``."""
    try:
        with open(path, encoding='utf-8-sig', newline='') as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            absent = [c for c in columns if c not in header]
            if absent:
                raise ConversionError(
                    f'{path}: missing column(s) {absent}; header is {header}')
            rows = []
            for row in reader:
                empty = [c for c in columns if not (row.get(c) or '').strip()]
                if empty:
                    raise ConversionError(
                        f'{path}, line {reader.line_num}: empty {", ".join(empty)}')
                rows.append(row)
            return rows
    except FileNotFoundError:
        raise ConversionError(f'{path}: file not found') from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None


def read_tsv_rows(path: str, num_fields: int) -> List[Tuple[int, List[str]]]:
    """``(line number, fields)`` of a header-less tab-separated file, fields checked."""
    rows = []
    try:
        with open(path, encoding='utf-8-sig') as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip('\r\n')
                if not line.strip():
                    continue
                fields = line.split('\t')
                if len(fields) != num_fields:
                    raise ConversionError(
                        f'{path}, line {number}: expected {num_fields} tab-separated '
                        f'fields, got {len(fields)}: {line[:120]!r}')
                rows.append((number, fields))
    except FileNotFoundError:
        raise ConversionError(f'{path}: file not found') from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    return rows


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild built-in containers and scalars, and nothing else.

    Plain dicts, lists, tuples, strings and numbers need no class lookup at all; the
    few built-in types a pickle may name (sets, for instance) are allowed by name.
    Anything else, which is how a pickle runs code, is refused.
    """

    _ALLOWED = frozenset({'dict', 'list', 'tuple', 'set', 'frozenset', 'str', 'bytes',
                          'int', 'float', 'bool', 'complex'})

    def find_class(self, module: str, name: str) -> Any:
        if module in ('builtins', '__builtin__') and name in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: only built-in containers, strings and '
            'numbers are allowed')


def load_pickle_safely(path: str) -> Any:
    """Read a pickle of built-in containers/strings/numbers without running code."""
    try:
        with open(path, 'rb') as f:
            # Python 2 pickles store text as bytes; decode it as UTF-8.
            return _BuiltinsOnlyUnpickler(f, encoding='utf-8').load()
    except FileNotFoundError:
        raise ConversionError(f'{path}: file not found') from None
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError,
            TypeError, AttributeError, IndexError) as err:
        raise ConversionError(f'{path}: cannot read the pickle: {err}') from None


# -- captions --------------------------------------------------------------------------
def clean_caption(text: Any, where: str) -> str:
    """A caption with collapsed whitespace; ``where`` names the entry in errors."""
    if not isinstance(text, str):
        raise ConversionError(f'{where}: expected a caption string, got {type(text).__name__}')
    text = ' '.join(text.split())
    if not text:
        raise ConversionError(f'{where}: empty caption')
    return text


def join_in_time_order(segments: Iterable[Tuple[float, str]]) -> str:
    """One paragraph from ``(start, sentence)`` pairs, sorted by start.

    The sort is stable, so sentences that start together keep their source order.
    """
    ordered = sorted(segments, key=lambda segment: segment[0])
    return ' '.join(sentence for _, sentence in ordered)


# -- finding videos --------------------------------------------------------------------
def strip_video_extensions(name: str) -> str:
    """``a/x.mov.mp4`` -> ``a/x``: only known video extensions, so ``00.01.02.5`` stays.

    A bare trailing ``.`` counts as an empty extension (some DiDeMo names end in one, and
    their files are found as ``<name>.mp4`` or ``<stem>.mp4``).
    """
    while True:
        stem, ext = os.path.splitext(name)
        if not stem or (ext.lower() not in VIDEO_EXTENSIONS and ext != '.'):
            return name
        name = stem


class VideoFileLookup:
    """The video files under a root, looked up by relative path or by name stem.

    Built with one walk of the tree. :meth:`resolve` returns, for the first candidate
    that matches: the file itself; else a file with the same stem in the same folder,
    then anywhere under the root; among several, the one whose extension comes first in
    ``VIDEO_EXTENSIONS``, then the first path in sorted order.
    """

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise ConversionError(
                f'video root {root} is not a directory: pass --video-root with the folder '
                'that holds the videos, or --no-video-check to write the default file names '
                'without looking at the videos')
        self.root = root
        self.files = set()
        self._by_path_stem: Dict[str, List[str]] = {}
        self._by_name_stem: Dict[str, List[str]] = {}
        for folder, _, names in os.walk(root, followlinks=True):
            rel_folder = os.path.relpath(folder, root)
            for name in names:
                if os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                    continue
                rel = Path(rel_folder, name).as_posix()  # Path drops a leading '.'
                self.files.add(rel)
                self._by_path_stem.setdefault(strip_video_extensions(rel), []).append(rel)
                self._by_name_stem.setdefault(strip_video_extensions(name), []).append(rel)

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def _best(paths: Sequence[str]) -> str:
        def rank(path: str) -> Tuple[int, str]:
            return VIDEO_EXTENSIONS.index(os.path.splitext(path)[1].lower()), path

        return min(paths, key=rank)

    def resolve(self, candidates: Sequence[str]) -> Optional[str]:
        """The relative path of the video named by ``candidates``, or ``None``."""
        for candidate in candidates:
            if candidate in self.files:
                return candidate
        for candidate in candidates:
            found = self._by_path_stem.get(strip_video_extensions(candidate))
            if found:
                return self._best(found)
        for candidate in candidates:
            found = self._by_name_stem.get(
                strip_video_extensions(PurePosixPath(candidate).name))
            if found:
                return self._best(found)
        return None


def resolve_split(split: str, entries: Sequence[VideoEntry], index: Optional[VideoFileLookup],
                  drop_missing: bool = False) -> SplitResult:
    """Map entries to ``{video_file: captions}``, in entry order.

    Without an index the first candidate is taken as the file name. Missing videos
    raise :class:`MissingVideosError` listing them, unless ``drop_missing``; two
    entries that resolve to one file raise :class:`ConversionError`.
    """
    if not entries:
        raise ConversionError(f'split {split!r} has no videos')
    annotation: Dict[str, List[str]] = {}
    owner: Dict[str, str] = {}
    missing: List[VideoEntry] = []
    for entry in entries:
        path = entry.candidates[0] if index is None else index.resolve(entry.candidates)
        if path is None:
            missing.append(entry)
            continue
        if path in owner:
            raise ConversionError(
                f'split {split!r}: videos {owner[path]!r} and {entry.video_id!r} both '
                f'resolve to the file {path}')
        owner[path] = entry.video_id
        annotation[path] = list(entry.captions)
    if missing and not drop_missing:
        raise MissingVideosError(split, index.root if index else '', missing, len(entries))
    if not annotation:
        raise ConversionError(f'split {split!r}: none of its {len(entries)} videos was found')
    return SplitResult(annotation, [entry.video_id for entry in missing])


# -- writing ---------------------------------------------------------------------------
def validate_annotation(annotation: Dict[str, List[str]], name: str) -> None:
    """Check the ``{video_file: [caption, ...]}`` shape the training dataset requires."""
    if not annotation:
        raise ConversionError(f'{name}: no videos to write')
    for video, captions in annotation.items():
        if not isinstance(video, str) or not video.strip():
            raise ConversionError(f'{name}: an entry has an empty video file name')
        if not captions:
            raise ConversionError(f'{name}: video {video!r} has no captions')
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ConversionError(f'{name}: video {video!r}, caption {i} is empty')


def dump_annotation(annotation: Dict[str, List[str]]) -> str:
    """The JSON text written for an annotation: insertion order, one video per line."""
    lines = [f'{json.dumps(video, ensure_ascii=False)}: {json.dumps(captions, ensure_ascii=False)}'
             for video, captions in annotation.items()]
    return '{\n' + ',\n'.join(lines) + '\n}\n'


def write_annotation(path: str, annotation: Dict[str, List[str]]) -> None:
    """Validate and write atomically: a reader never sees a half-written file."""
    validate_annotation(annotation, path)
    text = dump_annotation(annotation)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path), suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='\n') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# -- the converters' command line ------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser, video_root: str,
                         out_dir: str) -> None:
    """The options every converter shares, with the layout the dataset's config expects."""
    parser.add_argument('--video-root', default=video_root,
                        help=f'folder the config reads the videos from (default: {video_root})')
    parser.add_argument('--out-dir', default=out_dir,
                        help=f'where to write the annotation files (default: {out_dir})')
    parser.add_argument('--drop-missing', action='store_true',
                        help='drop videos whose file is missing (and say how many) '
                        'instead of failing')
    parser.add_argument('--no-video-check', action='store_true',
                        help='do not look at the videos; write the default file names')


def converter_main(doc: str, src_help: str, video_root: str, out_dir: str,
                   build_splits: Callable[[str], Dict[str, Sequence[VideoEntry]]],
                   argv: Optional[Sequence[str]] = None) -> int:
    """The whole command line of a converter: ``SRC`` plus the common options."""
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    parser.add_argument('src', help=src_help)
    add_common_arguments(parser, video_root, out_dir)
    args = parser.parse_args(argv)
    return run_conversion(lambda: build_splits(args.src), args)


def run_conversion(build_splits: Callable[[], Dict[str, Sequence[VideoEntry]]],
                   args: argparse.Namespace, out: Optional[TextIO] = None,
                   err: Optional[TextIO] = None) -> int:
    """Parse, resolve every split, then write them all; 0 on success, 1 on an error.

    ``build_splits`` returns ``{output file name: entries}``. Missing videos of every
    split are reported together. Nothing is written unless every split converts, so a
    failed run leaves earlier outputs as they were.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    results: Dict[str, SplitResult] = {}
    missing: List[MissingVideosError] = []
    try:
        splits = build_splits()
        index = None
        if not args.no_video_check:
            index = VideoFileLookup(args.video_root)
            print(f'{len(index)} video files under {args.video_root}', file=out)
        for name, entries in splits.items():
            try:
                results[name] = resolve_split(Path(name).stem, entries, index,
                                              args.drop_missing)
            except MissingVideosError as error:
                missing.append(error)  # report every split's missing videos at once
    except ConversionError as error:
        print(f'error: {error}', file=err)
        return 1
    if missing:
        for error in missing:
            print(f'error: {error}', file=err)
        return 1
    for name, result in results.items():
        path = os.path.join(args.out_dir, name)
        write_annotation(path, result.annotation)
        captions = sum(len(c) for c in result.annotation.values())
        line = f'{path}: {len(result.annotation)} videos, {captions} captions'
        if result.dropped:
            line += (f'; dropped {len(result.dropped)} videos with missing files: '
                     + ', '.join(result.dropped))
        print(line, file=out)
    return 0
