# Action recognition on Kinetics-400 with TempMe as an efficient video backbone: CLIP
# ViT-B/32 with TempMe's token merging (12 frames), fine-tuned whole, inside mmaction2's own
# components (VideoDataset, the stock decord pipeline, ActionDataPreprocessor,
# Recognizer3D, TimeSformerHead, AccMetric). Only the backbone comes from this project.
#
#   python tools/train.py configs/recognition/tempme_vit_b32_k400.py
#   python tools/test.py configs/recognition/tempme_vit_b32_k400.py work_dirs/.../best_*.pth
#
# mmaction2's own tools/train.py and tools/test.py run it too (custom_imports registers
# TempMeViT). Expects CLIP weights at checkpoints/clip/ViT-B-32.pt and Kinetics-400 under
# data/kinetics400 (videos_{train,val}/ and kinetics400_{train,val}_list_videos.txt, lines
# `path label`); override with --cfg-options model.backbone.clip.weights=... etc.
_base_ = ['../_base_/schedules/adamw_cosine_5e.py', '../_base_/default_runtime.py']

num_frames = 12
image_size = 224
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='TempMeViT',
        clip=dict(arch='ViT-B-32', weights='checkpoints/clip/ViT-B-32.pt'),
        num_frames=num_frames,
        merge='tempme',
        # FormatShape('NCTHW') gives (B, 3, T, H, W); TimeSformerHead takes (B, D).
        input_layout='NCTHW',
        output='mean'),
    cls_head=dict(type='TimeSformerHead', num_classes=400, in_channels=512,
                  average_clips='prob'),
    # CLIP's normalisation, in 0-255 pixel units.
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[122.770938, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        format_shape='NCTHW'))

dataset_type = 'VideoDataset'
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
train_pipeline = [
    dict(type='DecordInit'),
    # 12 frames 8 apart: about 4 s of a 10 s clip at 25 fps.
    dict(type='SampleFrames', clip_len=num_frames, frame_interval=8, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames, frame_interval=8, num_clips=1,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, ann_file=ann_file_train,
                 data_prefix=dict(video=data_root), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file_val,
                 data_prefix=dict(video=data_root_val), pipeline=val_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

# Full fine-tuning: pretrained CLIP at a small learning rate; the new head and the
# zero-initialised temporal embeddings 10x faster, the embeddings without weight decay.
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'cls_head': dict(lr_mult=10.0),
        'temporal_embedding': dict(lr_mult=10.0, decay_mult=0.0)}))
auto_scale_lr = dict(enable=False, base_batch_size=128)

default_hooks = dict(checkpoint=dict(save_best='acc/top1', rule='greater'))
# The runtime's PEFTCheckpointHook is for the retriever's adapter-only checkpoints
# (it needs TempMeRetriever.parameter_counts): a fine-tuned recognizer saves everything.
custom_hooks = [dict(type='EpochSeedHook')]
