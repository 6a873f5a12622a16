"""Dataset, tokenizer and packing on tiny generated videos, through the real pipeline."""
import json
import logging
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
from mmaction.registry import DATASETS, TRANSFORMS
from mmaction.structures import ActionDataSample
from mmengine.logging import MMLogger

from projects.tempme.datasets import AnnotationError, OpenCLIPTokenize, VideoTextRetrievalDataset
from tests.conftest import video_text_pipeline

SIZE = 32
CONTEXT = 32
EOT = 49407
SOT = 49406

# Frame k of every video is one flat colour: R encodes k, G its reverse, B a constant.
# cv2 writes BGR and decord returns RGB, so a channel swap would show up as wrong values.


def frame_rgb(k: int) -> np.ndarray:
    return np.array([20 + 10 * k, 230 - 10 * k, 60], dtype=np.uint8)


def write_video(path: Path, num_frames: int, width: int = 64, height: int = 48) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (width, height))
    assert writer.isOpened()
    for k in range(num_frames):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = frame_rgb(k)[::-1]  # BGR
        writer.write(frame)
    writer.release()


def decoded_frame_ids(video: torch.Tensor) -> List[int]:
    """Recover the source frame index of each decoded frame from its R channel."""
    mean_rgb = video.float().mean(dim=(2, 3))  # (T, 3)
    ids = torch.round((mean_rgb[:, 0] - 20) / 10).long()
    expected = torch.stack([torch.from_numpy(frame_rgb(int(k))).float() for k in ids])
    assert torch.allclose(mean_rgb, expected, atol=4), (mean_rgb, expected)
    return ids.tolist()


ANNOTATION: Dict[str, List[str]] = {
    'a.mp4': ['a red square fades', 'colours change slowly'],
    'b.mp4': ['first caption of b', 'second caption of b', 'third caption of b'],
    'short.mp4': ['a very short clip'],
}
FRAMES = {'a.mp4': 20, 'b.mp4': 20, 'short.mp4': 5}
#: np.linspace(0, n - 1, 12, dtype=int): the reference rule for videos under 12 seconds.
EXPECTED_FRAMES = {'a.mp4': [0, 1, 3, 5, 6, 8, 10, 12, 13, 15, 17, 19],
                   'b.mp4': [0, 1, 3, 5, 6, 8, 10, 12, 13, 15, 17, 19],
                   'short.mp4': [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('videos')
    for name, n in FRAMES.items():
        write_video(root / name, n)
    (root / 'ann.json').write_text(json.dumps(ANNOTATION))
    return root


def build(data_dir: Path, test_mode: bool, ann_file: str = 'ann.json') -> VideoTextRetrievalDataset:
    return DATASETS.build(
        dict(
            type='VideoTextRetrievalDataset',
            ann_file=ann_file,
            data_root=str(data_dir),
            data_prefix=dict(video=''),
            pipeline=video_text_pipeline(test_mode),
            test_mode=test_mode))


def test_registry_gives_our_tokenizer() -> None:
    assert TRANSFORMS.get('OpenCLIPTokenize') is OpenCLIPTokenize
    assert DATASETS.get('VideoTextRetrievalDataset') is VideoTextRetrievalDataset


def test_train_mode_one_item_per_caption(data_dir: Path) -> None:
    dataset = build(data_dir, test_mode=False)
    assert len(dataset) == 6
    assert dataset.videos == ['a.mp4', 'b.mp4', 'short.mp4']
    assert dataset.caption_to_video.tolist() == [0, 0, 1, 1, 1, 2]
    assert dataset.caption_to_video.dtype == torch.long
    assert dataset.metainfo['num_videos'] == 3 and dataset.metainfo['num_captions'] == 6

    info = dataset.get_data_info(3)
    assert info['filename'] == str(data_dir / 'b.mp4')
    assert info['video_index'] == 1
    assert info['captions'] == ['second caption of b']
    assert info['caption_indices'] == [3]
    assert info['start_index'] == 0 and info['modality'] == 'RGB'

    for idx in range(len(dataset)):
        item = dataset[idx]
        video, text = item['inputs']['video'], item['inputs']['text']
        assert video.shape == (12, 3, SIZE, SIZE) and video.dtype == torch.uint8
        assert text.shape == (1, CONTEXT) and text.dtype == torch.long
        sample = item['data_samples']
        assert isinstance(sample, ActionDataSample)
        assert sample.caption_indices == [idx]
        assert sample.num_captions == 1
        assert sample.video_index == dataset.caption_to_video[idx].item()
        # The reference has no temporal jitter: training decodes the test frames
        # (20 frames at 10 fps: 2 positions on the 1 fps grid, so 12 spread over all).
        expected = EXPECTED_FRAMES[dataset.videos[sample.video_index]]
        assert decoded_frame_ids(video) == expected


def test_test_mode_one_item_per_video(data_dir: Path) -> None:
    dataset = build(data_dir, test_mode=True)
    assert len(dataset) == 3
    seen: List[int] = []
    for idx in range(len(dataset)):
        item = dataset[idx]
        sample = item['data_samples']
        n_caps = len(ANNOTATION[dataset.videos[idx]])
        assert item['inputs']['video'].shape == (12, 3, SIZE, SIZE)
        assert item['inputs']['text'].shape == (n_caps, CONTEXT)
        assert sample.video_index == idx and sample.num_captions == n_caps
        assert sample.filename == str(data_dir / dataset.videos[idx])
        assert dataset.caption_to_video[sample.caption_indices].tolist() == [idx] * n_caps
        seen.extend(sample.caption_indices)
    assert sorted(seen) == list(range(6)) and len(seen) == 6
    # The captions tokenized for video b are b's own, in annotation order.
    text_b = dataset[1]['inputs']['text']
    tokenize = OpenCLIPTokenize(CONTEXT)
    assert torch.equal(text_b, tokenize(dict(captions=ANNOTATION['b.mp4']))['text'])


def test_test_mode_frames_follow_the_reference_rule_and_are_rgb(data_dir: Path) -> None:
    dataset = build(data_dir, test_mode=True)
    # 20 frames at 10 fps: fewer 1 fps positions than 12, so linspace over all frames.
    assert decoded_frame_ids(dataset[0]['inputs']['video']) == EXPECTED_FRAMES['a.mp4']
    # A 5-frame video still gives 12 frames, repeating them in time order.
    assert decoded_frame_ids(dataset[2]['inputs']['video']) == EXPECTED_FRAMES['short.mp4']


def test_lazy_init_attributes(data_dir: Path) -> None:
    dataset = DATASETS.build(
        dict(type='VideoTextRetrievalDataset', ann_file=str(data_dir / 'ann.json'),
             data_prefix=dict(video=str(data_dir)), pipeline=[], lazy_init=True))
    assert dataset.captions[5] == 'a very short clip'
    assert dataset.get_data_info(0)['filename'] == str(data_dir / 'a.mp4')


def test_tokenize_truncates_keeping_eot_last() -> None:
    records: List[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = MMLogger.get_instance('test_datasets_truncation')
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        tokenize = OpenCLIPTokenize(context_length=8)
        long_caption = 'one two three four five six seven eight nine ten'
        out = tokenize(dict(captions=['a cat', long_caption]))['text']
        assert tokenize.num_truncated == 1
        tokenize(dict(captions=[long_caption, 'a dog']))
        assert tokenize.num_truncated == 2
    finally:
        logger.removeHandler(handler)

    assert out.tolist() == [
        [SOT, 320, 2368, EOT, 0, 0, 0, 0],
        [SOT, 637, 1237, 2097, 2721, 3127, 4093, EOT],
    ]
    assert len(records) == 1 and long_caption in records[0].getMessage()
    # CLIP pools at argmax of the ids: EOT must be the row maximum.
    assert torch.equal(out.argmax(dim=1), torch.tensor([3, 7]))
    # A caption of exactly context_length tokens is not counted as truncated.
    exact = OpenCLIPTokenize(context_length=8)
    exact(dict(captions=['one two three four five six']))
    assert exact.num_truncated == 0


def test_eot_is_row_max_in_dataset_text(data_dir: Path) -> None:
    dataset = build(data_dir, test_mode=True)
    for idx in range(len(dataset)):
        text = dataset[idx]['inputs']['text']
        eot_pos = (text == EOT).int().argmax(dim=1)
        assert torch.equal(text.argmax(dim=1), eot_pos)
        assert (text[:, 0] == SOT).all()


def test_pack_rejects_float_frames() -> None:
    pack = TRANSFORMS.build(dict(type='PackVideoTextInputs'))
    frames = [np.zeros((4, 4, 3), np.float32)]
    with pytest.raises(TypeError, match='uint8'):
        pack(dict(imgs=frames, text=torch.zeros(1, 4, dtype=torch.long)))


BAD_ANNOTATIONS = {
    'malformed': (b'{"x.mp4": ["a caption"],\n "y.mp4": ["b" }', 'line 2, column'),
    'top_level_list': (b'[["x.mp4", "a caption"]]', 'expected a JSON object'),
    'not_a_list': (b'{"x.mp4": "a caption"}', "'x.mp4'"),
    'not_strings': (b'{"ok.mp4": ["fine"], "x.mp4": ["a caption", 3]}', "'x.mp4', caption 1"),
    'no_captions': (b'{"x.mp4": []}', "'x.mp4' has no captions"),
    'blank_caption': (b'{"x.mp4": ["a caption", "   "]}', "'x.mp4', caption 1 is empty"),
    'not_utf8': (b'{"x.mp4": ["caf\xe9"]}', 'not valid UTF-8'),
    'duplicate': (b'{"x.mp4": ["a"], "y.mp4": ["b"], "x.mp4": ["c"]}', "'x.mp4' appears more"),
}


@pytest.mark.parametrize('case', sorted(BAD_ANNOTATIONS))
def test_bad_annotation_names_file_and_entry(tmp_path: Path, case: str) -> None:
    content, expected = BAD_ANNOTATIONS[case]
    ann_file = tmp_path / f'{case}.json'
    ann_file.write_bytes(content)
    with pytest.raises(AnnotationError) as err:
        build(tmp_path, test_mode=True, ann_file=ann_file.name)
    message = str(err.value)
    assert str(ann_file) in message
    assert expected in message


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='missing.json'):
        build(tmp_path, test_mode=False, ann_file='missing.json')
