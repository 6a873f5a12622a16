# TempMe on MSR-VTT read from re-encoded videos (3 fps, short side 224, a keyframe on every
# second, no B-frames): the same moments, test clips 7x faster per core (README, "Data loading").
#   python tools/data/compress_videos.py data/msrvtt/videos/all data/msrvtt/videos/compressed
_base_ = ['tempme_msrvtt.py']

video_prefix = dict(video='videos/compressed')
train_dataloader = dict(dataset=dict(data_prefix=video_prefix))
val_dataloader = dict(dataset=dict(data_prefix=video_prefix))
test_dataloader = val_dataloader
