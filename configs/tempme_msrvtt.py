# TempMe (PEFT, LoRA r8) on MSR-VTT 9k / 1k-A with CLIP ViT-B/32: the paper's recipe, step for
# step (the published optimizer and gradient scale, _base_/schedules/reference_5e.py).
# Expects CLIP weights at checkpoints/clip/ViT-B-32.pt and MSR-VTT under data/msrvtt;
# override with --cfg-options model.clip.weights=... train_dataloader.dataset.data_root=...
_base_ = [
    '_base_/models/tempme_vit_b32.py',
    '_base_/datasets/msrvtt_9k_1ka.py',
    '_base_/schedules/reference_5e.py',
    '_base_/default_runtime.py',
]
