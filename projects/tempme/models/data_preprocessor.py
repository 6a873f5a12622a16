"""Batches video-text samples and normalises frames with CLIP's mean and std."""
from typing import Dict, Optional, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.model import BaseDataPreprocessor
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


@MODELS.register_module()
class RetrievalDataPreprocessor(BaseDataPreprocessor):
    """Stack videos, concatenate captions and index each caption's video.

    Takes ``inputs`` as collated by ``pseudo_collate``: ``dict(video=[uint8 (T, 3, H, W),
    ...], text=[(n, L), ...])``, and gives ``dict(video=float (B, T, 3, H, W),
    text=(sum n, L), caption_to_video=(sum n,))``. An optional ``video_mask=[(T,), ...]``
    (1 for a real frame, 0 for padding) is stacked to (B, T) and passed on.

    Args:
        mean, std: per-channel statistics of pixels in [0, 1]; ``None`` for both takes
            videos that are already normalised floats (recorded reference inputs).
    """

    def __init__(self, mean: Optional[Sequence[float]] = OPENAI_DATASET_MEAN,
                 std: Optional[Sequence[float]] = OPENAI_DATASET_STD) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError('RetrievalDataPreprocessor: give both mean and std, or neither')
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer('mean', torch.tensor(mean).view(1, 1, 3, 1, 1) * 255, False)
            self.register_buffer('std', torch.tensor(std).view(1, 1, 3, 1, 1) * 255, False)

    def forward(self, data: dict, training: bool = False) -> Dict[str, object]:
        data = self.cast_data(data)
        inputs = data['inputs']
        video = torch.stack(inputs['video']).float()
        texts = inputs['text']
        counts = torch.tensor([t.shape[0] for t in texts], device=video.device)
        batch = dict(
            video=(video - self.mean) / self.std if self.normalize else video,
            text=torch.cat(texts),
            caption_to_video=torch.arange(len(texts), device=video.device)
            .repeat_interleave(counts))
        if inputs.get('video_mask') is not None:
            batch['video_mask'] = torch.stack(inputs['video_mask'])
        return dict(inputs=batch, data_samples=data.get('data_samples'))
