# TempMe (PEFT, LoRA r8) on LSMDC with CLIP ViT-B/32, the MSR-VTT recipe otherwise.
# LSMDC is one of the TempMe paper's four benchmarks; its published code ships only the
# MSR-VTT script, so the data settings follow CLIP4Clip.
# - 12 frames, 32 text tokens: CLIP4Clip README (--max_frames 12 --max_words 32) and
#   TempMe's main.py defaults; the default merge schedule (2-2-3 clips) applies as is.
# - 5 epochs, global batch 128 (16 per GPU x 8 GPUs): CLIP4Clip README (--epochs 5
#   --batch_size 128) and TempMe's main.py defaults; AdamW 6e-4, wd 0.2, cosine with 10%
#   warm-up: TempMe's main.py defaults (_base_/schedules/adamw_cosine_5e.py).
# Expects CLIP weights at checkpoints/clip/ViT-B-32.pt and the data laid out as in
# _base_/datasets/lsmdc.py (tools/data/README.md).
_base_ = [
    '_base_/models/tempme_vit_b32.py',
    '_base_/datasets/lsmdc.py',
    '_base_/schedules/adamw_cosine_5e.py',
    '_base_/default_runtime.py',
]
