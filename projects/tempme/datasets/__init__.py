"""Video-text retrieval data: the dataset, caption tokenization and input packing."""
from .frame_cache import FrameCacheError, LoadCachedFrames
from .frame_sampling import FpsGridSample, grid_frame_indices
from .group_sampler import VideoGroupSampler, load_groups
from .rand_augment import ClipRandAugment
from .resize import PILResizeCenterCrop, resize_center_crop
from .transforms import (OpenCLIPTokenize, PackVideoTextInputs, caption_token_count,
                         tokenize_captions, truncated_captions)
from .video_check import VideoProbe, probe_video, probe_videos
from .video_text_dataset import (AnnotationError, VideoCheckError, VideoLoadError,
                                 VideoTextRetrievalDataset, data_prefix_folder, load_video_captions)

__all__ = [
    'AnnotationError', 'OpenCLIPTokenize', 'PackVideoTextInputs', 'VideoTextRetrievalDataset',
    'load_video_captions', 'tokenize_captions', 'VideoGroupSampler', 'load_groups',
    'VideoCheckError', 'VideoLoadError', 'VideoProbe', 'probe_video', 'probe_videos',
    'caption_token_count', 'truncated_captions', 'FpsGridSample', 'grid_frame_indices',
    'ClipRandAugment', 'PILResizeCenterCrop', 'resize_center_crop', 'FrameCacheError',
    'LoadCachedFrames', 'data_prefix_folder'
]
