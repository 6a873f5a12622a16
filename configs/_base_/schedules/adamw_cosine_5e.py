# The modern recipe: torch.optim.AdamW, lr 6e-4, weight decay 0.2, 5 epochs, cosine decay
# after a linear warm-up over the first 10% of training, gradient norm clipped at 1.0 on the
# true gradient. reference_5e.py swaps in the published optimizer and gradient scale.
max_epochs = 5

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# A NaN / inf loss or gradient stops the run before the step is applied ('skip' drops such
# steps instead, stopping after more than max_consecutive_skips in a row).
optim_wrapper = dict(
    type='GuardedOptimWrapper',
    on_nonfinite='stop',
    max_consecutive_skips=10,
    # fused: one kernel over all weights instead of a loop over tensors (much faster on CPU)
    optimizer=dict(type='AdamW', lr=6e-4, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6,
                   fused=True),
    clip_grad=dict(max_norm=1.0, norm_type=2))

# Warm-up from 0 over the first 10% of the iterations, then cosine to 0 (the published
# get_cosine_schedule_with_warmup). No `end`: the runner sizes it from train_cfg.max_epochs
# and the loader's length when training starts, so --cfg-options train_cfg.max_epochs=N
# moves the whole schedule.
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_ratio=0.1, start_factor=0.0, end_factor=0.0,
         by_epoch=True, convert_to_iter_based=True),
]

# The recipe assumes a global batch of 128; enable to rescale lr for other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=128)
