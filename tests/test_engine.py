"""Hooks, heads and the optimizer setup of the configs."""
import glob
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from projects.tempme.engine import EpochSeedHook, PEFTCheckpointHook
from projects.tempme.merging import MergeSchedule
from projects.tempme.models import MeanCLSHead, TempMeRetriever
from projects.tempme.models.heads import SeqTransfHead
from tests.conftest import TINY_CLIP


def _model(**kwargs):
    torch.manual_seed(0)
    return TempMeRetriever(clip=dict(arch=TINY_CLIP), video_encoder=dict(type='TempMeViT'),
                           data_preprocessor=None, **kwargs)


def _runner(model):
    return SimpleNamespace(model=model, logger=MMLogger.get_instance('test_engine'))


def test_adapter_only_checkpoint_round_trip():
    trained = _model()
    for param in trained.parameters():
        if param.requires_grad:
            torch.nn.init.normal_(param)
    hook = PEFTCheckpointHook(adapter_only=True)
    checkpoint = dict(meta={}, state_dict=trained.state_dict())
    hook.before_save_checkpoint(_runner(trained), checkpoint)
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert set(checkpoint['state_dict']) == trainable
    assert checkpoint['meta']['adapter_only'] is True

    fresh = _model()  # same base weights (seeded), untrained adapters
    hook.after_load_checkpoint(_runner(fresh), checkpoint)
    fresh.load_state_dict(checkpoint['state_dict'], strict=True)
    for name, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_adapter_checkpoint_of_another_model_is_refused():
    model = _model()
    checkpoint = dict(meta=dict(adapter_only=True), state_dict={'head.unknown': torch.ones(1)})
    with pytest.raises(KeyError, match='head.unknown'):
        PEFTCheckpointHook().after_load_checkpoint(_runner(model), checkpoint)


def test_full_checkpoints_are_left_alone():
    model = _model()
    checkpoint = dict(meta={}, state_dict=model.state_dict())
    PEFTCheckpointHook(adapter_only=False).before_save_checkpoint(_runner(model), checkpoint)
    assert checkpoint['state_dict'].keys() == model.state_dict().keys()


def test_epoch_seed_hook_makes_epochs_reproducible():
    draws = []
    for _ in range(2):
        runner = SimpleNamespace(seed=7, epoch=3)
        EpochSeedHook().before_train_epoch(runner)
        draws.append(torch.rand(3))
    assert torch.equal(*draws)
    EpochSeedHook().before_train_epoch(SimpleNamespace(seed=7, epoch=4))
    assert not torch.equal(draws[0], torch.rand(3))


def test_seq_transf_head_starts_as_mean_pooling_and_learns():
    head = SeqTransfHead(width=64, num_frames=12, layers=2)
    x = torch.randn(2, 12, 64)
    torch.testing.assert_close(head(x), MeanCLSHead()(x), atol=1e-6, rtol=0)
    head(x).sum().backward()
    assert head.transformer.resblocks[0].mlp.c_proj.weight.grad.abs().sum() > 0


def test_full_finetune_config_gives_clip_weights_a_lower_lr():
    cfg = Config.fromfile('configs/clip4clip_tempme_msrvtt.py')
    model_cfg = cfg.model.to_dict()
    model = _model(lora=model_cfg['lora'], train_mode=model_cfg['train_mode'],
                   head=dict(type='SeqTransfHead', width=32, layers=1))
    assert all(p.requires_grad for p in model.parameters())
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            lr_of[names[id(param)]] = group['lr']
    assert lr_of['video_encoder.blocks.0.attn.qkv.weight'] == pytest.approx(1e-7)
    assert lr_of['text_encoder.blocks.0.mlp.c_fc.weight'] == pytest.approx(1e-7)
    assert lr_of['video_encoder.blocks.8.temporal_embedding'] == pytest.approx(1e-4)
    assert lr_of['head.frame_position'] == pytest.approx(1e-4)


@pytest.mark.parametrize('path', sorted(glob.glob('configs/*.py')))
def test_every_config_loads_with_a_valid_schedule(path):
    cfg = Config.fromfile(path)
    enc = cfg.model.video_encoder
    tokens = 50 if cfg.model.clip.arch in ('ViT-B-32', ) or isinstance(
        cfg.model.clip.arch, dict) else 197
    schedule = MergeSchedule(12, enc.num_frames, tokens, **MergeSchedule.settings_of(enc))
    assert schedule.layers[-1].cls_out * schedule.output_clips == enc.num_frames
    assert cfg.custom_imports.imports == ['projects.tempme']
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert {'ann_file', 'data_root', 'data_prefix'} <= set(dataset)
