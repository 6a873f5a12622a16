# MSR-VTT: train on the 9k split, evaluate on 1k-A (JSFusion test set).
# Layout (see tools/data/README.md):
#   data/msrvtt/videos/all/*.mp4
#   data/msrvtt/annotations/msrvtt_train_9k.json   {video_file: [caption, ...]}
#   data/msrvtt/annotations/msrvtt_test_1k.json
dataset_type = 'VideoTextRetrievalDataset'
data_root = 'data/msrvtt'
num_frames = 12
image_size = 224
context_length = 32

train_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=num_frames, num_clips=1, test_mode=False),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, image_size)),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='OpenCLIPTokenize', context_length=context_length),
    dict(type='PackVideoTextInputs'),
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=num_frames, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, image_size)),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='OpenCLIPTokenize', context_length=context_length),
    dict(type='PackVideoTextInputs'),
]

# 16 videos per GPU x 8 GPUs = the reference's global batch of 128.
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        ann_file='annotations/msrvtt_train_9k.json',
        data_root=data_root,
        data_prefix=dict(video='videos/all'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        ann_file='annotations/msrvtt_test_1k.json',
        data_root=data_root,
        data_prefix=dict(video='videos/all'),
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

val_evaluator = dict(type='TempMeRetrievalMetric')
test_evaluator = dict(type='TempMeRetrievalMetric', dsl=True)
