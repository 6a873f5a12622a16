"""Search your own videos: index maintenance and exact cosine ranking, free of any model."""
from .manifest import VIDEO_EXTENSIONS, FileStat, UpdatePlan, plan_update, scan_videos
from .similarity import normalize_rows, select_top_k, top_k
from .store import IndexBusyError, IndexModelMismatch, VideoIndex

__all__ = [
    'VIDEO_EXTENSIONS', 'FileStat', 'UpdatePlan', 'plan_update', 'scan_videos', 'normalize_rows',
    'select_top_k', 'top_k', 'IndexBusyError', 'IndexModelMismatch', 'VideoIndex'
]
