"""The merge schedule: token counts per layer and build-time validation."""
import pytest

from projects.tempme.merging import MergeSchedule


def test_default_schedule_matches_reference_token_counts():
    schedule = MergeSchedule(num_layers=12, num_frames=12, tokens_per_frame=50)
    assert schedule.tokens_per_video() == [600, 576, 552, 528, 504, 480, 456, 432, 408,
                                           264, 168, 107, 97]
    assert [p.clips_out for p in schedule.layers] == [12] * 8 + [6, 3, 1, 1]
    clipme = schedule.layers[8:11]
    assert [(p.cross_r, p.intra_r) for p in clipme] == [(20, 4), (26, 6), (50, 11)]
    assert schedule.layers[11].intra_r == 10
    assert schedule.output_tokens_per_video == 97
    assert schedule.layers[10].cls_out == 12


def test_plain_and_tome_only_are_schedules():
    plain = MergeSchedule.plain(12, 12, 50)
    assert plain.tokens_per_video() == [600] * 13
    tome = MergeSchedule(12, 12, 50, merge_layers=(), clips_per_merge=(), imgme_r=2)
    assert tome.tokens_per_video()[-1] == 12 * (50 - 24)
    assert all(p.kind == 'imgme' for p in tome.layers)


def test_presets_name_the_three_settings():
    assert MergeSchedule.preset('tempme') == dict(
        merge_layers=(8, 9, 10), clips_per_merge=(2, 2, 3), cross_clip_ratio=0.3,
        intra_clip_ratio=0.1, imgme_r=2)
    assert MergeSchedule(12, 12, 50, **MergeSchedule.preset()).output_tokens_per_video == 97
    tome = MergeSchedule(12, 12, 50, **MergeSchedule.preset('tome'))
    assert tome.tokens_per_video() == [600 - 24 * k for k in range(13)]
    tome3 = MergeSchedule(12, 12, 50, **MergeSchedule.preset('tome', imgme_r=3))
    assert tome3.output_tokens_per_video == 12 * (50 - 36)
    assert MergeSchedule(12, 12, 50, **MergeSchedule.preset('none')) == MergeSchedule.plain(
        12, 12, 50)
    with pytest.raises(ValueError, match=r"unknown merge preset 'tome2'.*'none', 'tempme'"):
        MergeSchedule.preset('tome2')
    with pytest.raises(ValueError, match=r"unknown merge setting\(s\) \['r'\]"):
        MergeSchedule.preset('tome', r=4)


def test_settings_of_an_encoder_config_put_its_fields_over_its_preset():
    assert MergeSchedule.settings_of(dict(type='TempMeViT', num_frames=12)) == \
        MergeSchedule.preset('tempme')
    assert MergeSchedule.settings_of(dict(merge='tempme', clips_per_merge=(4, 4, 4),
                                          imgme_r=None)) == \
        MergeSchedule.preset('tempme', clips_per_merge=(4, 4, 4))
    assert MergeSchedule.settings_of(dict(merge='none', imgme_r=2)) == MergeSchedule.preset('tome')


def test_per_layer_r_and_caps():
    schedule = MergeSchedule(4, 4, 10, merge_layers=(2, ), clips_per_merge=(4, ),
                             cross_clip_ratio=0.9, intra_clip_ratio=0.9, imgme_r=(1, 2))
    # 10 -> 9 -> 7 tokens per frame; grouped 28 tokens with 4 CLS: cap (28 - 4) // 2 = 12.
    assert schedule.layers[2].cross_r == 12
    assert schedule.layers[2].intra_r == (16 - 4) // 2


@pytest.mark.parametrize('kwargs, field', [
    (dict(merge_layers=(8, 9, 12)), 'merge_layers'),
    (dict(merge_layers=(9, 8, 10)), 'merge_layers'),
    (dict(clips_per_merge=(2, 2)), 'clips_per_merge'),
    (dict(clips_per_merge=(5, 2, 3)), 'clips_per_merge'),
    (dict(clips_per_merge=(2, 2, 0)), 'clips_per_merge'),
    (dict(cross_clip_ratio=1.0), 'cross_clip_ratio'),
    (dict(intra_clip_ratio=-0.1), 'intra_clip_ratio'),
    (dict(imgme_r=-1), 'imgme_r'),
    (dict(imgme_r=(2, 2)), 'imgme_r'),
])
def test_impossible_schedules_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MergeSchedule(12, 12, 50, **kwargs)


def test_imgme_r_beyond_half_the_patches_is_an_error():
    # 9 patches allow r = 4 at layer 0, but the 5 left at layer 1 allow only 2.
    with pytest.raises(ValueError, match='imgme_r=4 at layer 1'):
        MergeSchedule(12, 12, 10, imgme_r=4)
