# Select on a held-out val split after each epoch, then evaluate the selected checkpoint
# once on the test split and report that (README, "Evaluation protocols"). val_dataloader
# must read another annotation than test_dataloader (checked when training starts); for
# MSR-VTT: annotations/msrvtt_val.json and msrvtt_train_9k_minus_val.json, written by
# tools/data/msrvtt/convert_annotations.py.
# Used with train_cfg = dict(type='ProtocolTrainLoop'), test_cfg = dict(type='ProtocolTestLoop')
# and default_hooks.checkpoint.save_best equal to `select` (checked when training starts).
evaluation_protocol = dict(
    name='clean',
    select='retrieval/R_sum',
    rule='greater',
    val_first_iter=None,
    val_iter_interval=None,
)
