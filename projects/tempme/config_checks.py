"""Cross-field checks of a config, run by the tools before anything is built.

A config states the clip length twice (the pipeline's sampler and the encoder's
``num_frames``) and the frame size twice (the pipeline's crop and CLIP's
``image_size``). Overriding one of them on the command line without the other used to
surface as a tensor-shape error deep inside the first forward pass; this says which
fields disagree before any data is read.
"""
from typing import Any, List, Optional, Tuple

#: Pipeline steps and the field that fixes the clip length / the output frame size.
CLIP_LEN_STEPS = {'FpsGridSample': 'clip_len', 'UniformSample': 'clip_len',
                  'SampleFrames': 'clip_len', 'LoadCachedFrames': 'clip_len'}
SIZE_STEPS = {'PILResizeCenterCrop': 'size', 'CenterCrop': 'crop_size'}


class ConfigMismatchError(ValueError):
    """Two fields of a config that must agree do not."""


def model_input_geometry(cfg: Any) -> Tuple[Optional[int], Optional[int]]:
    """``(num_frames, image_size)`` the config's video encoder takes (None if unknown)."""
    import open_clip

    model = cfg.get('model') or {}
    frames = (model.get('video_encoder') or {}).get('num_frames')
    clip = model.get('clip') or {}
    arch = clip.get('arch')
    if isinstance(arch, str):
        arch = open_clip.get_model_config(arch)
    size = ((arch or {}).get('vision_cfg') or {}).get('image_size')
    if clip.get('image_size') is not None:
        size = clip['image_size']
    if isinstance(size, (list, tuple)):
        size = size[0]
    return (None if frames is None else int(frames), None if size is None else int(size))


def _steps(cfg: Any, split: str) -> List[dict]:
    loader = cfg.get(f'{split}_dataloader') or {}
    return list((loader.get('dataset') or {}).get('pipeline') or [])


def check_data_fits_model(cfg: Any) -> None:
    """Raise :class:`ConfigMismatchError` when a pipeline cannot feed the encoder."""
    frames, size = model_input_geometry(cfg)
    problems = []
    for split in ('train', 'val', 'test'):
        for i, step in enumerate(_steps(cfg, split)):
            where = f'{split}_dataloader.dataset.pipeline.{i}'
            kind = step.get('type') if isinstance(step, dict) else None
            key = CLIP_LEN_STEPS.get(kind)
            if key and frames is not None and step.get(key) is not None and \
                    int(step[key]) != frames:
                problems.append(f'{where}.{key}={step[key]} ({kind}) but '
                                f'model.video_encoder.num_frames={frames}')
            key = SIZE_STEPS.get(kind)
            if key and size is not None and step.get(key) is not None and \
                    int(step[key]) != size:
                problems.append(f'{where}.{key}={step[key]} ({kind}) but the CLIP image size '
                                f'is {size}')
    if problems:
        raise ConfigMismatchError(
            'the data pipeline cannot feed the model:\n  ' + '\n  '.join(problems) +
            '\nset both with --cfg-options (each pipeline step can be set by its index, '
            'e.g. test_dataloader.dataset.pipeline.1.clip_len=64)')
