"""VideoGroupSampler: groups land whole in one global batch, each video once per round."""
import json

import pytest

from projects.tempme.datasets import VideoGroupSampler, VideoTextRetrievalDataset


@pytest.fixture
def dataset(tmp_path):
    ann = {f'v{i}.mp4': [f'caption {i} a', f'caption {i} b'] for i in range(12)}
    (tmp_path / 'train.json').write_text(json.dumps(ann))
    groups = {'splits': {'train': {'twin_groups': [['v0.mp4', 'v7.mp4'],
                                                   ['v2.mp4', 'v3.mp4', 'v9.mp4', 'v11.mp4']]}}}
    (tmp_path / 'meta.json').write_text(json.dumps(groups))
    return VideoTextRetrievalDataset(ann_file='train.json', data_root=str(tmp_path),
                                     pipeline=[])


def _sampler(dataset, **kwargs):
    return VideoGroupSampler(dataset, groups_file='meta.json',
                             groups_key='splits.train.twin_groups', seed=0, **kwargs)


def test_groups_are_contiguous_and_rounds_visit_each_video_once(dataset):
    sampler = _sampler(dataset)
    order = list(sampler)
    assert sorted(order) == list(range(24)) and len(sampler) == 24
    videos = [dataset.caption_to_video[i].item() for i in order]
    first_round, second_round = videos[:12], videos[12:]
    assert sorted(first_round) == sorted(second_round) == list(range(12))
    for group in ({0, 7}, {2, 3, 9, 11}):
        for round_videos in (first_round, second_round):
            positions = [round_videos.index(v) for v in group]
            assert max(positions) - min(positions) == len(group) - 1
    # Round k holds the k-th caption of each video.
    assert all(i % 2 == 0 for i in order[:12]) and all(i % 2 == 1 for i in order[12:])


def test_epochs_reshuffle_deterministically(dataset):
    sampler = _sampler(dataset)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    again = _sampler(dataset)
    again.set_epoch(1)
    assert list(again) == second


def test_ranks_split_each_global_batch(dataset, monkeypatch):
    single = list(_sampler(dataset))
    orders = []
    for rank in (0, 1):
        monkeypatch.setattr('projects.tempme.datasets.group_sampler.get_dist_info',
                            lambda rank=rank: (rank, 2))
        orders.append(list(_sampler(dataset)))
    # Interleaving the ranks' streams gives back the single-process order.
    assert [i for pair in zip(*orders) for i in pair] == single


def test_bad_groups_are_reported(dataset, tmp_path):
    (tmp_path / 'bad.json').write_text(json.dumps([['v0.mp4', 'missing.mp4']]))
    with pytest.raises(KeyError, match='missing.mp4'):
        VideoGroupSampler(dataset, groups_file='bad.json', seed=0)
    with pytest.raises(KeyError, match='nope'):
        VideoGroupSampler(dataset, groups_file='meta.json', groups_key='splits.nope', seed=0)
    with pytest.raises(FileNotFoundError, match='absent.json'):
        VideoGroupSampler(dataset, groups_file='absent.json', seed=0)
