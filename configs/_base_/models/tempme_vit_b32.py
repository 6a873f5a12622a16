# TempMe on CLIP ViT-B/32: ImgMe r=2 on layers 0-7, ClipMe on 8-9-10 grouping 2-2-3
# clips with 30% cross-clip and 10% intra-clip merging, LoRA rank 8 on both towers.
model = dict(
    type='TempMeRetriever',
    # OpenAI's ViT-B-32.pt (or any open_clip / safetensors file of that architecture).
    clip=dict(arch='ViT-B-32', weights='checkpoints/clip/ViT-B-32.pt'),
    video_encoder=dict(
        type='TempMeViT',
        num_frames=12,
        merge_layers=(8, 9, 10),
        clips_per_merge=(2, 2, 3),
        cross_clip_ratio=0.3,
        intra_clip_ratio=0.1,
        imgme_r=2,
        temporal_embedding=True,
        prop_attn=True),
    head=dict(type='MeanCLSHead'),
    lora=dict(rank=8),
    train_mode='peft',
    max_logit_scale=100.0,
    data_preprocessor=dict(type='RetrievalDataPreprocessor'))
