# TempMe (PEFT) on MSR-VTT with CLIP ViT-B/16 (197 tokens per frame).
# Expects CLIP weights at checkpoints/clip/ViT-B-16.pt.
_base_ = ['tempme_msrvtt.py']

model = dict(clip=dict(arch='ViT-B-16', weights='checkpoints/clip/ViT-B-16.pt'))
