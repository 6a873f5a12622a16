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

# TempMe's published data protocol (README, "Evaluation protocol"): frames on a 1 fps grid
# thinned to num_frames (the same in training and evaluation), PIL bicubic short side to
# image_size and a centre crop; training adds RandAugment drawn once per clip, before the
# resize. tools/analysis/check_pipeline.py compares it with the published loader.
frame_sampler = dict(type='FpsGridSample', clip_len=num_frames, frame_rate=1)
train_pipeline = [
    dict(type='DecordInit'),
    frame_sampler,
    dict(type='DecordDecode'),
    dict(type='ClipRandAugment', config='rand-m7-n4-mstd0.5-inc1',
         translate_const=int(0.45 * image_size), interpolation='bicubic'),
    dict(type='PILResizeCenterCrop', size=image_size),
    dict(type='OpenCLIPTokenize', context_length=context_length),
    dict(type='PackVideoTextInputs'),
]
test_pipeline = [
    dict(type='DecordInit'),
    frame_sampler,
    dict(type='DecordDecode'),
    dict(type='PILResizeCenterCrop', size=image_size),
    dict(type='OpenCLIPTokenize', context_length=context_length),
    dict(type='PackVideoTextInputs'),
]

# 16 videos per GPU x 8 GPUs = the reference's global batch of 128 (one GPU: batch_size=128
# with model.train_chunk_size=16 gives the same update). The published loader drops the last
# partial batch: 1406 steps per epoch on 9k, not 1407 with a last batch of 32 videos.
train_dataloader = dict(
    batch_size=16,
    drop_last=True,
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
