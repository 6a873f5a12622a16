# The evaluation protocol of the published TempMe numbers (README, "Evaluation protocols"):
# evaluate on the test split after training step 1, every 150 steps and every epoch, and
# report the best t2v R@1 seen. The test split selects as well as reports: the number is
# optimistic, comparable only with numbers obtained the same way.
# Used with train_cfg = dict(type='ProtocolTrainLoop'), test_cfg = dict(type='ProtocolTestLoop')
# and default_hooks.checkpoint.save_best equal to `select` (checked when training starts).
evaluation_protocol = dict(
    name='paper',
    select='retrieval/t2v_R1',
    rule='greater',
    val_first_iter=1,  # the published code: global_step == 1
    val_iter_interval=150,  # the published code: global_step % (3 * n_display) with n_display 50
)
