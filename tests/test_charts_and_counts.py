"""One GMAC count for every tool, and charts whose every bar can be read."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.tempme.profiling import video_gmacs
from tools import demo
from tools.analysis import benchmark, visualize_merging

ROOT = Path(__file__).resolve().parents[1]


def _video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 30, (160, 120))
    for k in range(60):
        frame = np.full((120, 160, 3), 40, np.uint8)
        cv2.circle(frame, (20 + 2 * k, 60), 15, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def test_visualisation_and_benchmark_count_the_same_gmacs(tmp_path):
    """The tiny config trains LoRA adapters: both tools count them folded, as deployed."""
    config = str(ROOT / 'configs' / 'tempme_tiny.py')
    drawn = visualize_merging.visualize(config, str(_video(tmp_path / 'clip.mp4')),
                                        str(tmp_path / 'merge.png'))
    spec = benchmark.geometry_specs(benchmark.parse_args(['--config', config]))['tempme_tiny']
    full = benchmark.static_figures(benchmark.build_model(spec, 'tempme', peft=False, seed=0))
    peft = benchmark.build_model(spec, 'tempme', peft=True, seed=0).video_encoder
    assert drawn['gmacs'] == pytest.approx(full['gmacs'], rel=1e-9)
    assert video_gmacs(peft) == pytest.approx(full['gmacs'], rel=1e-9)
    assert any('lora_A' in name for name, _ in peft.named_parameters())  # left unfolded
    assert f'{full["gmacs"]:.3f} GMACs' in drawn['header'][2]


def test_demo_chart_labels_every_bar_and_draws_each_groups_own_ceiling():
    results = dict(order_blind_ceiling_t2v_R1=50.0, order_dependent_ceiling_t2v_R1=0.0,
                   chance_t2v_R1=0.5, methods=dict(
                       tempme=dict(t2v_R1=43.5, t2v_R1_order=45.9, gmacs_per_video=0.044),
                       baseline=dict(t2v_R1=31.0, t2v_R1_order=0.0, gmacs_per_video=0.063)))
    fig = demo.results_figure(results)
    recall, cost = fig.axes
    labels = [t.get_text() for t in recall.texts]
    assert labels == ['43.5', '45.9', '31.0', '0.0']  # the zero bar is labelled too
    assert [t.get_text() for t in cost.texts] == ['0.044', '0.063']
    ceilings = [c for c in recall.collections if len(c.get_segments()) == 1]
    (x0, y50), (x1, _) = ceilings[0].get_segments()[0]
    (z0, y0), (z1, _) = ceilings[1].get_segments()[0]
    assert (y50, y0) == (50.0, 0.0)
    assert x1 < 1 - 0.3 < z0  # 50% over "all captions" only, 0% over the other group
    ticks = [t.get_text() for t in recall.get_xticklabels()]
    assert '(order-blind ceiling 50%)' in ticks[0] and '(order-blind ceiling 0%)' in ticks[1]


def test_benchmark_chart_leaves_room_for_the_tallest_label():
    keys = ['gmacs_ratio', 'latency_ratio_b1', 'latency_ratio_b8']
    geo = {'tome': dict.fromkeys(keys, 0.9), 'tempme': dict.fromkeys(keys, 0.7)}
    geo['tome']['latency_ratio_b1'] = 1.38
    fig = benchmark.chart(dict(batch_sizes=[1, 8], results={'ViT-B/16': geo}, device='cpu',
                               torch='2'))
    ax, = fig.axes
    assert ax.get_ylim()[1] >= 1.2 * 1.38
    assert '1.38' in [t.get_text() for t in ax.texts]
