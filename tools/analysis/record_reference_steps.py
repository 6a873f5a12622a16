"""Record a steps fixture on W processes by running the published TempMe training code.

Needs a checkout of the published code (github.com/LunarShen/TempMe; not part of this
project, not installed by it) and an existing world-size-1 steps fixture: its initial
weights and batches are replayed on W gloo processes, each rank taking its consecutive
share of every step's samples (the global batch stays the same), with the published
step order: ``VTRModel`` loss, ``zero_grad``, ``backward``, ``clip_grad_norm_(1.0)``, the
published ``AdamW`` and cosine warm-up schedule, ``logit_scale`` clamp, all under
``DistributedDataParallel(find_unused_parameters=True)``. The output has the format of
``tests/data/reference_train_steps.pt`` (``tests/data/README.md``).

Example (how ``tests/data/reference_train_steps_w2.pt`` was made)::

    python tools/analysis/record_reference_steps.py --reference-code ~/src/TempMe \\
        tests/data/reference_train_steps.pt tests/data/reference_train_steps_w2.pt --world-size 2
"""
import argparse
import os
import socket
import sys
import tempfile


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('source', help='world-size-1 steps fixture (weights and batches)')
    parser.add_argument('out', help='fixture to write')
    parser.add_argument('--reference-code', required=True,
                        help='checkout of the published TempMe code (holds tvr/)')
    parser.add_argument('--world-size', type=int, default=2)
    return parser.parse_args()


def _record(rank: int, world_size: int, port: int, args: argparse.Namespace) -> None:
    from types import SimpleNamespace

    import numpy as np
    import torch
    import torch.distributed as dist

    sys.path.insert(0, os.path.abspath(args.reference_code))
    from tvr.models.modeling import VTRModel
    from tvr.models.optimization_adamw import AdamW, get_cosine_schedule_with_warmup

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    source = torch.load(args.source, weights_only=True, map_location='cpu')
    cfg = dict(source['config'])
    per_rank = cfg['global_batch'] // world_size
    with tempfile.TemporaryDirectory() as clip_dir:
        # VTRModel reads its CLIP geometry and weights from <pretrained_path>/ViT-B-32.pt
        clip = {k[len('clip.'):]: v for k, v in source['state_dict'].items()
                if k.startswith('clip.') and 'TVPt' not in k}
        torch.save(clip, os.path.join(clip_dir, 'ViT-B-32.pt'))
        model = VTRModel(SimpleNamespace(
            base_encoder=cfg['base_encoder'], pretrained_path=clip_dir, lora_dim=cfg['lora_dim'],
            max_frames=cfg['max_frames'], merge_layer=cfg['merge_layer'],
            merge_frame_num=cfg['merge_frame_num'],
            merge_token_proportion=cfg['merge_token_proportion'], frame_pos=cfg['frame_pos'],
            tome_r=cfg['tome_r'], tome_tracesource=cfg['tome_tracesource'],
            tome_propattn=cfg['tome_propattn'], world_size=world_size, local_rank=rank))
    model.load_state_dict({k: v.float() for k, v in source['state_dict'].items()}, strict=True)
    for name, param in model.named_parameters():
        param.requires_grad_('TVPt' in name)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW([{'params': params, 'lr': cfg['clip_lr']}],
                      weight_decay=cfg['weight_decay'])
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=int(cfg['warmup_proportion'] * cfg['num_training_steps']),
        num_training_steps=cfg['num_training_steps'])
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    steps = []
    for step in source['steps']:
        whole = step['batches'][0]
        mine = {k: v[rank * per_rank:(rank + 1) * per_rank].clone() for k, v in whole.items()}
        lr = scheduler.get_last_lr()[0]
        logit_scale = model.clip.logit_scale.item()
        loss = ddp(mine['text_ids'], mine['text_mask'], mine['video'], mine['video_mask'])
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        torch.clamp_(model.clip.logit_scale.data, max=np.log(100))
        losses = [None] * world_size
        norms = [None] * world_size
        dist.all_gather_object(losses, float(loss.detach()))
        dist.all_gather_object(norms, float(norm))
        steps.append(dict(
            # views of the source's tensors: every rank's share, stored once
            batches=[{k: v[r * per_rank:(r + 1) * per_rank] for k, v in whole.items()}
                     for r in range(world_size)],
            lr=lr, loss=losses[0], loss_per_rank=losses, grad_norm=norms[0],
            grad_norm_per_rank=norms, logit_scale=logit_scale,
            global_batch_loss=float(step['global_batch_loss']),
            global_batch_grad_norm=float(step['global_batch_grad_norm']),
            trainable_after={n: p.detach().float().clone()
                             for n, p in model.named_parameters() if p.requires_grad}))
    if rank == 0:
        cfg.update(world_size=world_size, per_rank_batch=per_rank)
        torch.save(dict(
            about=f'{len(steps)} training steps of the published TempMe code on {world_size} '
                  'gloo processes (VTRModel loss, published AdamW + cosine warm-up, clipping '
                  'at 1.0, DDP); weights and global batches of the world-size-1 fixture.',
            config=cfg, state_dict=source['state_dict'], trainable_names=names, steps=steps,
            notes=[f'Recorded by tools/analysis/record_reference_steps.py from {args.source}: '
                   f'rank r feeds samples [r*{per_rank}, (r+1)*{per_rank}) of each step. '
                   'global_batch_loss / global_batch_grad_norm are the source fixture\'s '
                   '(same global batch; they hold for the first step\'s parameters exactly).',
                   'The stepped gradient is the true gradient / world size (the gather keeps '
                   'the local slice in backward, DDP averages), so grad_norm is about '
                   f'global_batch_grad_norm / {world_size} at the first step.']), args.out)
    dist.destroy_process_group()


def main() -> int:
    args = parse_args()
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    mp.start_processes(_record, args=(args.world_size, port, args),
                       nprocs=args.world_size, start_method='spawn')
    fixture = torch.load(args.out, weights_only=True)
    for i, step in enumerate(fixture['steps']):
        print(f'step {i + 1}: lr {step["lr"]:.4e} loss {step["loss"]:.6f} '
              f'grad norm {step["grad_norm"]:.5f} (per rank {step["grad_norm_per_rank"]})')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
