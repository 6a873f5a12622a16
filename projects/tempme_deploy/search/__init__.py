"""Search your own videos: index maintenance, windows and moments, exact and approximate
cosine ranking, free of any model."""
from .manifest import VIDEO_EXTENSIONS, FileStat, UpdatePlan, plan_update, scan_videos
from .moments import Moment, Window, WindowSettings, plan_windows, suppress_overlaps
from .sharding import shard_by_duration
from .similarity import normalize_rows, select_top_k, top_k
from .store import IndexBusyError, IndexModelMismatch, VideoIndex

__all__ = [
    'VIDEO_EXTENSIONS', 'FileStat', 'UpdatePlan', 'plan_update', 'scan_videos', 'Moment', 'Window',
    'WindowSettings', 'plan_windows', 'suppress_overlaps', 'shard_by_duration', 'normalize_rows',
    'select_top_k', 'top_k', 'IndexBusyError', 'IndexModelMismatch', 'VideoIndex'
]
