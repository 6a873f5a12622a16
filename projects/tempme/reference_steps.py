"""Replay recorded optimizer steps of the published TempMe code through this project's step.

A steps fixture (``tests/data/README.md``: initial weights, each step's batches per rank,
and what the published code computed: lr, loss, gradient norm, trainable parameters after
the step) is run through the components a config builds: the retriever and its
``train_step`` (loss, gradient caching when configured, temperature clamp), mmengine's
optimizer wrapper (gradient scale, clipping, optimizer) and the parameter schedulers. A
fixture recorded on W processes is replayed on W gloo processes through the config's DDP
wrapper, so the all-gather and gradient averaging are the real ones.

The config keeps its recipe (optimizer, clipping, head, LoRA options); the fixture supplies
the model geometry and merge schedule, the run length and the world size.
"""
import copy
import math
import os
import socket
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config

from .reference import convert_reference_state_dict, reference_model_config

__all__ = ['replay_config', 'replay_fixture', 'run_replay', 'TOLERANCES']

#: What matching means: loss and gradient norm relative, parameters absolute (fp32).
TOLERANCES = dict(loss=1e-5, grad_norm=1e-4, params=1e-5)


def replay_config(cfg: Config, fixture_config: dict) -> Config:
    """``cfg`` with the fixture's model geometry, merge schedule and gradient scale.

    The published code's stepped gradient is the true gradient divided by its world size
    (``optim_wrapper.grad_scale`` in this project), so the replay uses ``1 / W`` of the
    fixture whatever the config states for its own run.
    """
    cfg = copy.deepcopy(cfg)
    ref = reference_model_config(fixture_config)
    model = cfg.model
    model.clip = ref['clip']
    model.video_encoder.update(ref['video_encoder'])
    if ref['lora'] is None:
        model.lora = None
    else:
        model.lora = dict(model.get('lora') or {}, rank=ref['lora']['rank'])
    # the fixture's pixels are already normalised floats
    model.data_preprocessor = dict(type='RetrievalDataPreprocessor', mean=None, std=None)
    cfg.optim_wrapper.grad_scale = 1.0 / int(fixture_config.get('world_size', 1))
    return cfg


def _batch(batch: Dict[str, torch.Tensor]) -> dict:
    """A recorded batch as the data loader would give it (one caption per video)."""
    return dict(inputs=dict(video=list(batch['video'].float()),
                            text=[ids[None] for ids in batch['text_ids']],
                            video_mask=list(batch['video_mask'])),
                data_samples=None)


def _build(cfg: Config, fixture: dict, world_size: int):
    from mmaction.registry import MODEL_WRAPPERS, MODELS, PARAM_SCHEDULERS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import projects.tempme  # noqa: F401  (registers the components)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    model = MODELS.build(cfg.model)
    lora = cfg.model.get('lora') is not None
    model.load_state_dict(convert_reference_state_dict(fixture['state_dict'], lora=lora),
                          strict=True)
    trainer = model
    if world_size > 1:
        wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        trainer = MODEL_WRAPPERS.build(wrapper, default_args=dict(module=model, device_ids=None))
    optim_wrapper = build_optim_wrapper(trainer, cfg.optim_wrapper)
    steps = int(fixture['config']['num_training_steps'])
    schedulers = []
    for sched in cfg.get('param_scheduler') or []:
        sched = copy.deepcopy(dict(sched))
        # the recorded run as one epoch of num_training_steps iterations
        sched.setdefault('end', 1 if sched.get('by_epoch', True) else steps)
        if sched.get('by_epoch', True) and not sched.get('convert_to_iter_based', False):
            raise ValueError('the replay steps schedulers per iteration: set '
                             'convert_to_iter_based=True or by_epoch=False')
        schedulers.append(PARAM_SCHEDULERS.build(
            sched, default_args=dict(optimizer=optim_wrapper, epoch_length=steps)))
    return model, trainer, optim_wrapper, schedulers


def _trainable_check(model: torch.nn.Module, fixture: dict, lora: bool) -> List[str]:
    """Differences between the parameters that train here and in the fixture."""
    ref = set(convert_reference_state_dict(
        {n: fixture['state_dict'][n] for n in fixture['trainable_names']}, lora=lora))
    ours = {n for n, p in model.named_parameters() if p.requires_grad}
    return ([f'trains here only: {n}' for n in sorted(ours - ref)]
            + [f'trains in the fixture only: {n}' for n in sorted(ref - ours)])


def replay_fixture(cfg: Config, fixture: dict, rank: int = 0, world_size: int = 1
                   ) -> Dict[str, object]:
    """Run every recorded step on this process (rank ``rank`` of ``world_size``).

    Returns per-step ``lr``, ``loss``, ``grad_norm`` and ``param_diff`` (largest absolute
    difference of any trainable parameter after the step), plus ``trainable_errors``.
    """
    from mmengine.logging import MessageHub

    model, trainer, optim_wrapper, schedulers = _build(cfg, fixture, world_size)
    lora = cfg.model.get('lora') is not None
    hub = MessageHub.get_current_instance()
    rows = []
    for step in fixture['steps']:
        lr = optim_wrapper.get_lr()['lr'][0]
        log_vars = trainer.train_step(_batch(step['batches'][rank]), optim_wrapper)
        grad_norm = hub.get_scalar('train/grad_norm').current()
        for sched in schedulers:
            sched.step()
        after = convert_reference_state_dict(step['trainable_after'], lora=lora)
        current = dict(model.named_parameters())
        diff = max((current[n].detach() - v).abs().max().item() for n, v in after.items())
        rows.append(dict(lr=lr, loss=float(log_vars['loss'].detach()), grad_norm=float(grad_norm),
                         param_diff=diff))
    return dict(rows=rows, trainable_errors=_trainable_check(model, fixture, lora))


def compare(result: Dict[str, object], fixture: dict, rank: int = 0) -> List[dict]:
    """Per step: ours against the fixture's values, and whether each is within tolerance."""
    table = []
    for row, step in zip(result['rows'], fixture['steps']):
        ref_loss = float(step['loss_per_rank'][rank])
        ref_norm = float(step['grad_norm_per_rank'][rank])
        loss_rel = abs(row['loss'] - ref_loss) / max(abs(ref_loss), 1e-12)
        norm_rel = abs(row['grad_norm'] - ref_norm) / max(abs(ref_norm), 1e-12)
        lr_ok = math.isclose(row['lr'], float(step['lr']), rel_tol=1e-6, abs_tol=1e-12)
        table.append(dict(
            row, ref_lr=float(step['lr']), ref_loss=ref_loss, ref_grad_norm=ref_norm,
            loss_rel=loss_rel, grad_norm_rel=norm_rel,
            ok=(lr_ok and loss_rel <= TOLERANCES['loss']
                and norm_rel <= TOLERANCES['grad_norm']
                and row['param_diff'] <= TOLERANCES['params'])))
    return table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, cfg_dict: dict, fixture_path: str,
            queue) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        fixture = torch.load(fixture_path, weights_only=True, map_location='cpu')
        cfg = Config(cfg_dict)
        result = replay_fixture(cfg, fixture, rank, world_size)
        queue.put((rank, compare(result, fixture, rank), result['trainable_errors'], None))
    except Exception as exc:  # reported by the parent with the rank that failed
        queue.put((rank, None, None, f'{type(exc).__name__}: {exc}'))
        raise
    finally:
        dist.destroy_process_group()


def run_replay(cfg: Config, fixture_path: str, fixture: Optional[dict] = None
               ) -> Dict[str, object]:
    """Replay a fixture on as many processes as it was recorded with.

    Returns ``tables`` (one per rank, see :func:`compare`), ``trainable_errors`` and
    ``ok``.
    """
    if fixture is None:
        fixture = torch.load(fixture_path, weights_only=True, map_location='cpu')
    world_size = int(fixture['config'].get('world_size', 1))
    cfg = replay_config(cfg, fixture['config'])
    if world_size == 1:
        result = replay_fixture(cfg, fixture)
        tables, errors = [compare(result, fixture)], result['trainable_errors']
    else:
        import torch.multiprocessing as mp
        ctx = mp.get_context('spawn')
        queue = ctx.SimpleQueue()
        procs = mp.start_processes(
            _worker, args=(world_size, _free_port(), cfg.to_dict(), fixture_path, queue),
            nprocs=world_size, join=False, start_method='spawn')
        while not procs.join():
            pass
        reports = sorted(queue.get() for _ in range(world_size))
        failed = [f'rank {r}: {err}' for r, _, _, err in reports if err]
        if failed:
            raise RuntimeError('; '.join(failed))
        tables = [table for _, table, _, _ in reports]
        errors = reports[0][2]
    ok = not errors and all(row['ok'] for table in tables for row in table)
    return dict(tables=tables, trainable_errors=errors, ok=ok, world_size=world_size,
                grad_scale=cfg.optim_wrapper.grad_scale)
