"""Train a TempMe retrieval model (mmaction2-style entry point).

Examples::

    python tools/train.py configs/tempme_tiny.py --work-dir work_dirs/tiny
    tools/dist_train.sh configs/tempme_msrvtt.py 8
"""
import argparse
import os
import os.path as osp
from pathlib import Path
from typing import TYPE_CHECKING

from mmengine.config import DictAction  # no torch: --help and argument errors answer at once

if TYPE_CHECKING:
    from mmengine.config import Config

#: The repository root: this project's configs name data and weights relative to it.
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a TempMe retrieval model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or from the latest one in the '
                        'work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (fp16 with loss scaling; needs CUDA)')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip evaluation during training')
    parser.add_argument('--seed', type=int, help='random seed (overrides the config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.clip.weights=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.amp and not _cuda_available():
        parser.error('--amp needs a CUDA GPU (mmengine AMP: fp16 with loss scaling); '
                     'train without --amp on CPU')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def merge_args(cfg: 'Config', args: argparse.Namespace) -> 'Config':
    """Apply command-line choices to the config, mmaction-style."""
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:  # keep the non-finite loss check of GuardedOptimWrapper under AMP
        guarded = cfg.optim_wrapper.get('type') == 'GuardedOptimWrapper'
        cfg.optim_wrapper.type = 'GuardedAmpOptimWrapper' if guarded else 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.seed is not None:
        cfg.randomness = dict(cfg.get('randomness', {}), seed=args.seed)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    from projects.tempme_cli import require_file
    require_file(args.config, 'config file', ROOT)  # before the imports below (5-20 s)
    from projects.tempme.known_warnings import ignore_known_warnings
    from projects.tempme.user_errors import exit_on_user_error
    with ignore_known_warnings():
        exit_on_user_error(lambda: train(args), ROOT)


def train(args: argparse.Namespace) -> None:
    """Check the config and its inputs, then build the runner and train."""
    from mmengine.config import Config

    import projects.tempme  # noqa: F401  (compatibility fixes + registration)
    from projects.tempme.config_checks import check_data_fits_model
    from projects.tempme.console import build_quiet_runner
    from projects.tempme_cli import check_inputs
    cfg = merge_args(Config.fromfile(args.config), args)
    check_data_fits_model(cfg)
    check_inputs(cfg, ['train'] + (['val'] if cfg.get('val_dataloader') else []), ROOT)
    build_quiet_runner(cfg, args.config).train()


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    run_tool(main, root=ROOT)
