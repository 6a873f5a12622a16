"""Where every input token of a video ends up: source maps across ImgMe and ClipMe.

A *source map* of a clip is a (T, S) 0/1 matrix: row ``t`` marks the original tokens
of the video that current token ``t`` stands for, with ``S = frames * tokens_per_frame``
and original token ``j`` of frame ``f`` numbered ``f * tokens_per_frame + j``. Numbering
over the whole video (not per frame) is what lets a map survive :func:`group_clips`
and cross-clip merges unchanged: grouping concatenates rows, and a merge takes the
union of rows (:func:`~projects.tempme.merging.matching.merge_source`).
"""
import torch


def initial_source(num_videos: int, num_frames: int, tokens_per_frame: int,
                   device: torch.device = None, dtype: torch.dtype = torch.float32
                   ) -> torch.Tensor:
    """Source maps before any merge: (videos * frames, tokens, frames * tokens), one-hot.

    Clip ``f`` of a video is its frame ``f``; its token ``j`` stands for original token
    ``f * tokens_per_frame + j`` only.
    """
    total = num_frames * tokens_per_frame
    eye = torch.eye(total, device=device, dtype=dtype).view(num_frames, tokens_per_frame, total)
    return eye.repeat(num_videos, 1, 1)


def source_to_assignment(source: torch.Tensor, num_videos: int) -> torch.Tensor:
    """The output token of every original token: (videos, frames * tokens_per_frame) long.

    Output tokens are numbered over the whole video, clip by clip, as the encoder lays
    them out: token ``t`` of output clip ``c`` is ``c * tokens_per_clip + t``.

    Raises:
        ValueError: if an original token is in no output token or in several, which
            would mean the maps were not carried through every merge.
    """
    videos = source.reshape(num_videos, -1, source.shape[-1])
    owners = (videos > 0).sum(dim=1)
    if not bool((owners == 1).all()):
        bad = int((owners != 1).sum())
        raise ValueError(f'invalid source map: {bad} original tokens are not in exactly one '
                         'output token')
    return videos.argmax(dim=1)


def tokens_per_frame_reached(assignment: torch.Tensor, num_frames: int,
                             skip_cls: int = 1) -> torch.Tensor:
    """How many distinct output tokens the patches of each frame went into: (videos, frames).

    ``skip_cls`` leading tokens of every frame (the CLS token) are left out, so the count
    is about image content.
    """
    per_frame = assignment.view(assignment.shape[0], num_frames, -1)[..., skip_cls:]
    return torch.tensor([[len(torch.unique(frame)) for frame in video] for video in per_frame])
