# TempMe (PEFT, LoRA r8) on DiDeMo paragraph retrieval with CLIP ViT-B/32.
# TempMe's published code ships only the MSR-VTT script, so the data settings follow
# CLIP4Clip's paragraph setting; the optimisation recipe is TempMe's.
# - 64 frames, 64 text tokens: CLIP4Clip README (--max_frames 64 --max_words 64).
# - 5 epochs, global batch 128 (16 per GPU x 8 GPUs): CLIP4Clip README (--epochs 5
#   --batch_size 128 on 8 GPUs) and TempMe's main.py defaults; AdamW 6e-4, wd 0.2, cosine
#   with 10% warm-up: TempMe's main.py defaults (_base_/schedules/adamw_cosine_5e.py).
# - Merge schedule for 64 frames: ClipMe on layers 8, 9, 10 as in the paper, grouping
#   4-4-4 clips (64 -> 16 -> 4 -> 1). The 12-frame schedule (2-2-3) does not divide 64.
#   4-4-4 keeps what defines the default: ImgMe on layers 0-7 unchanged, the same merge
#   ratio at every ClipMe layer, one video-level clip from layer 10 on, and a similar
#   output share (500 of 3,200 tokens, 15.6%, against 97 of 600, 16.2%). One temporal
#   embedding per clip entering layers 8, 9, 10 makes 64 + 16 + 4 vectors instead of
#   12 + 6 + 3: 556,032 trainable parameters instead of 507,648.
# Expects CLIP weights at checkpoints/clip/ViT-B-32.pt and the data laid out as in
# _base_/datasets/didemo.py (tools/data/README.md). 64 frames need about 5x the memory
# of 12; add --amp, or fewer videos per GPU with auto_scale_lr, if it does not fit.
_base_ = [
    '_base_/models/tempme_vit_b32.py',
    '_base_/datasets/didemo.py',
    '_base_/schedules/adamw_cosine_5e.py',
    '_base_/default_runtime.py',
]

model = dict(video_encoder=dict(num_frames=64, clips_per_merge=(4, 4, 4)))
