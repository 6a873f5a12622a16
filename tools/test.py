"""Evaluate a TempMe retrieval checkpoint: t2v / v2t R@1/5/10, MdR, MnR, R-Sum.

Examples::

    python tools/test.py configs/tempme_msrvtt.py work_dirs/tempme_msrvtt/best.pth
    python tools/test.py configs/tempme_tiny.py ckpt.pth --dump sim.pt --out metrics.json
"""
import argparse
import os
import os.path as osp
from pathlib import Path

from mmengine.config import DictAction  # no torch: --help and argument errors answer at once

#: The repository root: this project's configs name data and weights relative to it.
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a TempMe retrieval model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and results go')
    parser.add_argument('--dump', help='save the caption x video similarity matrix (.pt)')
    parser.add_argument('--out', help='save the metrics as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from projects.tempme_cli import require_file
    require_file(args.config, 'config file', ROOT)  # before the imports below (5-20 s)
    if '://' not in args.checkpoint:
        require_file(args.checkpoint, 'checkpoint', ROOT)
    from projects.tempme.known_warnings import ignore_known_warnings
    from projects.tempme.user_errors import exit_on_user_error
    with ignore_known_warnings():
        return exit_on_user_error(lambda: test(args), ROOT)


def test(args: argparse.Namespace) -> dict:
    """Check the config and its inputs, then build the runner and evaluate."""
    from mmengine.config import Config
    from mmengine.dist import is_main_process

    import projects.tempme  # noqa: F401  (compatibility fixes + registration)
    from projects.tempme.config_checks import check_data_fits_model
    from projects.tempme.console import build_quiet_runner
    from projects.tempme_cli import check_inputs
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.dump:
        cfg.test_evaluator.dump_sim = args.dump
    if args.out:
        cfg.test_evaluator.out_file = args.out
    check_data_fits_model(cfg)
    check_inputs(cfg, ['test'], ROOT)
    runner = build_quiet_runner(cfg, args.config)
    metrics = runner.test()
    for what, path in (('metrics', args.out), ('similarity matrix', args.dump)):
        if path and is_main_process():
            print(f'{what} written to {osp.abspath(path)}')
    return metrics


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    run_tool(main, root=ROOT)
