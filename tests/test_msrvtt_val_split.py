"""The MSR-VTT val split of the clean evaluation protocol, cut from the 9k training split."""
import json

from tests.test_dataset_converters import _msrvtt_src
from tools.data.msrvtt import convert_annotations as msrvtt


def _with_splits(src, splits):
    """Give MSRVTT_data.json's videos the official split of each (as the release does)."""
    data = json.loads((src / 'MSRVTT_data.json').read_text())
    for video in data['videos']:
        video['split'] = splits[video['video_id']]
    (src / 'MSRVTT_data.json').write_text(json.dumps(data))


def test_val_split_is_msrvtt_validation_videos_held_out_of_9k(tmp_path, capsys):
    src = _msrvtt_src(tmp_path / 'msrvtt_data')
    # 9k csv order: video3, video0, video1, video2; 1k-A: video5, video4.
    _with_splits(src, dict(video0='train', video1='validate', video2='train',
                           video3='validate', video4='test', video5='test'))
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--no-video-check', '--out-dir', str(out)]) == 0
    read = lambda name: json.loads((out / name).read_text())  # noqa: E731
    val, rest = read('msrvtt_val.json'), read('msrvtt_train_9k_minus_val.json')
    assert list(val) == ['video3.mp4', 'video1.mp4']  # 9k csv order
    assert val['video1.mp4'] == [f'video1 caption {k}' for k in range(3)]  # every caption
    assert list(rest) == ['video0.mp4', 'video2.mp4']
    assert set(val) | set(rest) == set(read('msrvtt_train_9k.json'))
    assert not set(val) & set(read('msrvtt_test_1k.json'))
    printed = capsys.readouterr().out
    assert 'msrvtt_val.json: 2 videos, 6 captions' in printed
    assert 'msrvtt_train_9k_minus_val.json: 2 videos, 6 captions' in printed


def test_no_val_split_without_the_official_split_names(tmp_path, capsys):
    src = _msrvtt_src(tmp_path / 'msrvtt_data')
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--no-video-check', '--out-dir', str(out)]) == 0
    assert not (out / 'msrvtt_val.json').exists()
    assert 'no val split written' in capsys.readouterr().out


def test_validation_videos_outside_9k_are_an_error(tmp_path, capsys):
    src = _msrvtt_src(tmp_path / 'msrvtt_data')
    _with_splits(src, dict(video0='train', video1='train', video2='train', video3='train',
                           video4='validate', video5='test'))
    out = tmp_path / 'ann'
    assert msrvtt.main([str(src), '--no-video-check', '--out-dir', str(out)]) == 1
    assert 'names 1 validation videos, none of them in the 9k training split' in \
        capsys.readouterr().err
    assert not out.exists()
