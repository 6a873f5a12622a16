# TempMe on MSR-VTT read from a frame cache: each video's reference frames decoded once, as
# decord gives them (bit-identical clips; RandAugment and the resize still run per item).
#   python tools/data/cache_frames.py configs/tempme_msrvtt_cached.py --split all --workers 8
_base_ = ['tempme_msrvtt.py']

# training: frames as decoded (RandAugment and the resize run per item); evaluation: the
# final 224 px clips (nothing random is left), so the resize step has nothing to do
load_cached = dict(type='LoadCachedFrames', clip_len=_base_.num_frames, frame_rate=1)
load_cached_eval = dict(load_cached, size=_base_.image_size)
# the reference pipelines with decord's three steps replaced by the cache
train_pipeline = [load_cached] + _base_.train_pipeline[3:]
test_pipeline = [load_cached_eval] + _base_.test_pipeline[3:]
# the caches live under data_root next to the videos: a new data_root moves both
train_dataloader = dict(
    dataset=dict(pipeline=train_pipeline, data_prefix=dict(frame_cache='frame_cache')))
val_dataloader = dict(
    dataset=dict(pipeline=test_pipeline, data_prefix=dict(frame_cache='frame_cache_eval')))
test_dataloader = val_dataloader
