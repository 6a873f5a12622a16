"""The TempMe encoder: reference parity, schedules as configs, LoRA."""
import glob
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmaction.registry import MODELS
from mmengine.config import Config

from projects.tempme.models import TempMeRetriever, build_open_clip
from tools.analysis.check_reference import check_fixture

FIXTURES = sorted(glob.glob('tests/data/reference_tempme_*.pt'))


@pytest.mark.parametrize('fixture', FIXTURES)
def test_matches_reference_fixture(fixture):
    result = check_fixture(fixture, atol=1e-4)
    assert result['shapes'] == result['ref_shapes']
    assert result['text_diff'] <= 1e-4 and result['video_diff'] <= 1e-4
    assert result['ok']


def test_check_reference_cli_fails_on_a_mismatch(tmp_path):
    fixture = torch.load(FIXTURES[0], weights_only=True)
    fixture['video_feat'] = fixture['video_feat'] + 1e-3
    bad = tmp_path / 'bad.pt'
    torch.save(fixture, bad)
    ok = subprocess.run([sys.executable, 'tools/analysis/check_reference.py', FIXTURES[0]],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert 'MATCH' in ok.stdout
    failed = subprocess.run([sys.executable, 'tools/analysis/check_reference.py', str(bad)],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert 'MISMATCH' in failed.stdout


def _video(b=2, t=12, size=112, seed=0):
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_plain_schedule_is_per_frame_clip(tiny_clip):
    clip = build_open_clip(**tiny_clip).eval()
    encoder = MODELS.build(dict(type='TempMeViT', clip=clip.visual, merge_layers=(),
                                clips_per_merge=(), imgme_r=0)).eval()
    video = _video()
    with torch.no_grad():
        ours = encoder(video)
        frames = clip.encode_image(video.flatten(0, 1)).view(2, 12, -1)
    torch.testing.assert_close(ours, frames, atol=1e-5, rtol=1e-5)


def test_presets_build_the_schedules_of_their_fields(tiny_clip):
    fields = dict(tome=dict(merge_layers=(), clips_per_merge=(), imgme_r=2),
                  none=dict(merge_layers=(), clips_per_merge=(), imgme_r=0))
    for preset, explicit in fields.items():
        a = MODELS.build(dict(type='TempMeViT', clip=tiny_clip, merge=preset))
        b = MODELS.build(dict(type='TempMeViT', clip=tiny_clip, **explicit))
        assert a.schedule.tokens_per_video() == b.schedule.tokens_per_video()
        assert a.state_dict().keys() == b.state_dict().keys()
    default = MODELS.build(dict(type='TempMeViT', clip=tiny_clip))
    assert default.schedule.output_tokens_per_video == 97
    # the input geometry tools read: 12 frames of 112 px (7 x 7 patches of 16 px)
    assert default.input_shape == (12, 3, 112, 112) and default.image_size == 112
    with pytest.raises(ValueError, match='unknown merge preset'):
        MODELS.build(dict(type='TempMeViT', clip=tiny_clip, merge='clipme'))


@pytest.mark.parametrize('schedule', [
    dict(),
    dict(merge='tome', imgme_r=3),
    dict(merge_layers=(), clips_per_merge=(), imgme_r=3),
    dict(merge_layers=(2, 5, 7, 11), clips_per_merge=(2, 3, 2, 1), imgme_r=(1, 4)),
    dict(merge_layers=(0, ), clips_per_merge=(12, ), cross_clip_ratio=0.5,
         temporal_embedding=False, prop_attn=False),
])
def test_block_outputs_follow_the_schedule(tiny_clip, schedule):
    encoder = MODELS.build(dict(type='TempMeViT', clip=tiny_clip, **schedule)).eval()
    shapes = []
    for block in encoder.blocks:
        block.register_forward_hook(lambda m, i, out: shapes.append(tuple(out[0].shape)))
    with torch.no_grad():
        out = encoder(_video())
    assert out.shape == (2, 12, 32)
    assert shapes == encoder.schedule.block_output_shapes(batch=2, width=64)


def test_temporal_embedding_changes_output_and_gets_gradients(tiny_clip):
    encoder = MODELS.build(dict(type='TempMeViT', clip=tiny_clip))
    video = _video(b=1)
    before = encoder(video).detach()
    encoder.blocks[9].temporal_embedding.data.normal_()
    after = encoder(video)
    assert not torch.allclose(before, after)
    after.sum().backward()
    assert encoder.blocks[9].temporal_embedding.grad.abs().sum() > 0
    assert [b.temporal_embedding.shape[0] for b in encoder.blocks[8:11]] == [12, 6, 3]
    assert all(b.temporal_embedding is None for b in encoder.blocks[:8])


def test_wrong_frame_count_is_an_error(tiny_clip):
    encoder = MODELS.build(dict(type='TempMeViT', clip=tiny_clip))
    with pytest.raises(ValueError, match='8 frames'):
        encoder(_video(t=8))


@pytest.mark.parametrize('config, trainable', [('configs/tempme_msrvtt.py', 507_648),
                                               ('configs/lora_msrvtt.py', 491_520)])
def test_lora_parameter_counts_of_the_vit_b32_configs(config, trainable):
    cfg = Config.fromfile(config).model.to_dict()
    cfg.pop('type')
    cfg['clip']['weights'] = None  # the geometry is what counts
    model = TempMeRetriever(**cfg)
    assert model.parameter_counts()['trainable'] == trainable
    lora = sum(p.numel() for n, p in model.named_parameters() if '.lora_' in n)
    vision_lora = sum(p.numel() for n, p in model.named_parameters()
                      if '.lora_' in n and n.startswith('video_encoder.'))
    assert (vision_lora, lora - vision_lora) == (294_912, 196_608)


def test_lora_matches_reference_formulation(tiny_clip):
    model = TempMeRetriever(clip=tiny_clip, video_encoder=dict(type='TempMeViT'),
                            data_preprocessor=None)
    qkv = model.video_encoder.blocks[0].attn.qkv
    a, b = qkv.lora_A['default'].weight, qkv.lora_B['default'].weight
    assert a.shape == (8, 64) and b.shape == (192, 8)
    assert torch.count_nonzero(b) == 0 and a.abs().sum() > 0
    assert qkv.scaling['default'] == 1.0
    torch.nn.init.normal_(b)
    x = torch.randn(3, 5, 64)
    expected = F.linear(x, qkv.base_layer.weight, qkv.base_layer.bias) + x @ a.t() @ b.t()
    torch.testing.assert_close(qkv(x), expected)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all('.lora_' in n or n.endswith('temporal_embedding') for n in trainable)
    assert any(n.startswith('text_encoder.') for n in trainable)


def test_lora_rank_must_be_positive(tiny_clip):
    with pytest.raises(ValueError, match='lora.rank'):
        TempMeRetriever(clip=tiny_clip, video_encoder=dict(type='TempMeViT'),
                        lora=dict(rank=0), data_preprocessor=None)


def test_vit_b16_geometry_builds_by_name():
    encoder = MODELS.build(dict(type='TempMeViT', clip=dict(arch='ViT-B-16')))
    assert encoder.schedule.tokens_per_frame == 197
    assert encoder.schedule.tokens_per_video()[0] == 12 * 197
    assert encoder.schedule.output_tokens_per_video < 12 * 197 // 4


def test_temporal_embeddings_start_at_zero_unless_asked(tiny_clip):
    clip = build_open_clip(**tiny_clip)
    reference = MODELS.build(dict(type='TempMeViT', clip=clip.visual))
    assert all(torch.count_nonzero(b.temporal_embedding) == 0 for b in reference.blocks[8:11])
    scratch = MODELS.build(dict(type='TempMeViT', clip=clip.visual, temporal_init_std=0.5))
    std = torch.cat([b.temporal_embedding.flatten() for b in scratch.blocks[8:11]]).std()
    assert 0.4 < std < 0.6


def test_lora_folds_into_the_weights_for_inference():
    from projects.tempme.models import merge_lora
    from projects.tempme.reference import convert_reference_state_dict, reference_model_config
    fixture = torch.load(FIXTURES[0], weights_only=True)
    cfg = reference_model_config(fixture['config'])
    cfg.pop('type')
    model = TempMeRetriever(**cfg, data_preprocessor=None).eval()
    model.load_state_dict(convert_reference_state_dict(fixture['state_dict']))
    with torch.no_grad():
        before = model.encode_video(fixture['video'].float()), model.encode_text(
            fixture['text_ids'])
        merge_lora(model)
        after = model.encode_video(fixture['video'].float()), model.encode_text(
            fixture['text_ids'])
    assert not any('lora_' in name for name, _ in model.named_parameters())
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
