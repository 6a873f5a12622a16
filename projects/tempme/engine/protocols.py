"""mmengine loops that run an evaluation protocol (:mod:`..evaluation.protocols`).

A config selects a protocol with one base file and these loops::

    _base_ = [..., '_base_/protocols/paper.py']      # defines evaluation_protocol
    train_cfg = dict(type='ProtocolTrainLoop')
    test_cfg = dict(type='ProtocolTestLoop')
    default_hooks = dict(checkpoint=dict(save_best='retrieval/t2v_R1'))  # = its select

Everything is read from ``cfg.evaluation_protocol`` when the loop is built, so a
``--cfg-options evaluation_protocol.val_iter_interval=50`` reaches the schedule; settings
that must agree with it (the best-checkpoint key, the val / test splits) are checked
before the first step, and a disagreement stops the run with both values named.
"""
import json
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

from mmaction.registry import LOOPS
from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner import EpochBasedTrainLoop, TestLoop

from ...tempme_deploy.fileio import atomic_write
from ..evaluation.protocols import (EvaluationProtocol, check_splits, is_better, parse_protocol,
                                    split_identity)

__all__ = ['ProtocolTrainLoop', 'ProtocolTestLoop', 'RESULT_FILE', 'protocol_of']

#: Written to the work dir when training ends: the protocol and its reported result.
RESULT_FILE = 'evaluation_protocol.json'
_BEST_INFO = 'evaluation_protocol_best'  # message hub key: saved with checkpoints, resumed


def protocol_of(runner: Any) -> EvaluationProtocol:
    return parse_protocol(runner.cfg.get('evaluation_protocol'))


def _name_metrics(evaluator: Any, protocol: EvaluationProtocol) -> None:
    """Tell the evaluator's metrics which protocol their numbers belong to."""
    for metric in getattr(evaluator, 'metrics', []):
        if hasattr(metric, 'protocol'):
            metric.protocol = protocol.name


def _dataset_cfg(runner: Any, name: str) -> Optional[Dict[str, Any]]:
    loader = runner.cfg.get(name)
    return loader.get('dataset') if isinstance(loader, dict) else None


def _checkpoint_hook(runner: Any) -> Optional[CheckpointHook]:
    hooks = [hook for hook in runner.hooks if isinstance(hook, CheckpointHook)]
    return hooks[0] if hooks else None


def _check_checkpoint_hook(hook: Optional[CheckpointHook],
                           protocol: EvaluationProtocol) -> None:
    """The best checkpoint must be the protocol's best, or not be kept at all (paper)."""
    save_best = getattr(hook, 'save_best', None)
    fix = (f"set default_hooks.checkpoint.save_best='{protocol.select}' and "
           f"rule='{protocol.rule}' (or change evaluation_protocol.select)")
    if not save_best:
        if protocol.name == 'clean':
            raise ValueError('the clean protocol tests the best checkpoint once training '
                             f'ends, but no best checkpoint is kept: {fix}')
        return
    keys = [save_best] if isinstance(save_best, str) else list(save_best)
    rules = list(getattr(hook, 'rules', []) or [])
    if keys != [protocol.select] or rules not in ([protocol.rule], [None]):
        raise ValueError(
            f'evaluation_protocol ({protocol.name}) selects on {protocol.select} '
            f'({protocol.rule}), but default_hooks.checkpoint keeps the best of {keys} '
            f'(rule {rules}): {fix}')


@LOOPS.register_module()
class ProtocolTrainLoop(EpochBasedTrainLoop):
    """Epoch-based training that evaluates, selects and reports as its protocol says.

    ``paper``: besides the epoch ends, evaluates after step ``val_first_iter`` and every
    ``val_iter_interval`` steps (once per step: not again when the epoch's own evaluation
    follows), keeps the best ``select`` value and reports it as such. ``clean``: the
    epoch-end evaluations on the val split select the best checkpoint, which is then
    loaded and evaluated once on the test split. Either way the result is logged, named,
    and written to ``{work_dir}/evaluation_protocol.json``.
    """

    def __init__(self, runner: Any, dataloader: Any, max_epochs: int, val_begin: int = 1,
                 val_interval: int = 1, dynamic_intervals: Optional[List] = None) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin, val_interval,
                         dynamic_intervals)
        self.protocol = protocol_of(runner)
        #: ``(step, epoch)`` of every evaluation this loop ran, in order.
        self.evaluations: List[Dict[str, int]] = []
        self.active = False  # set when training starts: validation on, config checked

    # -- checks and naming, before the first step ---------------------------------------
    def _prepare(self) -> bool:
        """Check the config against the protocol; ``False`` when nothing is evaluated."""
        protocol = self.protocol
        if self.runner.val_loop is None:
            self.runner.logger.warning(
                f'evaluation protocol {protocol.name!r} not run: this run evaluates nothing '
                '(--no-validate, or no val_dataloader / val_cfg / val_evaluator)')
            return False
        if not self._evaluates():  # chosen in the config (the demo tests after training)
            self.runner.logger.info(
                f'evaluation protocol {protocol.name!r} not run: train_cfg.val_begin '
                f'({self.val_begin}) is after the last epoch and no step evaluation falls '
                'inside the run')
            return False
        check_splits(protocol, split_identity(_dataset_cfg(self.runner, 'val_dataloader')),
                     split_identity(_dataset_cfg(self.runner, 'test_dataloader')))
        _check_checkpoint_hook(_checkpoint_hook(self.runner), protocol)
        _name_metrics(self.runner.val_loop.evaluator, protocol)
        if self._iter == 0:  # a fresh run (a resumed one keeps the best it had)
            self.runner.message_hub.update_info(_BEST_INFO, None)
        steps = ''
        if protocol.name == 'paper':
            steps = (f', after step {protocol.val_first_iter} and every '
                     f'{protocol.val_iter_interval} steps')
        self.runner.logger.info(
            f'evaluation protocol {protocol.name!r}: evaluates on the {protocol.selected_on} '
            f'split after each epoch{steps}; selects on {protocol.select} ({protocol.rule}); '
            f'reports on the {protocol.reported_on} split')
        return True

    def _evaluates(self) -> bool:
        """Whether any evaluation falls inside this run (epoch ends or paper steps)."""
        if self.val_begin <= self._max_epochs:
            return True
        return any(self.protocol.validates_after_step(step) for step in
                   (self.protocol.val_first_iter, self.protocol.val_iter_interval)
                   if step is not None and step <= self._max_iters)

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> Any:
        self.active = self._prepare()
        self.runner.call_hook('before_train')
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self._epoch_validates(self._epoch):
                self._validate()
        result = self._report() if self.active else None
        self.runner.call_hook('after_train')
        if result is not None and is_main_process():
            text = json.dumps(result, indent=2) + '\n'

            def write(path: str) -> None:
                with open(path, 'w') as f:
                    f.write(text)

            atomic_write(osp.join(self.runner.work_dir, RESULT_FILE), write)
        return self.runner.model

    def _epoch_validates(self, epochs_done: int) -> bool:
        """mmengine's rule for an evaluation after the ``epochs_done``-th epoch."""
        return (self.runner.val_loop is not None and epochs_done >= self.val_begin
                and (epochs_done % self.val_interval == 0 or epochs_done == self._max_epochs))

    def run_iter(self, idx: int, data_batch: Sequence[dict]) -> None:
        super().run_iter(idx, data_batch)
        step = self._iter  # training steps done, 1-based for the step just taken
        if (not self.active or self.protocol.name != 'paper'
                or not self.protocol.validates_after_step(step)):
            return
        last_of_epoch = idx + 1 == len(self.dataloader)
        if last_of_epoch and self._epoch_validates(self._epoch + 1):
            return  # the epoch's own evaluation follows at once, on the same weights
        self._validate()
        self.runner.model.train()

    def _validate(self) -> Dict[str, Any]:
        metrics = self.runner.val_loop.run()
        self.evaluations.append(dict(step=self._iter, epoch=self._epoch))
        key = self.protocol.select
        if key not in metrics:
            raise KeyError(f'evaluation_protocol.select is {key!r}, but the evaluation '
                           f'returned only {sorted(metrics)}')
        value = float(metrics[key])
        hub = self.runner.message_hub
        best = hub.get_info(_BEST_INFO)
        if is_better(value, None if best is None else best['value'], self.protocol.rule):
            best = dict(value=value, step=self._iter, epoch=self._epoch,
                        metrics={k: v for k, v in metrics.items()
                                 if isinstance(v, (int, float))})
            hub.update_info(_BEST_INFO, best)
        self.runner.logger.info(
            f'{self.protocol.select} {value:.2f} at step {self._iter}; best so far '
            f'{best["value"]:.2f} (step {best["step"]}, {self.protocol.name} protocol)')
        return metrics

    # -- the reported result ------------------------------------------------------------
    def _report(self) -> Optional[Dict[str, Any]]:
        best = self.runner.message_hub.get_info(_BEST_INFO)
        if best is None:
            self.runner.logger.warning(
                f'evaluation protocol {self.protocol.name!r}: no evaluation ran, nothing '
                'to report')
            return None
        protocol = self.protocol
        result: Dict[str, Any] = dict(
            protocol=protocol.name, description=protocol.describe_best(),
            selected_on=protocol.selected_on, reported_on=protocol.reported_on,
            select=protocol.select, settings=protocol.as_dict(),
            evaluations=len(self.evaluations),
            best=dict(value=best['value'], step=best['step'], epoch=best['epoch']))
        hook = _checkpoint_hook(self.runner)
        checkpoint = getattr(hook, 'best_ckpt_path', None)
        if checkpoint:
            result['checkpoint'] = checkpoint
        if protocol.name == 'paper':
            result['metrics'] = best['metrics']
            self.runner.logger.info(
                f'{protocol.describe_best()}: {best["value"]:.2f} (step {best["step"]})')
            return result
        result['metrics'] = self._test_best(checkpoint)
        self.runner.logger.info(
            f'{protocol.describe_best()}: {protocol.select} '
            f'{result["metrics"].get(protocol.select, float("nan")):.2f} (selected at step '
            f'{best["step"]}, {checkpoint})')
        return result

    def _test_best(self, checkpoint: Optional[str]) -> Dict[str, Any]:
        """Evaluate the selected checkpoint once on the test split (clean protocol)."""
        if not checkpoint:
            raise RuntimeError('the clean protocol found no best checkpoint to test')
        # the main process writes the checkpoint: every rank waits until it is on disk
        barrier()
        self.runner.load_checkpoint(checkpoint, map_location='cpu')
        test_loop = self.runner.test_loop
        if test_loop is None:
            raise ValueError('the clean protocol needs test_dataloader, test_cfg and '
                             'test_evaluator')
        _name_metrics(test_loop.evaluator, self.protocol)
        metrics = test_loop.run()
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


@LOOPS.register_module()
class ProtocolTestLoop(TestLoop):
    """mmengine's test loop; the metrics name the config's evaluation protocol.

    ``tools/test.py`` then prints and saves the protocol with the numbers (a config
    without ``evaluation_protocol`` tests as before, unnamed).
    """

    def run(self) -> dict:
        cfg = self.runner.cfg.get('evaluation_protocol')
        if cfg is not None:
            protocol = parse_protocol(cfg)
            _name_metrics(self.evaluator, protocol)
            self.runner.logger.info(
                f'evaluation protocol {protocol.name!r}: test split metrics of this '
                f'checkpoint; under this protocol checkpoints are selected on the '
                f'{protocol.selected_on} split')
        return super().run()
