# Baseline: LoRA r8 on CLIP ViT-B/32 with no token merging (per-frame CLIP, mean pooling).
_base_ = ['tempme_msrvtt.py']

model = dict(
    video_encoder=dict(merge_layers=(), clips_per_merge=(), imgme_r=0,
                       temporal_embedding=False))
