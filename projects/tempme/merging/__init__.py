"""Pure tensor logic of token merging: matching, merging and the merge schedule."""
from .matching import (bipartite_soft_matching, clip_of_token, group_clips, max_merge, merge_source,
                       merge_wavg)
from .schedule import MERGE_FIELDS, LayerPlan, MergeSchedule

__all__ = [
    'bipartite_soft_matching', 'clip_of_token', 'group_clips', 'max_merge', 'merge_source',
    'merge_wavg', 'LayerPlan', 'MergeSchedule', 'MERGE_FIELDS'
]
