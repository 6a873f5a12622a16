# Baseline: LoRA r8 on CLIP ViT-B/32 with no token merging (per-frame CLIP, mean pooling).
# Expects the same files as tempme_msrvtt.py (CLIP weights at checkpoints/clip/ViT-B-32.pt,
# MSR-VTT under data/msrvtt); override with --cfg-options.
_base_ = ['tempme_msrvtt.py']

model = dict(video_encoder=dict(merge='none'))
