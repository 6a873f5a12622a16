"""Pure merging functions: matching, weighted merge, source tracking, clip grouping."""
import pytest
import torch

from projects.tempme.merging import (bipartite_soft_matching, clip_of_token, group_clips,
                                     merge_source, merge_wavg)


def _tokens(n=3, t=11, c=8, seed=0):
    return torch.randn(n, t, c, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('num_cls', [1, 2, 3])
@pytest.mark.parametrize('r', [1, 3, 5])
def test_sizes_sum_to_replaced_tokens_and_weighted_mean_is_preserved(num_cls, r):
    x = _tokens(t=13)
    size = torch.rand(3, 13, 1) + 0.5
    merge = bipartite_soft_matching(x, r, num_cls)
    merged, new_size = merge_wavg(merge, x, size)
    assert merged.shape == (3, 13 - r, 8)
    torch.testing.assert_close(new_size.sum(1), size.sum(1))
    # The size-weighted mean over all tokens is what a merge must not change.
    torch.testing.assert_close((merged * new_size).sum(1), (x * size).sum(1))


def test_r_zero_is_identity():
    x = _tokens()
    merge = bipartite_soft_matching(x, 0, 1)
    assert merge(x) is x


@pytest.mark.parametrize('num_cls', [1, 4])
def test_cls_tokens_never_move(num_cls):
    x = _tokens(t=15)
    merge = bipartite_soft_matching(x, 5, num_cls)
    merged, _ = merge_wavg(merge, x, torch.ones(3, 15, 1))
    torch.testing.assert_close(merged[:, :num_cls], x[:, :num_cls])
    source = merge_source(merge, torch.eye(15).expand(3, 15, 15))
    assert torch.equal(source[:, :num_cls], torch.eye(15)[:num_cls].expand(3, -1, -1))
    # Every original token ends up in exactly one output token.
    assert torch.equal(source.sum(1), torch.ones(3, 15))


def test_most_similar_pair_merges_and_order_is_kept():
    # One CLS token -> sources are patches 1, 3 (odd positions), destinations 0, 2, 4.
    patches = torch.tensor([[1., 0.], [0., 1.], [1., .1], [-1., 0.], [0., -1.]])
    x = torch.cat([torch.tensor([[5., 5.]]), patches])[None]
    merged, size = merge_wavg(bipartite_soft_matching(x, 1, 1), x, torch.ones(1, 6, 1))
    # Source patch 3 ([-1, 0]) is orthogonal to everything but its best match; source
    # patch 1 ([0, 1]) matches destination [1, .1] best with the highest score overall.
    expected = torch.tensor([[5., 5.], [-1., 0.], [1., 0.], [.5, .55], [0., -1.]])
    torch.testing.assert_close(merged[0], expected)
    assert size[0, :, 0].tolist() == [1, 1, 1, 2, 1]


def test_too_many_tokens_is_an_error():
    with pytest.raises(ValueError, match='cannot merge'):
        bipartite_soft_matching(_tokens(t=7), 4, 1)


def test_group_clips_puts_cls_tokens_first_and_tracks_clip_of_token():
    num_cls, t = 2, 5
    x = torch.arange(4 * t, dtype=torch.float).view(4, t, 1)  # 2 videos x 2 clips
    grouped = group_clips(x, 2, num_cls)
    assert grouped.shape == (2, 2 * t, 1)
    assert grouped[0, :, 0].tolist() == [0, 1, 5, 6, 2, 3, 4, 7, 8, 9]
    assert clip_of_token(2, t, num_cls).tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]
    assert group_clips(x, 1, num_cls) is x
