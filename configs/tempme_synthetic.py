# TempMe trained from scratch on the built-in synthetic benchmark (tools/data/make_synthetic.py):
# a tiny CLIP whose frames keep ViT-B/32's 12 x 50 token layout, so the default merge
# schedule applies unchanged. Used by `make demo`; CPU-sized.
_base_ = ['tempme_tiny.py']

data_root = 'data/synthetic'
# 56 px frames in 8 px patches keep 50 tokens per frame; width 32 and MLP ratio 2 keep
# six epochs for both methods inside the demo's 10 minutes on 2 CPU cores (README).
model = dict(
    lora=None,
    train_mode='full',
    # trained from scratch: start the clips distinguishable (TempMe's default is zero)
    video_encoder=dict(temporal_init_std=0.5),
    clip=dict(quick_gelu=False, arch=dict(
        embed_dim=64,
        # temperature 0.02 instead of CLIP's 0.07: twins, the hardest negatives, weigh more
        init_logit_scale=3.912023,  # log(50)
        vision_cfg=dict(image_size=56, patch_size=8, width=32, head_width=16, mlp_ratio=2.0),
        text_cfg=dict(width=64, heads=2, layers=2))))

# The reference frame rule (12 frames of a 1 fps video: every frame, in order) and resize,
# so the demo's checkpoint also takes real videos of any size. No RandAugment: its colour
# operations (Invert, Solarize, Color) would contradict captions such as "turns red".
# Training reads the frames from a frame cache (bit-identical to decoding, 5x faster to
# load; tools/demo.py builds it, or: python tools/data/cache_frames.py
# configs/tempme_synthetic.py --split train); evaluation decodes the videos.
image_size = 56
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='FpsGridSample', clip_len=12, frame_rate=1),
    dict(type='DecordDecode'),
    dict(type='PILResizeCenterCrop', size=image_size),
    dict(type='OpenCLIPTokenize', context_length=32),
    dict(type='PackVideoTextInputs'),
]
train_pipeline = [dict(type='LoadCachedFrames', clip_len=12, frame_rate=1)] + test_pipeline[3:]
# Order twins (the same frames in another order) share a global batch, so the loss has
# to tell them apart: without that, random batches almost never contain a twin pair.
train_dataloader = dict(
    # no loader worker: on two cores it takes CPU from the two training threads (compare
    # the logged iteration time with train_dataloader.num_workers=1)
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(_delete_=True, type='VideoGroupSampler', groups_file='meta.json',
                 groups_key='splits.train.twin_groups'),
    dataset=dict(data_root=data_root, ann_file='train.json', pipeline=train_pipeline,
                 data_prefix=dict(frame_cache='frame_cache')))
val_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='val.json', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='test.json', pipeline=test_pipeline))
# Two captions per video: video-to-text ranks every caption (the demo's order-blind ceiling
# is stated on all captions); the published code's convention is v2t_convention='clip4clip'.
val_evaluator = dict(v2t_convention='all_captions')
test_evaluator = dict(dsl=False, v2t_convention='all_captions')

max_epochs = 6
# tools/demo.py tests the final checkpoint itself: no validation pass during training
# (mmengine validates after the last epoch whatever val_interval says; val_begin stops it)
train_cfg = dict(max_epochs=max_epochs, val_begin=max_epochs + 1)
# lr chosen on the validation split for both methods (`tools/demo.py --split val`, README)
# torch's AdamW on the true gradient (the modern recipe, _base_/schedules/adamw_cosine_5e.py).
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=5e-4, weight_decay=0.05, betas=(0.9, 0.98),
                   eps=1e-6, fused=True),
    grad_scale=1.0,
    # the temporal embeddings are the only path for frame order: let them move faster
    paramwise_cfg=dict(custom_keys={'temporal_embedding': dict(lr_mult=10.0, decay_mult=0.0)}))
param_scheduler = [dict(type='WarmupCosineLR', warmup_ratio=0.1, start_factor=1e-2, by_epoch=True,
                        convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, save_best=None, max_keep_ckpts=1))
