"""Checkpoints that survive a job killed while saving.

mmengine 0.10.7 writes a checkpoint straight to its final name, deletes the oldest kept
checkpoint *before* writing the new one, and rewrites ``last_checkpoint`` in place: a job
killed at the wrong moment leaves a truncated ``epoch_N.pth`` that ``--resume`` then fails
on, or no complete checkpoint at all. :class:`AtomicCheckpointHook` orders the same work so
that every moment leaves a loadable state:

1. the checkpoint is written to a temporary file in the same folder and renamed over the
   final name (the ``atomic_local`` file backend,
   :func:`projects.tempme_deploy.fileio.atomic_write`);
2. ``last_checkpoint`` is replaced, atomically too, only once that file is complete;
3. checkpoints beyond ``max_keep_ckpts`` are deleted last, and so is the previous
   ``best_*.pth`` (mmengine deletes it before it writes the new best);
4. ``last_validated_epoch`` records each epoch whose validation and best checkpoint are
   complete. ``epoch_N.pth`` is written before epoch N is validated, so a run killed in
   between resumes from it without that validation; the hook runs it again first,
   otherwise the best checkpoint would stay at an older epoch.
"""
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Union

from mmaction.registry import HOOKS
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from ...tempme_deploy.fileio import atomic_write

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'AtomicCheckpointHook']

#: Name of the file backend, for ``backend_args=dict(backend=ATOMIC_BACKEND)``.
ATOMIC_BACKEND = 'atomic_local'
#: Last epoch whose validation and best checkpoint completed, in the work dir.
VALIDATED_FILE = 'last_validated_epoch'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:

        def write(tmp: str) -> None:
            with open(tmp, 'wb') as f:
                f.write(obj)

        atomic_write(filepath, write)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def _is_local(path) -> bool:
    return path is None or '://' not in str(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves a partial checkpoint or a dangling pointer.

    Takes every argument of :class:`mmengine.hooks.CheckpointHook`. Local folders are
    written through the ``atomic_local`` backend unless ``backend_args`` names another one;
    remote backends are used as they are.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (self.backend_args is None and self.file_client_args is None
                and _is_local(self.out_dir)):
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    def _rotate(self, runner, step: int) -> List[str]:
        """Record ``step`` among the kept checkpoints; return the paths that fall out."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return []  # nothing is kept, or this step is being saved again (best score)
        stale = []
        while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
            old = self.keep_ckpt_ids.popleft()
            stale.append(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old)))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return stale

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # Overrides a private CheckpointHook method (mmengine 0.10.x; setup.cfg pins < 0.11):
        # the order of writing, pointing last_checkpoint and deleting is the whole fix.
        stale = self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        last = str(self.last_ckpt)
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                     lambda tmp: Path(tmp).write_text(last))
        for path in stale:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)

    def after_val_epoch(self, runner, metrics=None) -> None:
        super().after_val_epoch(runner, metrics)  # saves the best checkpoint
        if self.save_best and self.by_epoch and is_main_process():
            epoch = str(runner.epoch)
            atomic_write(osp.join(runner.work_dir, VALIDATED_FILE),
                         lambda tmp: Path(tmp).write_text(epoch))

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._validation_lost(runner):
            runner.logger.warning(
                f'resumed at epoch {runner.epoch}, whose validation (and best checkpoint) did '
                'not complete before the run stopped: validating it before training continues')
            runner.val_loop.run()

    def _validation_lost(self, runner) -> bool:
        """Whether the resumed epoch was due for validation that never completed."""
        loop, epoch = runner.train_loop, runner.epoch
        if not (self.save_best and self.by_epoch and epoch > 0 and runner.val_loop is not None):
            return False
        due = epoch >= loop.val_begin and (epoch % loop.val_interval == 0
                                           or epoch == loop.max_epochs)
        path = osp.join(runner.work_dir, VALIDATED_FILE)
        try:
            done = int(Path(path).read_text()) if osp.isfile(path) else -1
        except ValueError:
            done = -1
        decision = [due and done < epoch]
        broadcast_object_list(decision)  # every rank must take the same branch
        return bool(decision[0])

    def _best_paths(self) -> Dict[Optional[str], Optional[str]]:
        """The current best checkpoint per key indicator (key None: a single indicator)."""
        if len(self.key_indicators) == 1:
            return {None: self.best_ckpt_path}
        return dict(self.best_ckpt_path_dict)

    def _set_best_paths(self, paths: Dict[Optional[str], Optional[str]]) -> None:
        if None in paths:
            self.best_ckpt_path = paths[None]
        else:
            self.best_ckpt_path_dict.update(paths)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # Wraps a private CheckpointHook method (mmengine 0.10.x; setup.cfg pins < 0.11) so
        # that the previous best is deleted only after the new one is written.
        if not self.save_best:
            return
        # Hide the previous best files from mmengine, which deletes them before it writes.
        previous = self._best_paths()
        info = runner.message_hub.runtime_info
        scores = {key: info[key] for key in info if key.startswith('best_score')}
        self._set_best_paths(dict.fromkeys(previous))
        try:
            super()._save_best_checkpoint(runner, metrics)
        except BaseException:  # the new best was not saved: keep the previous one as best
            self._set_best_paths(previous)
            for key in [key for key in info if key.startswith('best_score')]:
                info.pop(key)  # including a first best score that had no predecessor
            info.update(scores)
            raise
        current = self._best_paths()
        for key, old in previous.items():
            if current[key] is None:  # not improved: the previous best stays the best
                self._set_best_paths({key: old})
            elif old is not None and old != current[key] and is_main_process():
                if self.file_backend.isfile(old):
                    self.file_backend.remove(old)
                    runner.logger.info(f'The previous best checkpoint {old} is removed')
