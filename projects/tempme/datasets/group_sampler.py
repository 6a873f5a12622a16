"""A training sampler that keeps groups of related videos in the same global batch.

A contrastive loss only learns what tells the videos of a batch apart. With random
batches, videos that differ only subtly (the same events in another order, clips of
one source video) almost never meet, so the model is never asked to separate them.
This sampler shuffles *groups* of videos instead of single items, so every group
lands whole in one global batch and serves as hard negatives for its members.

Each epoch runs in rounds: round ``k`` visits the ``k``-th caption of every video, so a
video appears once per round and a batch rarely holds two captions of one video (which
the loss would treat as negatives of each other).
"""
import json
import os
from typing import Iterator, List, Optional, Sequence

import torch
from mmaction.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler


def load_groups(groups_file: str, groups_key: Optional[str] = None) -> List[List[str]]:
    """Read a list of lists of video names, optionally from a nested key (``a.b.c``)."""
    if not os.path.isfile(groups_file):
        raise FileNotFoundError(f'groups file not found: {groups_file!r}')
    with open(groups_file, encoding='utf-8') as f:
        groups = json.load(f)
    for part in (groups_key.split('.') if groups_key else []):
        if not isinstance(groups, dict) or part not in groups:
            raise KeyError(f'{groups_file!r} has no key {groups_key!r} (missing {part!r})')
        groups = groups[part]
    if not (isinstance(groups, list) and all(isinstance(g, list) for g in groups)):
        raise ValueError(f'{groups_file!r} ({groups_key or "top level"}) is not a list of '
                         'lists of video names')
    return groups


@DATA_SAMPLERS.register_module()
class VideoGroupSampler(Sampler):
    """Shuffle groups of videos, keeping each group contiguous in the sample order.

    Args:
        dataset: a training ``VideoTextRetrievalDataset`` (one item per caption).
        groups_file: JSON with the groups: lists of video names as written in the
            annotation; a relative path is taken from the dataset's ``data_root``.
            Videos in no group form groups of one.
        groups_key: dotted path to the list inside ``groups_file`` (e.g.
            ``splits.train.twin_groups`` in the synthetic benchmark's ``meta.json``).
        shuffle: shuffle groups and rounds each epoch (seeded by seed + epoch).
        seed: base seed; synchronised across ranks when ``None``.
    """

    def __init__(self, dataset, groups_file: str, groups_key: Optional[str] = None,
                 shuffle: bool = True, seed: Optional[int] = None) -> None:
        self.rank, self.world_size = get_dist_info()
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        caption_to_video = dataset.caption_to_video
        if len(dataset) != len(caption_to_video):
            raise ValueError('VideoGroupSampler needs a training dataset (one item per caption)')
        videos = dataset.videos
        index_of = {name: i for i, name in enumerate(videos)}
        group_of = list(range(len(videos)))
        if not os.path.isabs(groups_file):
            groups_file = os.path.join(getattr(dataset, 'data_root', '') or '', groups_file)
        for group_id, names in enumerate(load_groups(groups_file, groups_key)):
            unknown = [n for n in names if n not in index_of]
            if unknown:
                raise KeyError(f'{groups_file!r}: videos not in the dataset: {unknown[:5]}')
            for name in names:
                group_of[index_of[name]] = len(videos) + group_id
        self.rounds = self._rounds(caption_to_video.tolist(), group_of)
        self.num_items = len(dataset)
        self.num_samples = -(-self.num_items // self.world_size)
        self.total_size = self.num_samples * self.world_size

    @staticmethod
    def _rounds(caption_to_video: Sequence[int], group_of: Sequence[int]) -> List[List[list]]:
        """rounds[k] = groups, each a list of the items of its videos' k-th captions."""
        rounds: List[dict] = []
        seen = {}
        for item, video in enumerate(caption_to_video):
            k = seen.get(video, 0)
            seen[video] = k + 1
            if k == len(rounds):
                rounds.append({})
            rounds[k].setdefault(group_of[video], []).append(item)
        return [list(groups.values()) for groups in rounds]

    def _order(self) -> List[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = []
        for groups in self.rounds:
            perm = torch.randperm(len(groups), generator=generator).tolist() \
                if self.shuffle else range(len(groups))
            for g in perm:
                order.extend(groups[g])
        return order

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        order = (order * (self.total_size // len(order) + 1))[:self.total_size]
        # Rank r takes every world_size-th item, so each global batch (the span of
        # consecutive items the ranks consume together) keeps the groups it holds whole.
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
