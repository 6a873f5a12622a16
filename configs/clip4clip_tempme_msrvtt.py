# Full fine-tuning: CLIP4Clip (seqTransf head) + TempMe merging, ViT-B/32.
# As in CLIP4Clip: lr 1e-4 for new modules, 1e-3 x that for the pretrained CLIP weights,
# no weight decay on LayerNorm/bias/embeddings, global batch 128, 5 epochs.
# Expects the same files as tempme_msrvtt.py (CLIP weights at checkpoints/clip/ViT-B-32.pt,
# MSR-VTT under data/msrvtt); override with --cfg-options.
_base_ = ['tempme_msrvtt.py']

model = dict(
    lora=None,
    train_mode='full',
    head=dict(type='SeqTransfHead', width=512, num_frames=12, layers=4))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            # the longest matching key wins: new modules keep the full lr
            'video_encoder': dict(lr_mult=1e-3),
            'text_encoder': dict(lr_mult=1e-3),
            'logit_scale': dict(lr_mult=1e-3, decay_mult=0.0),
            'temporal_embedding': dict(lr_mult=1.0, decay_mult=0.0),
            'head': dict(lr_mult=1.0),
        }))

custom_hooks = [dict(type='EpochSeedHook')]  # full checkpoints
