"""Shared test helpers: a tiny CLIP geometry with ViT-B/32's 12 x 50 token layout."""
import pytest
from mmengine.registry import DefaultScope

import projects.tempme  # noqa: F401  (compatibility fixes + registration)

#: 112 px frames with 16 px patches: 7 x 7 patches + CLS = 50 tokens, like ViT-B/32.
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=112, patch_size=16, width=64, layers=12, head_width=32),
    text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
)


@pytest.fixture
def tiny_clip():
    return dict(arch=TINY_CLIP)


@pytest.fixture(autouse=True)
def mmaction_scope():
    """Build from mmaction's registries, whatever scope an earlier Runner left behind."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        yield
