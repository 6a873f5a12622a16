"""Cross-field checks of a config, run by the tools before anything is built.

A config states the clip length twice (the pipeline's sampler and the encoder's
``num_frames``) and the frame size twice (the pipeline's crop and CLIP's
``image_size``). Overriding one of them on the command line without the other used to
surface as a tensor-shape error deep inside the first forward pass; this says which
fields disagree before any data is read.

The encoder is a retriever's ``model.video_encoder`` (CLIP in ``model.clip``) or a
recognizer's ``model.backbone`` of type ``TempMeViT`` (CLIP in ``model.backbone.clip``).
"""
from typing import Any, List, Optional, Tuple, Union

#: Pipeline steps and the field that fixes the clip length / the output frame size.
CLIP_LEN_STEPS = {'FpsGridSample': 'clip_len', 'UniformSample': 'clip_len',
                  'SampleFrames': 'clip_len', 'LoadCachedFrames': 'clip_len'}
SIZE_STEPS = {'PILResizeCenterCrop': 'size', 'CenterCrop': 'crop_size'}


class ConfigMismatchError(ValueError):
    """Two fields of a config that must agree do not."""


def encoder_field(cfg: Any) -> str:
    """Where the config's TempMe encoder is: ``'model.video_encoder'`` (a retriever) or
    ``'model.backbone'`` (a recognizer whose backbone is ``TempMeViT``)."""
    model = cfg.get('model') or {}
    backbone = model.get('backbone')
    if not model.get('video_encoder') and isinstance(backbone, dict) and \
            _is_tempme_vit(backbone.get('type')):
        return 'model.backbone'
    return 'model.video_encoder'


def _is_tempme_vit(kind: Any) -> bool:
    """``'TempMeViT'``, a scoped name (``'mmaction.TempMeViT'``) or the class itself."""
    name = kind.rsplit('.', 1)[-1] if isinstance(kind, str) else getattr(kind, '__name__', '')
    return name == 'TempMeViT'


def model_input_geometry(cfg: Any) -> Tuple[Optional[int], Optional[int]]:
    """``(num_frames, image_size)`` the config's video encoder takes (None if unknown)."""
    import open_clip

    model = cfg.get('model') or {}
    if encoder_field(cfg) == 'model.backbone':
        encoder = model['backbone']
        clip = encoder.get('clip')
    else:
        encoder, clip = model.get('video_encoder') or {}, model.get('clip')
    frames = encoder.get('num_frames')
    clip = clip if isinstance(clip, dict) else {}
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


def _fixed_resize_key(step: Any) -> Optional[str]:
    """``'scale'`` for mmaction2's ``Resize`` to a fixed (w, h): with ``keep_ratio=False``
    it sets the output size (the recognition pipelines' size after ``RandomResizedCrop``)."""
    if isinstance(step, dict) and step.get('type') == 'Resize' and \
            step.get('keep_ratio') is False and isinstance(step.get('scale'), (list, tuple)):
        return 'scale'
    return None


def _sizes_of(value: Union[int, Tuple[int, int]]) -> Tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value), )


def check_data_fits_model(cfg: Any) -> None:
    """Raise :class:`ConfigMismatchError` when a pipeline cannot feed the encoder."""
    frames, size = model_input_geometry(cfg)
    field = encoder_field(cfg)
    problems = []
    for split in ('train', 'val', 'test'):
        for i, step in enumerate(_steps(cfg, split)):
            where = f'{split}_dataloader.dataset.pipeline.{i}'
            kind = step.get('type') if isinstance(step, dict) else None
            key = CLIP_LEN_STEPS.get(kind)
            if key and frames is not None and step.get(key) is not None and \
                    int(step[key]) != frames:
                problems.append(f'{where}.{key}={step[key]} ({kind}) but '
                                f'{field}.num_frames={frames}')
            key = SIZE_STEPS.get(kind) or _fixed_resize_key(step)
            if key and size is not None and step.get(key) is not None and \
                    set(_sizes_of(step[key])) != {size}:
                problems.append(f'{where}.{key}={step[key]} ({kind}) but the CLIP image size '
                                f'is {size}')
    if problems:
        raise ConfigMismatchError(
            'the data pipeline cannot feed the model:\n  ' + '\n  '.join(problems) +
            '\nset both with --cfg-options (each pipeline step can be set by its index, '
            'e.g. test_dataloader.dataset.pipeline.1.clip_len=64)')
