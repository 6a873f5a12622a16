# Baseline: LoRA r8 with ToMe only (r=2 tokens merged inside each frame at every layer,
# no merging across frames).
_base_ = ['tempme_msrvtt.py']

model = dict(
    video_encoder=dict(merge_layers=(), clips_per_merge=(), imgme_r=2,
                       temporal_embedding=False))
