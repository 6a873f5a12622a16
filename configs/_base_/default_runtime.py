# Runtime shared by every config: registries, hooks, logging, distributed backend.
default_scope = 'mmaction'
custom_imports = dict(imports=['projects.tempme'], allow_failed_imports=False)
# mmengine's Runner that loads every checkpoint with weights_only=True and the project's
# allow-list (load_from, resume, init_cfg); any tool that honours runner_type uses it.
runner_type = 'mmaction.TempMeRunner'
# mmengine's DDP wrapper, keeping the retriever's own step (temperature clamp after each step,
# gradient caching).
model_wrapper_cfg = dict(type='mmaction.RetrieverDistributedDataParallel')

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Written atomically; last_checkpoint moves only once a checkpoint is complete.
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2,
                    save_best='retrieval/R_sum', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # A checkpoint that does not fit the model fails with its missing/unexpected keys.
    strict_load=dict(type='StrictLoadHook'),
    # The pipeline's clip_len / crop must match the encoder's num_frames / image size, in
    # every tool (mmaction2's too): checked before the first step, naming both fields.
    data_fits_model=dict(type='DataFitsModelHook'),
)
custom_hooks = [
    dict(type='PEFTCheckpointHook', adapter_only=True),
    dict(type='EpochSeedHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))  # tools/train.py switches to gloo without CUDA

log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42, deterministic=False)
