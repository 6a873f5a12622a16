# Baseline: CLIP4Clip mean pooling (full fine-tuning, no merging, no adapters), ViT-B/32.
# Expects the same files as tempme_msrvtt.py (CLIP weights at checkpoints/clip/ViT-B-32.pt,
# MSR-VTT under data/msrvtt); override with --cfg-options.
_base_ = ['clip4clip_tempme_msrvtt.py']

model = dict(
    head=dict(_delete_=True, type='MeanCLSHead'),
    video_encoder=dict(merge='none'))
