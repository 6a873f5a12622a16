"""Batches video-text samples and normalises frames with CLIP's mean and std."""
from typing import Dict, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.model import BaseDataPreprocessor
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


@MODELS.register_module()
class RetrievalDataPreprocessor(BaseDataPreprocessor):
    """Stack videos, concatenate captions and index each caption's video.

    Takes ``inputs`` as collated by ``pseudo_collate``: ``dict(video=[uint8 (T, 3, H, W),
    ...], text=[(n, L), ...])``, and gives ``dict(video=float (B, T, 3, H, W),
    text=(sum n, L), caption_to_video=(sum n,))``.
    """

    def __init__(self, mean: Sequence[float] = OPENAI_DATASET_MEAN,
                 std: Sequence[float] = OPENAI_DATASET_STD) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean).view(1, 1, 3, 1, 1) * 255, False)
        self.register_buffer('std', torch.tensor(std).view(1, 1, 3, 1, 1) * 255, False)

    def forward(self, data: dict, training: bool = False) -> Dict[str, object]:
        data = self.cast_data(data)
        inputs = data['inputs']
        video = torch.stack(inputs['video']).float()
        texts = inputs['text']
        counts = torch.tensor([t.shape[0] for t in texts], device=video.device)
        return dict(
            inputs=dict(
                video=(video - self.mean) / self.std,
                text=torch.cat(texts),
                caption_to_video=torch.arange(len(texts), device=video.device)
                .repeat_interleave(counts)),
            data_samples=data.get('data_samples'))
