"""Retrieval ranking functions and the RetrievalMetric, checked against hand-computed ranks."""
import json
import random
from pathlib import Path

import pytest
import torch
from mmengine.structures import BaseDataElement

from projects.tempme.evaluation import (RetrievalMetric, dual_softmax, recall_from_ranks,
                                        retrieval_metrics)
from projects.tempme.evaluation.retrieval_metric import format_metrics

KEYS = {f'{side}_{name}' for side in ('t2v', 'v2t')
        for name in ('R1', 'R5', 'R10', 'MdR', 'MnR')} | {'R_sum'}


def assert_metrics(metrics, expected):
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


# Five captions, three videos; captions 0-2 describe video 0, captions 3-4 video 1,
# video 2 has no caption. Captions 1 and 2 tie at the top of video 0's column.
MULTI_SIM = torch.tensor([
    [0.5, 0.9, 0.1],
    [0.8, 0.35, 0.1],
    [0.8, 0.75, 0.1],
    [0.6, 0.3, 0.1],
    [0.2, 0.4, 0.1],
])
MULTI_C2V = torch.tensor([0, 0, 0, 1, 1])


def brute_force(sim, c2v, v2t_convention='all_captions'):
    """Loop version of the documented definitions, for cross-checking."""
    sim = sim.tolist()
    c2v = c2v.tolist()
    num_captions, num_videos = len(sim), len(sim[0])
    t2v = []
    for c in range(num_captions):
        gt = sim[c][c2v[c]]
        t2v.append(1 + sum(sim[c][v] >= gt for v in range(num_videos) if v != c2v[c]))
    v2t = []
    for v in range(num_videos):
        gt_caps = [c for c in range(num_captions) if c2v[c] == v]
        if not gt_caps:
            continue
        best = max(sim[c][v] for c in gt_caps)
        if v2t_convention == 'all_captions':
            v2t.append(1 + sum(sim[c][v] >= best for c in range(num_captions) if c2v[c] != v))
        else:  # each other video competes with its best caption for v
            v2t.append(1 + sum(
                max(sim[c][v] for c in range(num_captions) if c2v[c] == u) >= best
                for u in range(num_videos) if u != v and u in c2v))
    return torch.tensor(t2v), torch.tensor(v2t)


def test_recall_from_ranks_by_hand():
    ranks = torch.tensor([1, 1, 2, 5, 6, 10, 11, 12, 3, 4, 7, 1])
    out = recall_from_ranks(ranks, 'x')
    assert set(out) == {'x_R1', 'x_R5', 'x_R10', 'x_MdR', 'x_MnR'}
    assert_metrics(out, {'x_R1': 25.0, 'x_R5': 700 / 12, 'x_R10': 1000 / 12,
                         'x_MdR': 4.5, 'x_MnR': 63 / 12})
    assert recall_from_ranks(torch.tensor([3, 1, 2]), 'y')['y_MdR'] == 2.0
    with pytest.raises(ValueError):
        recall_from_ranks(torch.tensor([], dtype=torch.long), 'z')


def test_one_caption_per_video_by_hand():
    sim = torch.tensor([
        [0.9, 0.1, 0.85],
        [0.3, 0.5, 0.6],
        [0.4, 0.7, 0.8],
    ])
    out = retrieval_metrics(sim, torch.arange(3))
    assert set(out) == KEYS
    # t2v ranks [1, 2, 1]; v2t ranks [1, 2, 2] (caption 0 beats caption 2 on video 2).
    assert_metrics(out, {
        't2v_R1': 200 / 3, 't2v_R5': 100.0, 't2v_R10': 100.0,
        't2v_MdR': 1.0, 't2v_MnR': 4 / 3,
        'v2t_R1': 100 / 3, 'v2t_R5': 100.0, 'v2t_R10': 100.0,
        'v2t_MdR': 2.0, 'v2t_MnR': 5 / 3,
        'R_sum': 200 / 3 + 100 / 3 + 400.0,
    })


def test_t2v_ranks_beyond_top_ten():
    wanted = [1, 1, 2, 5, 6, 10, 11, 12, 3, 4, 7, 1]
    n = len(wanted)
    sim = torch.zeros(n, n)
    for c, rank in enumerate(wanted):
        # Scores n..1 for the other videos; the ground truth gets the score at `rank`.
        others = [v for v in range(n) if v != c]
        scores = [float(n - i) for i in range(n)]
        sim[c, c] = scores[rank - 1]
        rest = scores[:rank - 1] + scores[rank:]
        for v, s in zip(others, rest):
            sim[c, v] = s
    out = retrieval_metrics(sim, torch.arange(n))
    assert_metrics(out, {'t2v_R1': 25.0, 't2v_R5': 700 / 12, 't2v_R10': 1000 / 12,
                         't2v_MdR': 4.5, 't2v_MnR': 63 / 12})


def test_several_captions_per_video_clip4clip_default():
    out = retrieval_metrics(MULTI_SIM, MULTI_C2V)
    assert out == retrieval_metrics(MULTI_SIM, MULTI_C2V, v2t_convention='clip4clip',
                                    mdr_convention='published')
    # t2v ranks [2, 1, 1, 2, 1] -> sorted [1, 1, 1, 2, 2], MdR 1. v2t among videos:
    # video 0's best ground truth is 0.8 (captions 1 and 2 tie; they do not push each
    # other down); video 1's best caption for it is 0.6 -> rank 1. Video 1's best ground
    # truth is caption 4 (0.4); video 0's best caption for it is caption 0 (0.9) -> rank
    # 2 (video 0 counts once, though captions 0 and 2 both beat 0.4). Video 2 has no
    # caption: skipped, and no competitor. v2t ranks [1, 2]: MdR (1 + 2) / 2 = 1.5.
    assert_metrics(out, {
        't2v_R1': 60.0, 't2v_R5': 100.0, 't2v_R10': 100.0, 't2v_MdR': 1.0, 't2v_MnR': 1.4,
        'v2t_R1': 50.0, 'v2t_R5': 100.0, 'v2t_R10': 100.0, 'v2t_MdR': 1.5, 'v2t_MnR': 1.5,
        'R_sum': 510.0,
    })


def test_several_captions_per_video_all_captions():
    out = retrieval_metrics(MULTI_SIM, MULTI_C2V, v2t_convention='all_captions',
                            mdr_convention='mean_of_middle')
    # t2v ranks [2, 1, 1, 2, 1]. v2t: video 0's best ground truth is 0.8 (captions 1
    # and 2 tie; they do not push each other down) -> rank 1; video 1's best ground
    # truth is caption 4 (0.4), beaten by captions 0 and 2 -> rank 3 (its first
    # caption, 0.3, would also lose to caption 1 -> rank 4). Video 2 is skipped.
    assert_metrics(out, {
        't2v_R1': 60.0, 't2v_R5': 100.0, 't2v_R10': 100.0, 't2v_MdR': 1.0, 't2v_MnR': 1.4,
        'v2t_R1': 50.0, 'v2t_R5': 100.0, 'v2t_R10': 100.0, 'v2t_MdR': 2.0, 'v2t_MnR': 2.0,
        'R_sum': 510.0,
    })


def test_ties_count_against_the_model():
    sim = torch.tensor([
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0],
        [1.0, 0.0, 2.0],
    ])
    out = retrieval_metrics(sim, torch.arange(3))
    # t2v ranks [2, 2, 1]; v2t: video 0 ties with caption 2 -> 2, video 1 ties with
    # caption 0 -> 2, video 2 -> 1.
    assert_metrics(out, {'t2v_R1': 100 / 3, 't2v_MnR': 5 / 3,
                         'v2t_R1': 100 / 3, 'v2t_MnR': 5 / 3})


@pytest.mark.parametrize('n', [7, 12])
def test_constant_matrix_gets_the_worst_rank(n):
    out = retrieval_metrics(torch.full((n, n), 0.3), torch.arange(n))
    for side in ('t2v', 'v2t'):
        assert out[f'{side}_R1'] == 0.0
        assert out[f'{side}_R5'] == 0.0
        assert out[f'{side}_R10'] == (100.0 if n <= 10 else 0.0)
        assert out[f'{side}_MdR'] == n
        assert out[f'{side}_MnR'] == n


def test_constant_matrix_several_captions():
    c2v = torch.tensor([0, 0, 1, 1, 1, 2])
    out = retrieval_metrics(torch.ones(6, 3), c2v, v2t_convention='all_captions')
    assert out['t2v_MnR'] == 3.0
    # v2t rank = 1 + number of captions of the other videos: 5, 4, 6.
    assert out['v2t_MnR'] == 5.0
    assert out['v2t_MdR'] == 5.0
    assert out['v2t_R1'] == 0.0
    # clip4clip: 1 + number of other videos: 3 for each.
    out = retrieval_metrics(torch.ones(6, 3), c2v)
    assert out['t2v_MnR'] == 3.0 and out['t2v_MdR'] == 3.0
    assert out['v2t_MnR'] == 3.0 and out['v2t_MdR'] == 3.0 and out['v2t_R1'] == 0.0


# Two videos of two captions and one of three (an MSVD-like split); no ties. Rows are
# captions, columns videos. The text-to-video ranks (ground truth in brackets):
#   c0 [v0]: 0.9 0.1 0.2 -> 1      c4 [v2]: 0.1 0.2 0.7 -> 1
#   c1 [v0]: 0.3 0.5 0.4 -> 3      c5 [v2]: 0.6 0.3 0.5 -> 2
#   c2 [v1]: 0.2 0.8 0.1 -> 1      c6 [v2]: 0.3 0.2 0.1 -> 3
#   c3 [v1]: 0.7 0.6 0.0 -> 2
# t2v ranks [1, 3, 1, 2, 1, 2, 3].
PAIRS_SIM = torch.tensor([
    [0.9, 0.1, 0.2],
    [0.3, 0.5, 0.4],
    [0.2, 0.8, 0.1],
    [0.7, 0.6, 0.0],
    [0.1, 0.2, 0.7],
    [0.6, 0.3, 0.5],
    [0.3, 0.2, 0.1],
])
PAIRS_C2V = torch.tensor([0, 0, 1, 1, 2, 2, 2])


def test_v2t_conventions_by_hand():
    # Column v0: best ground truth 0.9 (c0), nothing reaches it -> rank 1 either way.
    # Column v1: best ground truth 0.8 (c2); no other caption reaches it -> 1.
    # Column v2: best ground truth 0.7 (c4); v0's best caption for it is c1 (0.4), v1's
    #   c2 (0.1) -> rank 1 under both conventions.
    # Set c1's score for v2 to 0.75 and c3's to 0.72: clip4clip counts v0 and v1 once
    # each -> 3; all captions counts c1 and c3 -> 3 as well. Set c0's to 0.71 too:
    # clip4clip stays at 3 (v0 is already counted), all captions becomes 4.
    sim = PAIRS_SIM.clone()
    sim[1, 2], sim[3, 2], sim[0, 2] = 0.75, 0.72, 0.71
    c4c = retrieval_metrics(sim, PAIRS_C2V)
    every = retrieval_metrics(sim, PAIRS_C2V, v2t_convention='all_captions')
    # v2t ranks: clip4clip [1, 1, 3], all captions [1, 1, 4].
    assert_metrics(c4c, {'v2t_R1': 200 / 3, 'v2t_R5': 100.0, 'v2t_MdR': 1.0,
                         'v2t_MnR': 5 / 3})
    assert_metrics(every, {'v2t_R1': 200 / 3, 'v2t_R5': 100.0, 'v2t_MdR': 1.0,
                           'v2t_MnR': 2.0})
    # The t2v side does not depend on the v2t convention.
    assert all(c4c[k] == every[k] for k in KEYS if k.startswith('t2v'))


def test_mdr_conventions_by_hand():
    # t2v ranks [1, 3, 1, 2, 1, 2, 3]: sorted [1, 1, 1, 2, 2, 3, 3], odd -> 2 whatever
    # the rule. Drop c6 (subset of six captions): [1, 3, 1, 2, 1, 2] sorted
    # [1, 1, 1, 2, 2, 3]; middle pair (1, 2): lower 1, mean 1.5.
    subset = torch.arange(6)
    published = retrieval_metrics(PAIRS_SIM, PAIRS_C2V, captions=subset)
    assert published['t2v_MdR'] == 1.0  # torch.median: several captions per video
    assert retrieval_metrics(PAIRS_SIM, PAIRS_C2V)['t2v_MdR'] == 2.0
    mean = retrieval_metrics(PAIRS_SIM, PAIRS_C2V, captions=subset,
                             mdr_convention='mean_of_middle')
    assert mean['t2v_MdR'] == 1.5
    lower = retrieval_metrics(PAIRS_SIM, PAIRS_C2V, captions=subset,
                              mdr_convention='lower_middle')
    assert lower['t2v_MdR'] == 1.0
    # One caption per video (MSR-VTT 1k-A): the published code uses numpy.median, the
    # mean of the middle pair, in both directions. Four captions, t2v ranks:
    #   row 0: 0.9 vs 0.1 0.2 0.3 -> 1;  row 1: 0.5 vs 0.6 0.1 0.2 -> 2
    #   row 2: 0.1 vs 0.2 0.3 0.4 -> 4;  row 3: 0.8 vs 0.1 0.2 0.3 -> 1
    # sorted [1, 1, 2, 4] -> 1.5 (torch.median would say 1).
    # v2t (columns): v0: 0.9 vs 0.6 0.2 0.1 -> 1;  v1: 0.5 vs 0.1 0.3 0.2 -> 1
    #   v2: 0.1 vs 0.2 0.1 0.3 -> ties count against: 0.2, 0.1 (tie), 0.3 -> 4
    #   v3: 0.8 vs 0.3 0.2 0.4 -> 1; sorted [1, 1, 1, 4] -> 1.0.
    square = torch.tensor([
        [0.9, 0.1, 0.2, 0.3],
        [0.6, 0.5, 0.1, 0.2],
        [0.2, 0.3, 0.1, 0.4],
        [0.1, 0.2, 0.3, 0.8],
    ])
    out = retrieval_metrics(square, torch.arange(4))
    assert out['t2v_MdR'] == 1.5 and out['v2t_MdR'] == 1.0
    assert retrieval_metrics(square, torch.arange(4),
                             mdr_convention='lower_middle')['t2v_MdR'] == 1.0
    # Video-to-text always takes the mean of the middle pair under 'published': with
    # several captions per video (v2t ranks [1, 2] in the MULTI example) -> 1.5.
    assert retrieval_metrics(MULTI_SIM, MULTI_C2V)['v2t_MdR'] == 1.5
    assert retrieval_metrics(MULTI_SIM, MULTI_C2V,
                             mdr_convention='lower_middle')['v2t_MdR'] == 1.0


def test_unknown_conventions_are_rejected():
    with pytest.raises(ValueError, match="v2t_convention must be one of"):
        retrieval_metrics(PAIRS_SIM, PAIRS_C2V, v2t_convention='best')
    with pytest.raises(ValueError, match="mdr_convention must be one of"):
        retrieval_metrics(PAIRS_SIM, PAIRS_C2V, mdr_convention='numpy')
    with pytest.raises(ValueError, match='median must be one of'):
        recall_from_ranks(torch.tensor([1, 2]), 'x', median='upper')


def test_perfect_matrix():
    n = 20
    sim = torch.eye(n) * 0.5 + 0.1
    out = retrieval_metrics(sim, torch.arange(n))
    for side in ('t2v', 'v2t'):
        assert out[f'{side}_R1'] == 100.0
        assert out[f'{side}_MdR'] == 1.0
        assert out[f'{side}_MnR'] == 1.0
    assert out['R_sum'] == 600.0


def test_captions_subset_restricts_t2v_only():
    full = retrieval_metrics(MULTI_SIM, MULTI_C2V)
    mask = torch.tensor([True, False, False, True, False])
    sub = retrieval_metrics(MULTI_SIM, MULTI_C2V, captions=mask)
    # Captions 0 and 3 both rank their video 2nd.
    assert_metrics(sub, {'t2v_R1': 0.0, 't2v_R5': 100.0, 't2v_MdR': 2.0, 't2v_MnR': 2.0})
    for key in KEYS:
        if key.startswith('v2t'):
            assert sub[key] == full[key]
    assert sub['R_sum'] == pytest.approx(0.0 + 200.0 + full['v2t_R1'] + 200.0)
    by_index = retrieval_metrics(MULTI_SIM, MULTI_C2V, captions=torch.tensor([1, 2, 4]))
    assert by_index['t2v_R1'] == 100.0
    same = retrieval_metrics(MULTI_SIM, MULTI_C2V, captions=torch.tensor([0, 3]))
    assert same == sub


def test_invalid_inputs():
    with pytest.raises(ValueError, match='empty'):
        retrieval_metrics(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match='2-D'):
        retrieval_metrics(torch.ones(3), torch.arange(3))
    with pytest.raises(ValueError, match='caption_to_video must have shape'):
        retrieval_metrics(torch.ones(3, 3), torch.arange(2))
    with pytest.raises(ValueError, match='lie in'):
        retrieval_metrics(torch.ones(3, 3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match='lie in'):
        retrieval_metrics(torch.ones(3, 3), torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match='no caption'):
        retrieval_metrics(torch.ones(3, 3), torch.arange(3), captions=torch.zeros(3).bool())
    with pytest.raises(ValueError, match='mask'):
        retrieval_metrics(torch.ones(3, 3), torch.arange(3), captions=torch.ones(2).bool())


def test_non_finite_scores_are_rejected():
    sim = torch.rand(4, 5)
    sim[1, 2] = float('nan')
    sim[3, 0] = float('inf')
    sim[0, 4] = float('-inf')
    with pytest.raises(ValueError, match='1 NaN and 2 inf'):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match='1 NaN and 2 inf'):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 3]), block_rows=1)


@pytest.mark.parametrize('seed', range(6))
def test_vectorised_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    num_videos = 4 + seed * 3
    num_captions = num_videos + 5 * seed
    # Few distinct integer scores -> many ties; some videos get no caption.
    sim = torch.randint(0, 4, (num_captions, num_videos), generator=gen).float()
    c2v = torch.randint(0, num_videos - 1, (num_captions,), generator=gen)
    several = bool((torch.bincount(c2v) > 1).any())
    for convention in ('all_captions', 'clip4clip'):
        t2v, v2t = brute_force(sim, c2v, convention)
        for mdr in ('mean_of_middle', 'lower_middle'):
            expected = {**recall_from_ranks(t2v, 't2v', mdr),
                        **recall_from_ranks(v2t, 'v2t', mdr)}
            for block_rows in (None, 1, 3):
                out = retrieval_metrics(sim, c2v, v2t_convention=convention,
                                        mdr_convention=mdr, block_rows=block_rows)
                assert_metrics(out, expected)
        published = retrieval_metrics(sim, c2v, v2t_convention=convention, block_rows=2)
        t2v_rule = 'lower_middle' if several else 'mean_of_middle'
        assert_metrics(published, recall_from_ranks(t2v, 't2v', t2v_rule))
        assert_metrics(published, recall_from_ranks(v2t, 'v2t'))
        subset = torch.randperm(num_captions, generator=gen)[:num_captions // 2 + 1]
        out = retrieval_metrics(sim, c2v, captions=subset, v2t_convention=convention,
                                mdr_convention='mean_of_middle', block_rows=2)
        assert_metrics(out, recall_from_ranks(t2v[subset], 't2v'))
        assert_metrics(out, recall_from_ranks(v2t, 'v2t'))


def test_dual_softmax_formula_and_hub_correction():
    sim = torch.tensor([[0.5, 0.6], [0.1, 0.7]])
    out = dual_softmax(sim, temperature=1.0)
    assert out.shape == sim.shape and out.dtype == sim.dtype
    e = torch.exp
    expected_00 = 0.5 * e(torch.tensor(0.5)) / (e(torch.tensor(0.5)) + e(torch.tensor(0.1)))
    assert float(out[0, 0]) == pytest.approx(float(expected_00), rel=1e-6)
    # Video 1 is a hub (best for both captions); DSL lowers it for caption 0.
    c2v = torch.tensor([0, 1])
    assert retrieval_metrics(sim, c2v)['t2v_R1'] == 50.0
    assert retrieval_metrics(dual_softmax(sim), c2v)['t2v_R1'] == 100.0
    big = dual_softmax(torch.randn(7, 3))
    assert big.shape == (7, 3)
    with pytest.raises(ValueError):
        dual_softmax(sim, temperature=0.0)


# Four videos with one-hot features (scaled, the metric must normalise) and four
# captions: video 0 has captions a, b; video 1 has c; video 2 none; video 3 has d.
# sim = [[1, 0, 0, 0], [.6, .8, 0, 0], [0, .6, .8, 0], [0, 0, .8, .6]].
# t2v ranks [1, 2, 2, 2]; v2t ranks [1, 2, -, 1].
E2E_EXPECTED = {
    't2v_R1': 25.0, 't2v_R5': 100.0, 't2v_R10': 100.0, 't2v_MdR': 2.0, 't2v_MnR': 1.75,
    'v2t_R1': 200 / 3, 'v2t_R5': 100.0, 'v2t_R10': 100.0, 'v2t_MdR': 1.0, 'v2t_MnR': 4 / 3,
    'R_sum': 25.0 + 200.0 + 200 / 3 + 200.0,
}


def e2e_samples():
    eye = torch.eye(4)
    texts = {
        0: torch.tensor([[2.0, 0, 0, 0], [0.3, 0.4, 0, 0]]),
        1: torch.tensor([[0, 6.0, 8.0, 0]]),
        2: torch.zeros(0, 4),
        3: torch.tensor([[0, 0, 0.8, 0.6]]),
    }
    scales = [2.0, 0.5, 3.0, 7.0]
    return [dict(video_feat=eye[i] * scales[i], text_feats=texts[i], video_index=i)
            for i in range(4)]


def test_retrieval_metric_end_to_end(tmp_path):
    samples = e2e_samples()
    # Shuffled, with padding duplicates as a distributed sampler would add them.
    stream = [samples[2], samples[0], samples[3], samples[1], samples[0], samples[3]]
    out_file = tmp_path / 'deep' / 'er' / 'metrics.json'
    dump = tmp_path / 'sims' / 'sim.pt'
    metric = RetrievalMetric(out_file=str(out_file), dump_sim=str(dump))
    metric.process(None, stream[:4])
    metric.process(None, stream[4:])
    metrics = metric.evaluate(len(stream))
    assert set(metrics) == {f'retrieval/{key}' for key in KEYS}
    assert_metrics({k.split('/', 1)[1]: v for k, v in metrics.items()}, E2E_EXPECTED)

    reloaded = json.loads(out_file.read_text())
    assert set(reloaded) == KEYS | {'v2t_convention', 'mdr_convention'}
    assert reloaded['v2t_convention'] == 'clip4clip'
    assert reloaded['mdr_convention'] == 'published'
    assert_metrics(reloaded, {k: v for k, v in reloaded.items() if k in KEYS})
    assert_metrics(reloaded, E2E_EXPECTED)
    assert [p.name for p in out_file.parent.iterdir()] == ['metrics.json']

    saved = torch.load(dump, weights_only=True)
    assert saved['caption_to_video'].tolist() == [0, 0, 1, 3]
    expected_sim = torch.tensor([[1, 0, 0, 0], [.6, .8, 0, 0], [0, .6, .8, 0], [0, 0, .8, .6]])
    torch.testing.assert_close(saved['sim'], expected_sim)
    assert metric.results == []


def test_retrieval_metric_data_elements_and_dsl():
    samples = e2e_samples()
    random.Random(0).shuffle(samples)
    elements = [BaseDataElement(**s) for s in samples]
    metric = RetrievalMetric(dsl=True)
    metric.process(None, elements)
    out = metric.compute_metrics(metric.results)
    assert set(out) == KEYS | {f'dsl_{key}' for key in KEYS}
    assert_metrics(out, E2E_EXPECTED)
    # DSL demotes the hub video 2 (0.8 for both c and d, prior 1/2 each), so caption d
    # now finds video 3 (0.6 * ~1 > 0.4): t2v ranks [1, 2, 2, 1]. b keeps 0.8 on video 1
    # (it dominates that column) and c's score on video 1 collapses, so both stay at 2.
    # Video 0 has two captions, so the published MdR is the lower middle rank: 1.
    assert_metrics(out, {
        'dsl_t2v_R1': 50.0, 'dsl_t2v_MdR': 1.0, 'dsl_t2v_MnR': 1.5,
        'dsl_v2t_R1': 200 / 3, 'dsl_v2t_MnR': 4 / 3,
        'dsl_R_sum': 50.0 + 200.0 + 200 / 3 + 200.0,
    })
    line = format_metrics(out)
    assert 'R@1 25.0' in line and 'R_sum 491.7' in line


def conventions_samples():
    """Three one-hot videos; video 0 has captions a, b, video 1 has c, video 2 has d.

    sim (rows a, b, c, d; columns videos 0-2) = [[.8, .6, 0], [.6, .8, 0],
    [0, .5, .866], [0, 0, 1]]. t2v ranks [1, 2, 2, 1]. On video 1, c's 0.5 is beaten by
    a and b: clip4clip counts video 0 once (rank 2), all captions counts both (rank 3).
    v2t ranks: clip4clip [1, 2, 1], all captions [1, 3, 1].
    """
    eye = torch.eye(3)
    texts = {0: torch.tensor([[0.8, 0.6, 0.0], [0.6, 0.8, 0.0]]),
             1: torch.tensor([[0.0, 0.5, 0.866]]), 2: torch.tensor([[0.0, 0.0, 1.0]])}
    return [dict(video_feat=eye[i], text_feats=texts[i], video_index=i) for i in range(3)]


@pytest.mark.parametrize('v2t, mdr, expected', [
    ('clip4clip', 'published', {'t2v_MdR': 1.0, 'v2t_MnR': 4 / 3, 'v2t_MdR': 1.0}),
    ('all_captions', 'published', {'t2v_MdR': 1.0, 'v2t_MnR': 5 / 3, 'v2t_MdR': 1.0}),
    ('clip4clip', 'mean_of_middle', {'t2v_MdR': 1.5, 'v2t_MnR': 4 / 3}),
])
def test_metric_conventions_and_protocol_are_reported(tmp_path, v2t, mdr, expected):
    out_file = tmp_path / 'metrics.json'
    metric = RetrievalMetric(v2t_convention=v2t, mdr_convention=mdr, protocol='paper',
                             out_file=str(out_file))
    metric.process(None, conventions_samples())
    out = metric.evaluate(3)
    assert out['retrieval/protocol'] == 'paper'
    assert_metrics({k.split('/', 1)[1]: v for k, v in out.items()},
                   {'t2v_R1': 50.0, 't2v_MnR': 1.5, 'v2t_R1': 200 / 3, **expected})
    saved = json.loads(out_file.read_text())
    assert (saved['protocol'], saved['v2t_convention'], saved['mdr_convention']) == (
        'paper', v2t, mdr)
    assert_metrics(saved, expected)


def test_metric_logs_the_protocol(monkeypatch):
    from mmengine.logging import MMLogger
    lines = []
    logger = MMLogger.get_instance('protocol_log_test')
    monkeypatch.setattr(logger, 'info', lines.append)
    monkeypatch.setattr(MMLogger, 'get_current_instance', lambda: logger)
    metric = RetrievalMetric(protocol='clean')
    metric.process(None, conventions_samples())
    metric.compute_metrics(metric.results)
    assert any('(3 videos, 4 captions, clean protocol)' in line for line in lines)


def test_retrieval_metric_errors():
    with pytest.raises(ValueError, match='v2t_convention must be one of'):
        RetrievalMetric(v2t_convention='videos')
    with pytest.raises(ValueError, match='mdr_convention must be one of'):
        RetrievalMetric(mdr_convention='median')
    metric = RetrievalMetric()
    with pytest.raises(ValueError, match='no videos were evaluated'):
        metric.compute_metrics([])
    with pytest.raises(KeyError, match='video_index'):
        metric.process(None, [dict(video_feat=torch.ones(4), text_feats=torch.ones(1, 4))])
    with pytest.raises(ValueError, match='text_feats'):
        metric.process(None, [dict(video_feat=torch.ones(4), text_feats=torch.ones(2, 3),
                                   video_index=0)])
    metric.process(None, [dict(video_feat=torch.ones(4), text_feats=torch.zeros(0, 4),
                               video_index=0)])
    with pytest.raises(ValueError, match='none has a caption'):
        metric.compute_metrics(metric.results)


def test_registered_beside_mmaction_metric():
    import mmaction.evaluation  # noqa: F401  (registers mmaction's own RetrievalMetric)
    from mmaction.registry import METRICS

    assert METRICS.get('TempMeRetrievalMetric') is RetrievalMetric
    assert METRICS.get('RetrievalMetric') is not RetrievalMetric
    metric = METRICS.build(dict(type='TempMeRetrievalMetric', dsl=True))
    assert isinstance(metric, RetrievalMetric) and metric.dsl
    assert metric.prefix == 'retrieval'


def test_tools_that_rank_saved_matrices_use_the_configs_conventions():
    """The demo and test_onnx rank with the test_evaluator's conventions, as tools/test.py."""
    from mmengine.config import Config

    from projects.tempme.evaluation import evaluator_conventions
    root = Path(__file__).resolve().parents[1] / 'configs'
    demo = Config.fromfile(root / 'tempme_synthetic.py').test_evaluator
    assert evaluator_conventions(demo) == dict(v2t_convention='all_captions',
                                               mdr_convention='published')
    msrvtt = Config.fromfile(root / 'tempme_msrvtt.py').test_evaluator
    assert evaluator_conventions(msrvtt) == dict(v2t_convention='clip4clip',
                                                 mdr_convention='published')
    listed = [dict(type='AccMetric'), dict(type='TempMeRetrievalMetric',
                                           mdr_convention='lower_middle')]
    assert evaluator_conventions(listed)['mdr_convention'] == 'lower_middle'
