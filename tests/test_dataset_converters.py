"""Dataset converters (tools/data/<dataset>/), their shared module and the dataset configs.

Every public format is written here in miniature, exactly as released; the converters
run on it through ``main(argv)`` (and the MSR-VTT one as a command), and the output is
loaded through each config's own pipeline.
"""
import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmaction.registry import DATASETS
from mmengine.config import Config

from projects.tempme.datasets import load_video_captions
from projects.tempme.merging import MergeSchedule
from projects.tempme.models import TempMeRetriever
from projects.tempme_data import conversion as at
from tools.data.activitynet import convert_annotations as activitynet
from tools.data.didemo import convert_annotations as didemo
from tools.data.lsmdc import convert_annotations as lsmdc
from tools.data.msrvtt import convert_annotations as msrvtt
from tools.data.msvd import convert_annotations as msvd

ROOT = Path(__file__).resolve().parents[1]
SOT, EOT = 49406, 49407


# -- tiny inputs in the public formats ----------------------------------------------------
@pytest.fixture(scope='module')
def video_bytes(tmp_path_factory) -> bytes:
    """One 8-frame 32x24 mp4 (mp4v); every test video is a copy under its own name."""
    path = tmp_path_factory.mktemp('clip') / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 8, (32, 24))
    assert writer.isOpened()
    for k in range(8):
        writer.write(np.full((24, 32, 3), 20 * k, np.uint8))
    writer.release()
    return path.read_bytes()


def _videos(root: Path, names, content: bytes) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _csv(path: Path, header, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _msrvtt_src(src: Path) -> Path:
    src.mkdir()
    sentences = [dict(caption=f'{v} caption {k}', video_id=v, sen_id=10 * k + i)
                 for k in range(3) for i, v in enumerate(f'video{j}' for j in range(6))]
    videos = [dict(video_id=f'video{j}', category=0, url='u') for j in range(6)]
    (src / 'MSRVTT_data.json').write_text(json.dumps(dict(info={}, videos=videos,
                                                          sentences=sentences)))
    _csv(src / 'MSRVTT_train.9k.csv', ['video_id'], [[f'video{j}'] for j in (3, 0, 1, 2)])
    _csv(src / 'MSRVTT_train.7k.csv', ['video_id'], [['video1'], ['video0']])
    _csv(src / 'MSRVTT_JSFUSION_test.csv', ['key', 'vid_key', 'video_id', 'sentence'],
         [['ret0', 'msr9', 'video5', 'a man is singing'],
          ['ret1', 'msr8', 'video4', 'a cat plays piano']])
    return src


@pytest.fixture
def msrvtt_data(tmp_path, video_bytes):
    src = _msrvtt_src(tmp_path / 'msrvtt_data')
    videos = _videos(tmp_path / 'videos', [f'video{j}.mp4' for j in range(6)], video_bytes)
    return src, videos


def _read(path: Path):
    return json.loads(path.read_text())


# -- MSR-VTT -------------------------------------------------------------------------------
def test_msrvtt_splits_captions_and_order(msrvtt_data, tmp_path, capsys):
    src, videos = msrvtt_data
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    train = _read(out / 'msrvtt_train_9k.json')
    assert list(train) == ['video3.mp4', 'video0.mp4', 'video1.mp4', 'video2.mp4']
    assert train['video3.mp4'] == [f'video3 caption {k}' for k in range(3)]
    assert list(_read(out / 'msrvtt_train_7k.json')) == ['video1.mp4', 'video0.mp4']
    assert _read(out / 'msrvtt_test_1k.json') == {
        'video5.mp4': ['a man is singing'], 'video4.mp4': ['a cat plays piano']}
    assert 'msrvtt_test_1k.json: 2 videos, 2 captions' in capsys.readouterr().out
    assert len(load_video_captions(str(out / 'msrvtt_train_9k.json'))) == 4


def test_msrvtt_without_7k_csv_writes_9k_and_test_only(msrvtt_data, tmp_path):
    src, videos = msrvtt_data
    (src / 'MSRVTT_train.7k.csv').unlink()
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ['msrvtt_test_1k.json',
                                                     'msrvtt_train_9k.json']


def test_cli_output_is_byte_identical_to_main_and_across_runs(msrvtt_data, tmp_path):
    src, videos = msrvtt_data
    outs = [tmp_path / 'a', tmp_path / 'b', tmp_path / 'c']
    for out in outs[:2]:
        assert msrvtt.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    run = subprocess.run(
        [sys.executable, 'tools/data/msrvtt/convert_annotations.py', str(src),
         '--video-root', str(videos), '--out-dir', str(outs[2])],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for name in ('msrvtt_train_9k.json', 'msrvtt_train_7k.json', 'msrvtt_test_1k.json'):
        first = (outs[0] / name).read_bytes()
        assert first.endswith(b'}\n')
        assert all((out / name).read_bytes() == first for out in outs[1:])


def test_missing_videos_are_listed_and_nothing_is_written(msrvtt_data, tmp_path, capsys):
    src, videos = msrvtt_data
    (videos / 'video5.mp4').unlink()
    (videos / 'video2.mp4').unlink()
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 1
    err = capsys.readouterr().err
    assert "split 'msrvtt_train_9k': 1 of 4 videos are missing" in err
    assert 'video2 (looked for video2.mp4)' in err
    assert "split 'msrvtt_test_1k': 1 of 2 videos are missing" in err and 'video5' in err
    assert not out.exists()  # no split is written when one fails


def test_drop_missing_drops_and_counts(msrvtt_data, tmp_path, capsys):
    src, videos = msrvtt_data
    (videos / 'video5.mp4').unlink()
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--video-root', str(videos), '--out-dir', str(out),
                        '--drop-missing']) == 0
    assert list(_read(out / 'msrvtt_test_1k.json')) == ['video4.mp4']
    assert 'msrvtt_test_1k.json: 1 videos, 1 captions; dropped 1 videos with missing ' \
           'files: video5' in capsys.readouterr().out


def test_no_video_check_writes_default_names(msrvtt_data, tmp_path):
    src, _ = msrvtt_data
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--no-video-check', '--out-dir', str(out),
                        '--video-root', str(tmp_path / 'nowhere')]) == 0
    assert list(_read(out / 'msrvtt_test_1k.json')) == ['video5.mp4', 'video4.mp4']


def test_malformed_inputs_name_file_and_entry(msrvtt_data, tmp_path, capsys):
    src, videos = msrvtt_data
    args = [str(src), '--video-root', str(videos), '--out-dir', str(tmp_path / 'ann')]
    data = _read(src / 'MSRVTT_data.json')
    data['sentences'][4]['caption'] = '   '
    (src / 'MSRVTT_data.json').write_text(json.dumps(data))
    assert msrvtt.main(args) == 1
    assert 'MSRVTT_data.json: sentences[4] (video video4): empty caption' in capsys.readouterr().err

    _csv(src / 'MSRVTT_JSFUSION_test.csv', ['key', 'video_id'], [['ret0', 'video5']])
    with pytest.raises(at.ConversionError, match=r"JSFUSION_test.csv: missing column"):
        msrvtt.test_entries(str(src / 'MSRVTT_JSFUSION_test.csv'))
    (src / 'MSRVTT_data.json').write_text('{"sentences": [')
    assert msrvtt.main(args) == 1
    assert 'MSRVTT_data.json: malformed JSON at line 1' in capsys.readouterr().err


# -- DiDeMo --------------------------------------------------------------------------------
def _moment(video, times, description):
    return dict(video=video, times=times, description=description, annotation_id=0,
                num_segments=6, dl_link='x', context=[0, 0], reference_description=None)


def _didemo_src(src: Path) -> Path:
    src.mkdir()
    train = [_moment('a.mov', [[3, 3], [3, 4], [2, 3]], 'third thing.'),   # mean start 2.67
             _moment('b.3gp', [[1, 1]], 'b only.'),
             _moment('a.mov', [[0, 0], [0, 1], [1, 1]], 'first thing.'),    # 0.33
             _moment('a.mov', [[2, 2], [2, 2], [2, 3]], 'second thing.'),   # 2.0
             _moment('a.mov', [[2, 2], [2, 2], [2, 2]], 'also second.')]    # 2.0: tie
    (src / 'train_data.json').write_text(json.dumps(train))
    (src / 'val_data.json').write_text(json.dumps([_moment('c.avi', [[0, 1]], 'val.')]))
    (src / 'test_data.json').write_text(json.dumps(
        [_moment('d.mp4', [[4, 5]], 'later.'), _moment('d.mp4', [[0, 0]], 'earlier.')]))
    for split, names in (('train', 'a.mov\nb.3gp\n'), ('val', 'c.avi\n'), ('test', 'd.mp4\n')):
        (src / f'{split}_list.txt').write_text(names)
    return src


def test_didemo_paragraphs_in_time_order_and_extensions_resolved(tmp_path, video_bytes):
    src = _didemo_src(tmp_path / 'raw')
    # a.mov was transcoded to mp4; b keeps its 3gp; c.avi has both an avi and an mp4 copy.
    videos = _videos(tmp_path / 'videos', ['a.mp4', 'b.3gp', 'c.avi', 'c.mp4', 'd.mp4'],
                     video_bytes)
    out = tmp_path / 'ann'
    assert didemo.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert _read(out / 'didemo_train.json') == {
        'a.mp4': ['first thing. second thing. also second. third thing.'],
        'b.3gp': ['b only.']}
    assert _read(out / 'didemo_val.json') == {'c.avi': ['val.']}  # the named file first
    assert _read(out / 'didemo_test.json') == {'d.mp4': ['earlier. later.']}


def test_cli_exits_non_zero_and_lists_missing_videos(tmp_path, video_bytes):
    src = _didemo_src(tmp_path / 'raw')
    videos = _videos(tmp_path / 'videos', ['a.mp4', 'c.avi'], video_bytes)
    run = subprocess.run(
        [sys.executable, 'tools/data/didemo/convert_annotations.py', str(src),
         '--video-root', str(videos), '--out-dir', str(tmp_path / 'ann')],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "split 'didemo_train': 1 of 2 videos are missing" in run.stderr
    assert 'b.3gp (looked for b.3gp)' in run.stderr
    assert "split 'didemo_test': 1 of 1 videos are missing" in run.stderr  # all at once
    assert 'didemo_val' not in run.stderr
    assert not (tmp_path / 'ann').exists()


def test_didemo_keeps_only_the_videos_of_the_split_lists(tmp_path, video_bytes, capsys):
    src = _didemo_src(tmp_path / 'raw')
    (src / 'train_list.txt').write_text('a.mov\n')  # b.3gp is annotated but not listed
    videos = _videos(tmp_path / 'videos', ['a.mp4', 'b.3gp', 'c.avi', 'd.mp4'], video_bytes)
    out = tmp_path / 'ann'
    assert didemo.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert list(_read(out / 'didemo_train.json')) == ['a.mp4']
    assert 'didemo_train.json: 1 annotated videos are not in' in capsys.readouterr().err
    assert didemo.main([str(src), '--video-root', str(videos), '--out-dir', str(out),
                        '--no-split-lists']) == 0
    assert list(_read(out / 'didemo_train.json')) == ['a.mp4', 'b.3gp']
    (src / 'test_list.txt').unlink()
    assert didemo.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 1
    assert 'test_list.txt: split list not found' in capsys.readouterr().err


@pytest.mark.parametrize('on_disk', ['abc..mp4', 'abc.mp4'])
def test_didemo_names_ending_in_a_bare_dot_are_found(tmp_path, video_bytes, on_disk):
    src = _didemo_src(tmp_path / 'raw')
    (src / 'val_data.json').write_text(json.dumps([_moment('abc.', [[0, 1]], 'val.')]))
    (src / 'val_list.txt').write_text('abc.\n')
    videos = _videos(tmp_path / 'videos', ['a.mp4', 'b.3gp', 'd.mp4', on_disk], video_bytes)
    out = tmp_path / 'ann'
    assert didemo.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert _read(out / 'didemo_val.json') == {on_disk: ['val.']}


def test_missing_video_root_points_to_the_options(tmp_path, capsys):
    src = _didemo_src(tmp_path / 'raw')
    assert didemo.main([str(src), '--video-root', str(tmp_path / 'nope')]) == 1
    err = capsys.readouterr().err
    assert 'is not a directory' in err and '--video-root' in err and '--no-video-check' in err


def test_non_utf8_text_inputs_name_the_file_and_line(tmp_path):
    csv_path = tmp_path / 'MSRVTT_train.9k.csv'
    csv_path.write_bytes(b'video_id\nvideo1\nvideo\xe92\n')
    with pytest.raises(at.ConversionError,
                       match=rf'{csv_path}, line 3: not valid UTF-8'):
        at.read_csv_rows(str(csv_path), ['video_id'])
    tsv_path = tmp_path / 'LSMDC16_annos_training.csv'
    tsv_path.write_bytes(b'a\tb\n\xff\tc\n')
    with pytest.raises(at.ConversionError,
                       match=rf'{tsv_path}, line 2: not valid UTF-8'):
        at.read_tsv_rows(str(tsv_path), 2)


def test_didemo_malformed_times_name_the_entry(tmp_path):
    src = _didemo_src(tmp_path / 'raw')
    (src / 'val_data.json').write_text(json.dumps([_moment('c.avi', [[0]], 'val.')]))
    with pytest.raises(at.ConversionError,
                       match=r"val_data.json: entry 0 \(video c.avi\): malformed time \[0\]"):
        didemo.build_splits(str(src))


# -- ActivityNet ---------------------------------------------------------------------------
def _activitynet_src(src: Path) -> Path:
    src.mkdir()
    train = {
        'v_AAA': dict(duration=50.0, timestamps=[[20.5, 30], [0, 10.2], [10.0, 21]],
                      sentences=[' Third, he jumps.', 'A man runs. ', ' He stops.']),
        'v_BBB': dict(duration=9.0, timestamps=[[0, 9]], sentences=['A dog barks.']),
    }
    val = {'v_CCC': dict(duration=5.0, timestamps=[[2, 5], [0, 2]],
                         sentences=['Then two.', 'One.'])}
    (src / 'train.json').write_text(json.dumps(train))
    (src / 'val_1.json').write_text(json.dumps(val))
    return src


def test_activitynet_paragraphs_sorted_by_start(tmp_path, video_bytes):
    src = _activitynet_src(tmp_path / 'raw')
    # CLIP4Clip's copies drop the v_ prefix; some downloads are mkv.
    videos = _videos(tmp_path / 'videos', ['v_AAA.mp4', 'BBB.mkv', 'v_CCC.mp4'], video_bytes)
    out = tmp_path / 'ann'
    assert activitynet.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert _read(out / 'activitynet_train.json') == {
        'v_AAA.mp4': ['A man runs. He stops. Third, he jumps.'],
        'BBB.mkv': ['A dog barks.']}
    assert _read(out / 'activitynet_val1.json') == {'v_CCC.mp4': ['One. Then two.']}


def test_activitynet_count_mismatch_names_file_and_video(tmp_path):
    src = _activitynet_src(tmp_path / 'raw')
    data = _read(src / 'val_1.json')
    data['v_CCC']['sentences'].append('extra')
    (src / 'val_1.json').write_text(json.dumps(data))
    with pytest.raises(at.ConversionError,
                       match=r'val_1.json: video v_CCC: 2 timestamps but 3 sentences'):
        activitynet.build_splits(str(src))


# -- LSMDC ---------------------------------------------------------------------------------
CLIPS = ['0001_American_Beauty_00.00.51.926-00.00.54.129',
         '0001_American_Beauty_00.01.00.000-00.01.02.500',
         '3001_21_JUMP_STREET_00.00.54.107-00.00.56.225',
         '1004_Juno_00.00.32.849-00.00.35.802']


def _lsmdc_src(src: Path) -> Path:
    src.mkdir()

    def tsv(name, rows):
        (src / name).write_text(
            ''.join('\t'.join([clip, '1.0', '2.0', '1.0', '2.0', text]) + '\n'
                    for clip, text in rows))

    tsv('LSMDC16_annos_training.csv', [(CLIPS[1], 'SOMEONE opens a door.'),
                                       (CLIPS[0], 'SOMEONE looks up.'),
                                       (CLIPS[1], 'He walks in.')])
    tsv('LSMDC16_annos_val.csv', [(CLIPS[2], 'They run.')])
    tsv('LSMDC16_challenge_1000_publictect.csv', [(CLIPS[3], 'She smiles.')])
    return src


def test_lsmdc_clips_in_movie_folders(tmp_path, video_bytes):
    assert lsmdc.movie_folder(CLIPS[2]) == '3001_21_JUMP_STREET'
    src = _lsmdc_src(tmp_path / 'raw')
    names = [f'{lsmdc.movie_folder(c)}/{c}.avi' for c in CLIPS[:3]] + [f'{CLIPS[3]}.avi']
    videos = _videos(tmp_path / 'videos', names, video_bytes)  # the last one flat
    out = tmp_path / 'ann'
    assert lsmdc.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    assert _read(out / 'lsmdc_train.json') == {
        f'0001_American_Beauty/{CLIPS[1]}.avi': ['SOMEONE opens a door.', 'He walks in.'],
        f'0001_American_Beauty/{CLIPS[0]}.avi': ['SOMEONE looks up.']}
    assert list(_read(out / 'lsmdc_val.json')) == [f'3001_21_JUMP_STREET/{CLIPS[2]}.avi']
    assert list(_read(out / 'lsmdc_test_1k.json')) == [f'{CLIPS[3]}.avi']


def test_lsmdc_short_line_names_file_and_line(tmp_path):
    src = _lsmdc_src(tmp_path / 'raw')
    with open(src / 'LSMDC16_annos_val.csv', 'a') as f:
        f.write(f'{CLIPS[0]}\t1.0\t2.0\tno sentence\n')
    with pytest.raises(at.ConversionError,
                       match=r'LSMDC16_annos_val.csv, line 2: expected 6 tab-separated fields, '
                       r'got 4'):
        lsmdc.build_splits(str(src))


# -- MSVD ----------------------------------------------------------------------------------
def _msvd_src(src: Path, ids) -> Path:
    src.mkdir()
    captions = {vid: [['a', 'man', 'is', f'{vid}ing'], ['someone', 'does', vid]] for vid in ids}
    (src / 'raw-captions.pkl').write_bytes(pickle.dumps(captions))
    (src / 'train_list.txt').write_text('\n'.join(ids[:3]) + '\n')
    (src / 'val_list.txt').write_text(ids[3] + '\n')
    (src / 'test_list.txt').write_text('\n'.join(ids[4:]) + '\n\n')
    return src


MSVD_IDS = ['-4wsuPCjDBc_5_15', 'zv2RIbUsnSw_159_170', 'abc_1_2', 'val_3_4', 'tst_1_9', 'tst_2_8']


def test_msvd_splits_and_token_joining(tmp_path, video_bytes):
    src = _msvd_src(tmp_path / 'msvd_data', MSVD_IDS)
    videos = _videos(tmp_path / 'videos', [f'{v}.avi' for v in MSVD_IDS], video_bytes)
    out = tmp_path / 'ann'
    assert msvd.main([str(src), '--video-root', str(videos), '--out-dir', str(out)]) == 0
    train = _read(out / 'msvd_train.json')
    assert list(train) == [f'{v}.avi' for v in MSVD_IDS[:3]]
    assert train['abc_1_2.avi'] == ['a man is abc_1_2ing', 'someone does abc_1_2']
    assert [len(_read(out / f'msvd_{s}.json')) for s in ('val', 'test')] == [1, 2]


class _RunsCode:
    def __reduce__(self):
        return (print, ('this must never run', ))


@pytest.mark.parametrize('payload', [
    _RunsCode(),
    {'v': [['a']], 'extra': __import__('collections').OrderedDict(a=1)},
    np.zeros(2),
])
def test_msvd_pickle_refuses_anything_but_builtins(tmp_path, payload, capsys):
    path = tmp_path / 'raw-captions.pkl'
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(at.ConversionError, match='refusing to load'):
        at.load_pickle_safely(str(path))
    assert 'this must never run' not in capsys.readouterr().out


def test_safe_pickle_reads_builtin_containers_and_python2_text(tmp_path):
    data = {'v': [['a', 'b']], 't': ('x', 1, 2.5, True, None), 's': {1, 2},
            'f': frozenset({'z'})}
    path = tmp_path / 'ok.pkl'
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        assert at.load_pickle_safely(str(path)) == data
    # Python 2 protocol-2 pickle of {'v': [['caf\xc3\xa9']]} (str is bytes there).
    path.write_bytes(b"\x80\x02}q\x00U\x01vq\x01]q\x02]q\x03U\x05caf\xc3\xa9q\x04aas.")
    assert at.load_pickle_safely(str(path)) == {'v': [['caf\u00e9']]}


# -- the shared module -----------------------------------------------------------------------
def test_join_in_time_order_is_stable():
    segments = [(5.0, 'c'), (0.0, 'a'), (2.0, 'b1'), (2.0, 'b2')]
    assert at.join_in_time_order(segments) == 'a b1 b2 c'


def test_strip_video_extensions_keeps_dotted_ids():
    assert at.strip_video_extensions('m/1004_Juno_00.00.32.849-00.00.35.802.avi') == \
        'm/1004_Juno_00.00.32.849-00.00.35.802'
    assert at.strip_video_extensions('x.mov.mp4') == 'x'
    assert at.strip_video_extensions('.mp4') == '.mp4'


def test_video_index_prefers_exact_then_folder_then_extension_order(tmp_path):
    root = tmp_path / 'v'
    for name in ['a.avi', 'a.mp4', 'sub/b.mkv', 'other/b.webm', 'sub/c.mov.mp4', 'x.txt']:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b'')
    index = at.VideoFileLookup(str(root))
    assert len(index) == 5  # x.txt is not a video
    assert index.resolve(['a.avi']) == 'a.avi'
    assert index.resolve(['a.mov']) == 'a.mp4'
    assert index.resolve(['sub/b.avi']) == 'sub/b.mkv'  # same folder before elsewhere
    assert index.resolve(['b.avi']) == 'other/b.webm'  # anywhere: .webm before .mkv
    assert index.resolve(['c.mov']) == 'sub/c.mov.mp4'
    assert index.resolve(['nope.mp4', 'a.mp4']) == 'a.mp4'
    assert index.resolve(['nope.mp4']) is None


def test_two_ids_resolving_to_one_file_is_an_error(tmp_path):
    (tmp_path / 'a.mp4').write_bytes(b'')
    entries = [at.VideoEntry('a.mov', ('a.mov', ), ['x']),
               at.VideoEntry('a.avi', ('a.avi', ), ['y'])]
    with pytest.raises(at.ConversionError, match="'a.mov' and 'a.avi' both resolve"):
        at.resolve_split('s', entries, at.VideoFileLookup(str(tmp_path)))


def test_write_annotation_is_atomic_and_validated(tmp_path):
    path = tmp_path / 'new' / 'ann.json'
    annotation = {'b.mp4': ['caf\u00e9 "quoted"'], 'a.mp4': ['x', 'y']}
    at.write_annotation(str(path), annotation)
    assert list(json.loads(path.read_text(encoding='utf-8'))) == ['b.mp4', 'a.mp4']
    assert load_video_captions(str(path)) == annotation
    assert [p.name for p in path.parent.iterdir()] == ['ann.json']  # no temporary left
    before = path.read_bytes()
    with pytest.raises(at.ConversionError, match=r"video 'a.mp4', caption 1 is empty"):
        at.write_annotation(str(path), {'a.mp4': ['x', ' ']})
    assert path.read_bytes() == before


# -- configs ---------------------------------------------------------------------------------
CONFIGS = {
    # config: (frames, tokens, annotation files of train / val / test)
    'configs/tempme_msrvtt_7k.py': (12, 32, ('msrvtt_train_7k', 'msrvtt_test_1k',
                                             'msrvtt_test_1k')),
    'configs/tempme_didemo.py': (64, 64, ('didemo_train', 'didemo_val', 'didemo_test')),
    'configs/tempme_activitynet.py': (64, 64, ('activitynet_train', 'activitynet_val1',
                                               'activitynet_val1')),
    'configs/tempme_lsmdc.py': (12, 32, ('lsmdc_train', 'lsmdc_val', 'lsmdc_test_1k')),
    'configs/tempme_msvd.py': (12, 32, ('msvd_train', 'msvd_val', 'msvd_test')),
}


def _of_type(pipeline, name):
    return next(t for t in pipeline if t['type'] == name)


@pytest.mark.parametrize('path', sorted(CONFIGS))
def test_config_frames_tokens_schedule_and_files(path):
    frames, tokens, files = CONFIGS[path]
    cfg = Config.fromfile(ROOT / path)
    enc = cfg.model.video_encoder
    assert enc.num_frames == frames
    schedule = MergeSchedule(12, enc.num_frames, 50, **MergeSchedule.settings_of(enc))
    assert schedule.output_clips == 1
    assert schedule.output_tokens_per_video == {12: 97, 64: 500}[frames]
    for split, name in zip(('train', 'val', 'test'), files):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.ann_file == f'annotations/{name}.json'
        assert dataset.get('test_mode', False) is (split != 'train')
        assert _of_type(dataset.pipeline, 'FpsGridSample').clip_len == frames
        assert _of_type(dataset.pipeline, 'OpenCLIPTokenize').context_length == tokens
        assert cfg[f'{split}_dataloader'].batch_size == 16
    assert cfg.train_cfg.max_epochs == 5


def test_64_frame_schedule_trainable_parameters():
    cfg = Config.fromfile(ROOT / 'configs/tempme_didemo.py').model.to_dict()
    cfg.pop('type')
    cfg['clip']['weights'] = None  # the geometry is what counts
    model = TempMeRetriever(**cfg)
    temporal = [p.shape[0] for n, p in model.named_parameters() if 'temporal_embedding' in n]
    assert temporal == [64, 16, 4]  # one per clip entering ClipMe layers 8, 9, 10
    # 12 frames: 507,648 = LoRA 491,520 + (12 + 6 + 3) x 768; here 84 temporal vectors.
    assert model.parameter_counts()['trainable'] == 491_520 + 84 * 768 == 556_032


def _small(pipeline, size=32):
    out = []
    for t in pipeline:
        t = dict(t)
        if t['type'] == 'PILResizeCenterCrop':
            t['size'] = size
        out.append(t)
    return out


def _prepare(name, tmp_path, video_bytes):
    """Raw files + videos in the layout of the config, converted into data_root/annotations."""
    root = tmp_path / name
    if name == 'msrvtt':
        src = _msrvtt_src(tmp_path / 'raw')
        videos = _videos(root / 'videos/all', [f'video{j}.mp4' for j in range(6)], video_bytes)
        conv = msrvtt
    elif name == 'didemo':
        src = _didemo_src(tmp_path / 'raw')
        videos = _videos(root / 'videos', ['a.mov', 'b.3gp', 'c.avi', 'd.mp4'], video_bytes)
        conv = didemo
    elif name == 'activitynet':
        src = _activitynet_src(tmp_path / 'raw')
        videos = _videos(root / 'videos', ['v_AAA.mp4', 'v_BBB.mp4', 'v_CCC.mp4'], video_bytes)
        conv = activitynet
    elif name == 'lsmdc':
        src = _lsmdc_src(tmp_path / 'raw')
        videos = _videos(root / 'videos', [f'{lsmdc.movie_folder(c)}/{c}.avi' for c in CLIPS],
                         video_bytes)
        conv = lsmdc
    else:
        src = _msvd_src(tmp_path / 'raw', MSVD_IDS)
        videos = _videos(root / 'videos', [f'{v}.avi' for v in MSVD_IDS], video_bytes)
        conv = msvd
    assert conv.main([str(src), '--video-root', str(videos),
                      '--out-dir', str(root / 'annotations')]) == 0
    return root


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_converted_data_loads_through_the_config_pipeline(config, tmp_path, video_bytes):
    frames, tokens, _ = CONFIGS[config]
    cfg = Config.fromfile(ROOT / config)
    name = Path(cfg.test_dataloader.dataset.data_root).name
    root = _prepare(name, tmp_path, video_bytes)
    for split in ('train', 'test'):
        ds_cfg = cfg[f'{split}_dataloader'].dataset.to_dict()
        ds_cfg.update(data_root=str(root), pipeline=_small(ds_cfg['pipeline']))
        dataset = DATASETS.build(ds_cfg)
        item = dataset[0]
        video, text = item['inputs']['video'], item['inputs']['text']
        assert video.shape == (frames, 3, 32, 32) and video.dtype == torch.uint8
        assert text.shape == (len(dataset.get_data_info(0)['captions']), tokens)
        assert text[0, 0] == SOT and EOT in text[0].tolist()
    assert len(dataset) == len(json.loads(Path(root, ds_cfg['ann_file']).read_text()))


def test_converters_write_what_the_configs_read():
    expected = {
        'msrvtt': {'msrvtt_train_9k.json', 'msrvtt_train_7k.json', 'msrvtt_test_1k.json'},
        'didemo': set(didemo.SPLITS), 'activitynet': set(activitynet.SPLITS),
        'lsmdc': set(lsmdc.SPLITS), 'msvd': set(msvd.SPLITS)}
    read = {'msrvtt': set()}
    for path in ['configs/tempme_msrvtt.py', *CONFIGS]:
        cfg = Config.fromfile(ROOT / path)
        name = Path(cfg.train_dataloader.dataset.data_root).name
        for split in ('train', 'val', 'test'):
            read.setdefault(name, set()).add(
                Path(cfg[f'{split}_dataloader'].dataset.ann_file).name)
    assert read == expected


def test_readme_exists_and_names_every_converter():
    text = (ROOT / 'tools/data/README.md').read_text()
    for name in ('msrvtt', 'didemo', 'activitynet', 'lsmdc', 'msvd'):
        assert f'tools/data/{name}/convert_annotations.py' in text
    assert 'tools/data/make_synthetic.py' in text


def test_data_tools_import_without_the_training_stack():
    """Converters and the generator answer --help at once: importing them loads neither
    torch nor mmengine (the training stack takes seconds to import)."""
    modules = ['projects.tempme_data.conversion', 'projects.tempme_data.synthetic',
               'tools.data.make_synthetic'] + [
        f'tools.data.{name}.convert_annotations'
        for name in ('msrvtt', 'msvd', 'lsmdc', 'didemo', 'activitynet')]
    code = ('import importlib, sys\n'
            f'for name in {modules!r}:\n'
            '    importlib.import_module(name)\n'
            'print(sorted({"torch", "mmengine", "mmaction"} & set(sys.modules)))')
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == '[]'
    help_run = subprocess.run([sys.executable, 'tools/data/msvd/convert_annotations.py', '--help'],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and '--video-root' in help_run.stdout
