# TempMe with a tiny randomly initialised CLIP (no weight file), for tests and smoke runs
# on CPU. 12 frames of 112 px with 16 px patches keep ViT-B/32's 50 tokens per frame, so
# the default merge schedule applies unchanged. Reads a small synthetic set (3 seconds to
# write: python tools/data/make_synthetic.py --out data/tiny --num-train 64 --num-val 16
# --num-test 16); point it at any folder with
#   --cfg-options train_dataloader.dataset.data_root=DIR \
#                 train_dataloader.dataset.ann_file=train.json \
#                 train_dataloader.dataset.data_prefix.video=videos   (same for val/test)
_base_ = ['tempme_msrvtt.py']

model = dict(
    clip=dict(
        arch=dict(
            _delete_=True,
            embed_dim=64,
            vision_cfg=dict(image_size=112, patch_size=16, width=128, layers=12,
                            head_width=64),
            text_cfg=dict(context_length=32, vocab_size=49408, width=128, heads=2,
                          layers=4)),
        weights=None))

image_size = 112
# The reference pipelines at this model's frame size.
train_pipeline = [
    dict(t, size=image_size) if t['type'] == 'PILResizeCenterCrop' else
    dict(t, translate_const=int(0.45 * image_size)) if t['type'] == 'ClipRandAugment' else t
    for t in _base_.train_pipeline]
test_pipeline = [
    dict(t, size=image_size) if t['type'] == 'PILResizeCenterCrop' else t
    for t in _base_.test_pipeline]
loader = dict(batch_size=4, num_workers=0, persistent_workers=False)
data_root = 'data/tiny'
train_dataloader = dict(
    **loader,
    dataset=dict(ann_file='train.json', data_root=data_root, data_prefix=dict(video='videos'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    **loader,
    dataset=dict(ann_file='val.json', data_root=data_root, data_prefix=dict(video='videos'),
                 pipeline=test_pipeline))
test_dataloader = dict(
    **loader,
    dataset=dict(ann_file='test.json', data_root=data_root, data_prefix=dict(video='videos'),
                 pipeline=test_pipeline))

max_epochs = 2
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='WarmupCosineLR', warmup_ratio=0.2, start_factor=1e-2, by_epoch=True,
                        convert_to_iter_based=True)]
# val and test are different files here: select on val each epoch (the clean protocol)
evaluation_protocol = dict(name='clean', select='retrieval/R_sum', val_first_iter=None,
                           val_iter_interval=None)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(save_best='retrieval/R_sum'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# No base weight file to put adapters on: keep whole checkpoints.
custom_hooks = [
    dict(type='PEFTCheckpointHook', adapter_only=False),
    dict(type='EpochSeedHook'),
]
