# TempMe on CLIP ViT-B/32, LoRA rank 8 on both towers. The merge setting is the 'tempme'
# preset of MergeSchedule (projects/tempme/merging/schedule.py); its fields (merge_layers,
# clips_per_merge, cross_clip_ratio, intra_clip_ratio, imgme_r) set here override it.
model = dict(
    type='TempMeRetriever',
    # OpenAI's ViT-B-32.pt (or any open_clip / safetensors file of that architecture).
    clip=dict(arch='ViT-B-32', weights='checkpoints/clip/ViT-B-32.pt'),
    video_encoder=dict(
        type='TempMeViT',
        num_frames=12,
        merge='tempme',
        temporal_embedding=True,
        prop_attn=True),
    head=dict(type='MeanCLSHead'),
    lora=dict(rank=8),
    train_mode='peft',
    max_logit_scale=100.0,
    data_preprocessor=dict(type='RetrievalDataPreprocessor'))
