"""The optional torch.compile path of the TempMe encoder: one graph, same numbers."""
import torch

from projects.tempme.models import TempMeViT
from projects.tempme.models.clip_loading import build_open_clip
from tests.conftest import TINY_CLIP


def _encoder(**kwargs) -> TempMeViT:
    torch.manual_seed(0)
    return TempMeViT(build_open_clip(TINY_CLIP).visual, temporal_init_std=0.1, **kwargs)


def test_compiled_encoder_is_one_graph_with_eager_outputs_and_gradients():
    eager = _encoder()
    # aot_eager traces forward and backward like inductor does, without a C++ build
    compiled = _encoder(compile=dict(backend='aot_eager', fullgraph=True))
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    video = torch.randn(2, 12, 3, 112, 112)
    out_eager, out_compiled = eager(video), compiled(video)
    torch.testing.assert_close(out_compiled, out_eager, atol=1e-5, rtol=1e-5)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    # the temporal embeddings learn through the compiled ClipMe merges
    assert compiled.blocks[8].temporal_embedding.grad.abs().sum() > 0


def test_compile_from_a_config_dict(tiny_clip):
    from mmaction.registry import MODELS
    model = MODELS.build(dict(type='TempMeRetriever', clip=tiny_clip,
                              video_encoder=dict(type='TempMeViT', compile=dict(backend='eager')),
                              lora=None, train_mode='full'))
    assert model.video_encoder._compiled_call_impl is not None  # nn.Module.compile ran
    assert model.text_encoder._compiled_call_impl is None
    video = torch.randn(1, 12, 3, 112, 112)
    assert model.encode_video(video).shape == (1, 32)
