"""Text tokenization and packing transforms for video-text retrieval.

They close the pipeline (see :class:`~projects.tempme.datasets.VideoTextRetrievalDataset`)::

    ... frames ...,
    dict(type='OpenCLIPTokenize', context_length=32),
    dict(type='PackVideoTextInputs'),

mmaction2's own ``CLIPTokenize`` needs the separate ``clip`` package, tokenizes one
``results['text']`` string and fixes 77 tokens; ``OpenCLIPTokenize`` works offline with
open_clip's tokenizer, takes every caption of a sample and any ``context_length``.
"""
from functools import lru_cache
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from mmaction.registry import TRANSFORMS
from mmaction.structures import ActionDataSample
from mmcv.transforms import BaseTransform
from mmengine.logging import MMLogger
from open_clip.tokenizer import SimpleTokenizer


@lru_cache(maxsize=None)
def clip_tokenizer() -> SimpleTokenizer:
    """One shared BPE tokenizer: its vocabulary ships with open_clip and takes ~1 s to load."""
    return SimpleTokenizer(context_length=None)


@lru_cache(maxsize=1 << 17)
def _word_token_count(word: str) -> int:
    return len(clip_tokenizer().encode(word))


def caption_token_count(caption: str) -> int:
    """BPE tokens of ``caption`` without SOT/EOT, as ``OpenCLIPTokenize`` encodes it.

    Counted word by word with a cache: CLIP's tokenizer never forms a token across
    whitespace, so the sum equals the whole-caption count, and checking 180k captions
    costs about a second instead of ten (captions share a small vocabulary).
    """
    return sum(_word_token_count(word) for word in caption.split())


def truncated_captions(captions: Sequence[str], context_length: int) -> List[int]:
    """Indices of the captions that do not fit ``context_length`` tokens with SOT and EOT."""
    limit = context_length - 2
    return [i for i, caption in enumerate(captions) if caption_token_count(caption) > limit]


@TRANSFORMS.register_module()
class OpenCLIPTokenize(BaseTransform):
    """Tokenize ``results['captions']`` into ``results['text']`` (LongTensor ``(n, L)``).

    Rows are ``[SOT, tokens..., EOT, 0...]``. A caption longer than ``context_length``
    is cut and its last token replaced by EOT, so EOT stays the largest id in every
    row: CLIP's text tower pools the feature at ``argmax`` of the ids.

    ``num_truncated`` counts truncated captions seen by this instance (per process:
    each dataloader worker has its own copy); the first one is logged as a warning.
    ``VideoTextRetrievalDataset`` counts and reports the whole split's long captions
    once at start-up (``metainfo['num_truncated_captions']``).

    Args:
        context_length: Tokens per caption, SOT and EOT included.
    """

    def __init__(self, context_length: int = 32) -> None:
        if context_length < 2:
            raise ValueError(f'context_length must be >= 2 (SOT and EOT), got {context_length}')
        self.context_length = context_length
        self.num_truncated = 0

    def transform(self, results: Dict) -> Dict:
        captions = results['captions']
        if isinstance(captions, str):
            captions = [captions]
        if not captions or not all(isinstance(c, str) for c in captions):
            raise TypeError(
                f"OpenCLIPTokenize needs results['captions'] as a non-empty list of str, "
                f'got {captions!r}')
        for i in truncated_captions(captions, self.context_length):
            self._note_truncation(captions[i])
        results['text'] = clip_tokenizer()(list(captions), context_length=self.context_length)
        return results

    def _note_truncation(self, caption: str) -> None:
        self.num_truncated += 1
        if self.num_truncated == 1:
            MMLogger.get_current_instance().warning(
                f'OpenCLIPTokenize: caption longer than {self.context_length} tokens is '
                f'truncated (further truncations are only counted): {caption!r}')

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(context_length={self.context_length})'


@TRANSFORMS.register_module()
class PackVideoTextInputs(BaseTransform):
    """Pack frames and tokens into ``dict(inputs=dict(video, text), data_samples)``.

    ``inputs['video']`` is uint8 ``(T, 3, H, W)`` RGB and ``inputs['text']`` LongTensor
    ``(n, L)``; normalisation is left to the model's data preprocessor, which can do it
    on the GPU. ``data_samples`` is an ``ActionDataSample`` whose metainfo carries
    ``video_index``, ``caption_indices``, ``filename`` and ``num_captions``, which the
    retrieval metric needs to line up captions and videos.
    """

    meta_keys = ('video_index', 'caption_indices', 'filename')

    def transform(self, results: Dict) -> Dict:
        if 'imgs' not in results:
            raise KeyError("PackVideoTextInputs needs results['imgs'] (decoded frames)")
        if 'text' not in results:
            raise KeyError(
                "PackVideoTextInputs needs results['text']; put OpenCLIPTokenize before it")
        video = self._frames_to_tensor(results['imgs'])
        text = results['text']
        if not isinstance(text, torch.Tensor) or text.dtype != torch.long or text.ndim != 2:
            raise TypeError(f"results['text'] must be a 2-D LongTensor, got {text!r}")

        metainfo = {key: results[key] for key in self.meta_keys if key in results}
        metainfo['caption_indices'] = list(metainfo.get('caption_indices', []))
        metainfo['num_captions'] = int(text.shape[0])
        data_sample = ActionDataSample(metainfo=metainfo)
        return dict(inputs=dict(video=video, text=text), data_samples=data_sample)

    @staticmethod
    def _frames_to_tensor(imgs: Union[np.ndarray, List[np.ndarray]]) -> torch.Tensor:
        frames = np.stack(imgs) if isinstance(imgs, (list, tuple)) else np.asarray(imgs)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f'expected frames of shape (T, H, W, 3), got {frames.shape}')
        if frames.dtype != np.uint8:
            raise TypeError(f'expected uint8 frames (normalise in the model), got {frames.dtype}')
        return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'


def tokenize_captions(captions: Sequence[str], context_length: int = 32) -> torch.Tensor:
    """Tokenize captions outside a pipeline (demos, tools) exactly as training does."""
    return OpenCLIPTokenize(context_length)(dict(captions=list(captions)))['text']
