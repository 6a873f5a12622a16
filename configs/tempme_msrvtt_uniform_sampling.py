# NOT THE REFERENCE PROTOCOL: TempMe on MSR-VTT with mmaction2's own frame sampling and
# resize (UniformSample over equal segments, random within each segment in training;
# OpenCV Resize + CenterCrop; no RandAugment). Kept for comparisons with mmaction2-style
# pipelines; results are not comparable with the paper's (README, "Evaluation protocol").
_base_ = ['tempme_msrvtt.py']

image_size = 224
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=12, num_clips=1, test_mode=False),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, image_size)),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='OpenCLIPTokenize', context_length=32),
    dict(type='PackVideoTextInputs'),
]
test_pipeline = [dict(t, test_mode=True) if t['type'] == 'UniformSample' else t
                 for t in train_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
