"""Check that a config trains step for step as the published TempMe code does.

Replays a steps fixture (format: ``tests/data/README.md``) through the config's own
training step: the retriever's loss and ``train_step``, the optimizer wrapper (gradient
scale, clipping, optimizer) and the parameter schedulers, with the fixture's model
geometry, merge schedule, run length and world size. A fixture recorded on W processes is
replayed on W gloo processes through the config's DDP wrapper. Prints lr, loss, gradient
norm and the largest parameter difference per step; exits 0 only when every step matches
(loss 1e-5 relative, gradient norm 1e-4 relative, parameters 1e-5 absolute).

Example::

    python tools/analysis/check_train_steps.py configs/tempme_msrvtt.py \\
        tests/data/reference_train_steps.pt
"""
import argparse
import sys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='training config (its recipe is what is checked)')
    parser.add_argument('fixture', help='steps fixture (.pt) recorded from the published code')
    parser.add_argument('--chunk-size', type=int, default=None,
                        help='set model.train_chunk_size (gradient caching) for the replay')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config settings, as in tools/train.py')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    import torch
    from mmengine.config import Config, DictAction

    from projects.tempme.reference_steps import TOLERANCES, run_replay

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        options = argparse.Namespace()
        DictAction(option_strings=[], dest='options')(None, options, args.cfg_options)
        cfg.merge_from_dict(options.options)
    if args.chunk_size is not None:
        cfg.model.train_chunk_size = args.chunk_size
    fixture = torch.load(args.fixture, weights_only=True, map_location='cpu')
    world_size = int(fixture['config'].get('world_size', 1))
    print(f'fixture: {args.fixture} ({len(fixture["steps"])} steps, world size {world_size}, '
          f'{fixture["config"].get("per_rank_batch", "?")} samples per rank)')
    print(f'config:  {args.config} (optimizer {cfg.optim_wrapper.optimizer.type}, '
          f'train_chunk_size {cfg.model.get("train_chunk_size")})')
    print(f'grad_scale for the replay: 1/{world_size} (the published code steps the true '
          f'gradient / world size; the config states {cfg.optim_wrapper.get("grad_scale", 1.0)}'
          ' for its own run)', flush=True)
    result = run_replay(cfg, args.fixture, fixture)
    for error in result['trainable_errors']:
        print(error)
    header = (f'{"rank":>4} {"step":>4} {"lr":>11} {"loss":>11} {"ref loss":>11} {"rel":>8} '
              f'{"grad norm":>10} {"ref norm":>10} {"rel":>8} {"max |dp|":>9}')
    print(header)
    for rank, table in enumerate(result['tables']):
        for i, row in enumerate(table):
            mark = '' if row['ok'] else '  <-- mismatch'
            print(f'{rank:>4} {i + 1:>4} {row["lr"]:>11.4e} {row["loss"]:>11.6f} '
                  f'{row["ref_loss"]:>11.6f} {row["loss_rel"]:>8.1e} {row["grad_norm"]:>10.5f} '
                  f'{row["ref_grad_norm"]:>10.5f} {row["grad_norm_rel"]:>8.1e} '
                  f'{row["param_diff"]:>9.1e}{mark}')
    print(f'tolerances: loss {TOLERANCES["loss"]:g} rel, grad norm {TOLERANCES["grad_norm"]:g} '
          f'rel, parameters {TOLERANCES["params"]:g} abs')
    print('MATCH' if result['ok'] else 'MISMATCH')
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    from projects.tempme.known_warnings import ignore_known_warnings
    from projects.tempme.user_errors import exit_on_user_error
    with ignore_known_warnings():
        sys.exit(exit_on_user_error(main))
