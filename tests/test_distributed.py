"""Two processes on one global batch give the single-process loss and gradients."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from projects.tempme.models import TempMeRetriever
from tests.conftest import TINY_CLIP

BATCH = 4


def _model():
    torch.manual_seed(0)
    model = TempMeRetriever(clip=dict(arch=TINY_CLIP), video_encoder=dict(type='TempMeViT'),
                            data_preprocessor=None)
    for name, param in model.named_parameters():  # make adapters and embeddings matter
        if param.requires_grad:
            torch.nn.init.normal_(param, std=0.02)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, 1000, (BATCH, 32), generator=g)
    text[:, 10] = 49407  # end-of-text
    return dict(video=torch.randn(BATCH, 12, 3, 112, 112, generator=g), text=text,
                caption_to_video=torch.arange(BATCH))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    model = DistributedDataParallel(_model())
    local = {k: v.chunk(world)[rank] for k, v in _batch().items()}
    local['caption_to_video'] = torch.arange(local['video'].shape[0])
    loss = model(inputs=local, mode='loss')['loss']
    loss.backward()
    if rank == 0:
        torch.save(dict(loss=loss.detach(), grads=_grads(model.module)), out_file)
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    out = tmp_path / 'dist.pt'
    mp.spawn(_worker, args=(2, str(tmp_path / 'init'), str(out)), nprocs=2, join=True)
    model = _model()
    loss = model(inputs=_batch(), mode='loss')['loss']
    loss.backward()
    result = torch.load(out, weights_only=True)
    torch.testing.assert_close(result['loss'], loss.detach(), atol=1e-6, rtol=1e-5)
    single = _grads(model)
    assert result['grads'].keys() == single.keys() and len(single) > 0
    for name, grad in single.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(result['grads'][name], grad, atol=1e-6, rtol=1e-4)
