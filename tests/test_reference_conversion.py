"""Converting reference checkpoints into ours."""
import pytest
import torch

from projects.tempme.models import TempMeRetriever
from projects.tempme.reference import geometry_from_state_dict, reference_model_config
from tools.convert_reference_checkpoint import main as convert_main

FIXTURE = 'tests/data/reference_tempme_schedule_b.pt'


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def test_geometry_is_read_off_the_weights(fixture):
    geometry = geometry_from_state_dict(fixture['state_dict'])
    for key in ('width', 'vision_heads', 'text_width', 'text_layers', 'patch', 'image_size',
                'embed', 'vocab', 'context_length'):
        assert geometry[key] == fixture['config'][key], key
    assert geometry['vision_layers'] == 12


def test_converted_checkpoint_reproduces_reference_features(tmp_path, fixture):
    ref_ckpt = tmp_path / 'pytorch_model.bin.best'
    torch.save(fixture['state_dict'], ref_ckpt)
    out = tmp_path / 'ours.pth'
    cfg = fixture['config']
    assert convert_main([str(ref_ckpt), str(out), '--merge-layer', cfg['merge_layer'],
                         '--merge-frame-num', cfg['merge_frame_num'],
                         '--merge-token-proportion', cfg['merge_token_proportion'],
                         '--tome-r', str(cfg['tome_r'])]) == 0
    checkpoint = torch.load(out, weights_only=True)
    model_cfg = reference_model_config(cfg)
    model_cfg.pop('type')
    model = TempMeRetriever(**model_cfg, data_preprocessor=None).eval()
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    with torch.no_grad():
        video = model.encode_video(fixture['video'].float())
    torch.testing.assert_close(video, fixture['video_feat'], atol=1e-4, rtol=0)
    assert checkpoint['meta']['video_encoder']['merge_layers'] == [4, 6, 9]


def test_wrong_schedule_lists_the_mismatched_keys(tmp_path, fixture):
    ref_ckpt = tmp_path / 'ref.bin'
    torch.save(fixture['state_dict'], ref_ckpt)
    with pytest.raises(RuntimeError, match=r'(?s)does not fit.*temporal_embedding'):
        convert_main([str(ref_ckpt), str(tmp_path / 'x.pth'), '--merge-layer', '4-6-9',
                      '--merge-frame-num', '3-2-2', '--frame-pos', '0'])
    assert not (tmp_path / 'x.pth').exists()
