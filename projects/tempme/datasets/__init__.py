"""Video-text retrieval data: the dataset, caption tokenization and input packing."""
from .group_sampler import VideoGroupSampler, load_groups
from .transforms import OpenCLIPTokenize, PackVideoTextInputs, tokenize_captions
from .video_text_dataset import AnnotationError, VideoTextRetrievalDataset, load_video_captions

__all__ = [
    'AnnotationError', 'OpenCLIPTokenize', 'PackVideoTextInputs', 'VideoTextRetrievalDataset',
    'load_video_captions', 'tokenize_captions', 'VideoGroupSampler', 'load_groups'
]
