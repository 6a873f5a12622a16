"""Train and evaluate TempMe and the order-blind baseline on the synthetic benchmark.

Generates the data once (``tools/data/make_synthetic.py``), trains each method with
``tools/train.py``, tests it with ``tools/test.py --dump``, and reports text-to-video and
video-to-text recall on all captions of the evaluated split (test unless ``--split val``)
and on its order-dependent ones, next to the order-blind ceiling and chance, with tokens,
GMACs per video and wall time. Writes ``results.json``, ``results.md`` and
``results.png`` under the work dir. The videos are generated at the frame size of the
configs' pipelines.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --quick              # a first look: 400 training videos, 3 epochs
    python tools/demo.py --epochs 12          # twice the training
    python tools/demo.py --split val --methods tempme --cfg-options KEY=VALUE
                                              # compare settings without the test split
"""
from __future__ import annotations  # type hints name torch types without importing torch

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

if TYPE_CHECKING:  # imported where used: --help and argument errors answer at once
    import torch
    from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    'tempme': ('TempMe', 'configs/tempme_synthetic.py'),
    'baseline': ('CLIP4Clip meanP (order-blind)', 'configs/clip4clip_synthetic.py'),
}


#: ``--quick``: a smaller training split, fewer epochs, the same test split (the generator
#: draws each split on its own), so its table reads like the full one, only less trained.
QUICK = dict(num_train=400, num_val=40, epochs=3, data='data/synthetic_quick',
             work_dir='work_dirs/demo_quick')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', help='synthetic data directory (default: data/synthetic '
                        'under the repository root; data/synthetic_quick with --quick)')
    parser.add_argument('--work-dir', help='default: work_dirs/demo under the repository root '
                        '(work_dirs/demo_quick with --quick)')
    parser.add_argument('--quick', action='store_true',
                        help='400 training videos, 40 validation videos and 3 epochs instead '
                        'of 1600, 200 and 6: a few minutes, the same test split; given '
                        '--num-* and --epochs still apply')
    parser.add_argument('--seed', type=int, default=0, help='data and training seed')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--epochs', type=int,
                        help='train this many epochs instead of the configs\' max_epochs '
                        '(warm-up and cosine decay are stretched to match)')
    parser.add_argument('--split', default='test', choices=('val', 'test'),
                        help='split to evaluate on: choose settings on val, report test')
    for split in ('train', 'val', 'test'):
        parser.add_argument(f'--num-{split}', type=int,
                            help=f'{split} videos to generate (generator default if unset)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra config overrides for every method (key=value)')
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else dict(data='data/synthetic', work_dir='work_dirs/demo')
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, str(ROOT / value) if key in ('data', 'work_dir') else value)
    # the tools run from the repository root: paths given here are the caller's
    args.data, args.work_dir = os.path.abspath(args.data), os.path.abspath(args.work_dir)
    return args


def _run(args: List[str]) -> None:
    """Run a tool with its progress streaming to this terminal."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True)


def _data_options(data: str, ann_file: str) -> List[str]:
    """The generated data everywhere (the training frame cache lives under it)."""
    return [f'{split}_dataloader.dataset.data_root={data}' for split in ('train', 'val', 'test')
            ] + [f'test_dataloader.dataset.ann_file={ann_file}']


def _epoch_options(epochs: int) -> List[str]:
    """Overrides that train ``epochs`` epochs: the learning-rate schedule follows
    ``max_epochs`` by itself; one checkpoint at the end and no validation, as configured."""
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_begin={epochs + 1}',
            f'default_hooks.checkpoint.interval={epochs}']


def _frame_size_options(cfg: 'Config') -> List[str]:
    """Overrides that make every pipeline's resize follow the model's frame size, so that
    ``--cfg-options model.clip.arch.vision_cfg.image_size=N`` is enough."""
    size = cfg.model.clip.arch['vision_cfg']['image_size']
    options = []
    for split in ('train', 'val', 'test'):
        for i, step in enumerate(cfg[f'{split}_dataloader'].dataset.pipeline):
            if step['type'] == 'PILResizeCenterCrop' and step['size'] != size:
                options.append(f'{split}_dataloader.dataset.pipeline.{i}.size={size}')
    return options


def _load_config(config: str, options: Sequence[str] = ()) -> 'Config':
    """The config as tools/train.py sees it, ``--cfg-options`` applied."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(str(ROOT / config))
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
    return cfg


def _cost(cfg: 'Config') -> Dict[str, float]:
    """Tokens and GMACs per video of a config's video encoder (random weights suffice)."""
    from mmaction.registry import MODELS

    from projects.tempme.profiling import video_gmacs
    model = MODELS.build(cfg.model)
    encoder = model.video_encoder
    return dict(input_tokens=encoder.schedule.tokens_per_video()[0],
                output_tokens=encoder.schedule.output_tokens_per_video,
                gmacs_per_video=video_gmacs(encoder))


def twin_win_rate(sim: torch.Tensor, caption_to_video: torch.Tensor, captions: List[int],
                  twins: Dict[int, List[int]]) -> float:
    """Percent of captions whose video scores above every one of its order twins."""
    wins = [bool(sim[c, caption_to_video[c]] > sim[c, twins[int(caption_to_video[c])]].max())
            for c in captions]
    return 100.0 * sum(wins) / max(len(wins), 1)


def evaluate_method(name: str, config: str, args: argparse.Namespace, ann_file: str,
                    order_captions: List[int], twins: Dict[int, List[int]]) -> Dict[str, float]:
    import torch

    from projects.tempme.evaluation import evaluator_conventions, retrieval_metrics
    work_dir = Path(args.work_dir) / name
    options = _data_options(args.data, ann_file) + list(args.cfg_options)
    if args.epochs is not None:
        options += _epoch_options(args.epochs)
    options += _frame_size_options(_load_config(config, options))
    print(f'\n=== {name}: training {config} ===', flush=True)
    start = time.perf_counter()
    _run(['tools/train.py', config, '--work-dir', str(work_dir), '--seed', str(args.seed),
          '--cfg-options', *options])
    train_wall = time.perf_counter() - start
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    print(f'\n=== {name}: testing {checkpoint} ===', flush=True)
    sim_file = work_dir / 'sim.pt'
    start = time.perf_counter()
    _run(['tools/test.py', config, checkpoint, '--work-dir', str(work_dir), '--dump',
          str(sim_file), '--cfg-options', *options])
    test_wall = time.perf_counter() - start
    saved = torch.load(sim_file, weights_only=True)
    # ranked as tools/test.py ranks with this config (its test_evaluator's conventions)
    conventions = evaluator_conventions(_load_config(config, options).get('test_evaluator'))
    everything = retrieval_metrics(saved['sim'], saved['caption_to_video'], **conventions)
    order = retrieval_metrics(saved['sim'], saved['caption_to_video'],
                              captions=torch.tensor(order_captions), **conventions)
    win_rate = twin_win_rate(saved['sim'], saved['caption_to_video'], order_captions, twins)
    return dict(**everything, t2v_R1_order=order['t2v_R1'], t2v_R5_order=order['t2v_R5'],
                t2v_R10_order=order['t2v_R10'], order_twin_win_rate=win_rate,
                train_wall_s=train_wall,
                test_wall_s=test_wall, **_cost(_load_config(config, options)))


def write_reports(results: dict, work_dir: Path) -> str:
    """Write results.json / .md / .png; return the Markdown table."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / 'results.json').write_text(json.dumps(results, indent=2))
    rows = [
        '| method | t2v R@1 | t2v R@5 | t2v R@10 | v2t R@1 | v2t R@5 | v2t R@10 | R-Sum '
        '| t2v R@1 order-dep. | beats its twins | tokens out | GMACs/video | train s | test s |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, m in results['methods'].items():
        rows.append(
            f'| {METHODS[name][0]} | {m["t2v_R1"]:.1f} | {m["t2v_R5"]:.1f} | {m["t2v_R10"]:.1f} '
            f'| {m["v2t_R1"]:.1f} | {m["v2t_R5"]:.1f} | {m["v2t_R10"]:.1f} | {m["R_sum"]:.1f} '
            f'| {m["t2v_R1_order"]:.1f} | {m["order_twin_win_rate"]:.1f} '
            f'| {m["output_tokens"]} / {m["input_tokens"]} '
            f'| {m["gmacs_per_video"]:.3f} | {m["train_wall_s"]:.0f} | {m["test_wall_s"]:.0f} |')
    rows.append(
        f'| order-blind ceiling | {results["order_blind_ceiling_t2v_R1"]:.1f} | | | | | | '
        f'| {results["order_dependent_ceiling_t2v_R1"]:.1f} | 0.0 | | | | |')
    rows.append(f'| chance | {results["chance_t2v_R1"]:.1f} | | | | | | '
                f'| {results["chance_t2v_R1"]:.1f} | | | | | |')
    table = '\n'.join(rows)
    (work_dir / 'results.md').write_text(
        f'Synthetic benchmark, {results["split"]} split: {results["num_videos"]} videos, '
        f'{results["num_captions"]} captions ({results["num_order_captions"]} '
        'order-dependent). Recalls in percent. "beats its twins": share of the '
        'order-dependent captions whose video scores above all of its order twins.\n\n'
        + table + '\n')
    _plot(results, work_dir / 'results.png')
    return table


def _plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig = results_figure(results)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_figure(results: dict):
    """The chart of ``results.png``: R@1 per caption group with each group's own
    order-blind ceiling, every bar labelled (a zero bar shows "0.0"), and GMACs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(results['methods'])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    # each group's own order-blind ceiling (50% of all captions, 0% of the order-dependent
    # ones), drawn over that group only
    groups = [('t2v_R1', 'all captions', 'order_blind_ceiling_t2v_R1'),
              ('t2v_R1_order', 'order-dependent captions', 'order_dependent_ceiling_t2v_R1')]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results['methods'][name][key] for key, _, _ in groups]
        bars = axes[0].bar([g + i * width for g in range(len(groups))], values, width,
                           label=METHODS[name][0], color=f'C{i}')
        axes[0].bar_label(bars, fmt='%.1f', fontsize=8)  # a zero bar still shows "0.0"
    for g, (_, _, ceiling) in enumerate(groups):
        left, right = g - width / 2 - 0.05, g + (len(names) - 0.5) * width + 0.05
        axes[0].hlines(results[ceiling], left, right, color='k', ls='--', lw=1,
                       label='order-blind ceiling' if g == 0 else None)
    axes[0].axhline(results['chance_t2v_R1'], color='grey', ls=':', lw=1, label='chance')
    axes[0].set_xticks([g + (len(names) - 1) * width / 2 for g in range(len(groups))],
                       [f'{label}\n(order-blind ceiling {results[ceiling]:.0f}%)'
                        for _, label, ceiling in groups])
    axes[0].set_ylabel('text-to-video R@1 (%)')
    axes[0].set_ylim(0, 1.4 * max(
        [results['methods'][n][key] for n in names for key, _, _ in groups]
        + [results[ceiling] for _, _, ceiling in groups]))
    axes[0].legend(fontsize=8, loc='upper center', ncol=2)
    bars = axes[1].bar([METHODS[n][0] for n in names],
                       [results['methods'][n]['gmacs_per_video'] for n in names],
                       color=[f'C{i}' for i in range(len(names))])
    axes[1].bar_label(bars, fmt='%.3f', fontsize=8)
    axes[1].set_ylabel('GMACs per video (video encoder)')
    fig.suptitle('TempMe vs an order-blind baseline on the synthetic benchmark')
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    args = parse_args(argv)
    sizes = [f'--num-{split}={getattr(args, f"num_{split}")}' for split in ('train', 'val', 'test')
             if getattr(args, f'num_{split}') is not None]
    # the videos are generated at the frame size the configs' pipelines expect
    tempme_cfg = _load_config(METHODS['tempme'][1], args.cfg_options)
    image_size = tempme_cfg.model.clip.arch['vision_cfg']['image_size']
    _run(['tools/data/make_synthetic.py', '--out', args.data, '--seed', str(args.seed),
          '--size', str(image_size), *sizes])
    # training reads the decoded frames once cached (bit-identical, several times faster)
    _run(['tools/data/cache_frames.py', METHODS['tempme'][1], '--split', 'train',
          '--no-progress', '--cfg-options',
          *_data_options(args.data, 'test.json'), *args.cfg_options])
    meta = json.loads((Path(args.data) / 'meta.json').read_text())
    evaluated = meta['splits'][args.split]
    names = list(json.loads((Path(args.data) / evaluated['ann_file']).read_text()))
    index = {name: i for i, name in enumerate(names)}
    twins = {index[a]: [index[b] for b in group if b != a]
             for group in evaluated['twin_groups'] for a in group}
    results = dict(
        split=args.split,
        epochs=args.epochs or tempme_cfg.train_cfg.max_epochs,
        order_blind_ceiling_t2v_R1=evaluated['order_blind_ceiling_t2v_R1'],
        order_dependent_ceiling_t2v_R1=evaluated['order_dependent_ceiling_t2v_R1'],
        chance_t2v_R1=evaluated['chance_t2v_R1'],
        num_videos=evaluated['num_videos'], num_captions=evaluated['num_captions'],
        num_order_captions=len(evaluated['order_dependent_captions']),
        methods={})
    for name in args.methods:
        results['methods'][name] = evaluate_method(name, METHODS[name][1], args,
                                                   evaluated['ann_file'],
                                                   evaluated['order_dependent_captions'], twins)
    table = write_reports(results, Path(args.work_dir))
    print('\n' + table + f'\n\nwritten to {args.work_dir}/results.{{json,md,png}}')
    return results


if __name__ == '__main__':
    from projects.tempme_cli import run_tool

    def _main() -> None:
        args = sys.argv[1:]
        parse_args(args)  # --help and argument errors before torch is imported
        from projects.tempme.known_warnings import ignore_known_warnings
        with ignore_known_warnings():
            main(args)

    run_tool(_main, root=ROOT)
