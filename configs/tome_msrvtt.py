# Baseline: LoRA r8 with ToMe only (the 'tome' merge preset: TempMe's r=2 tokens merged
# inside each frame at every layer, no merging across frames).
# Expects the same files as tempme_msrvtt.py (CLIP weights at checkpoints/clip/ViT-B-32.pt,
# MSR-VTT under data/msrvtt); override with --cfg-options.
_base_ = ['tempme_msrvtt.py']

model = dict(video_encoder=dict(merge='tome'))
