"""Evaluation protocols: on which split a run selects its result, and where it reports it.

A number is only comparable with another one obtained under the same protocol, so each
run names its protocol (configs: ``configs/_base_/protocols/``; README, "Evaluation
protocols"):

* ``paper``: how the published TempMe numbers were chosen. The model is evaluated on the
  *test* split after training step ``val_first_iter`` (1) and every ``val_iter_interval``
  (150) steps, and after every epoch; the best t2v R@1 seen is reported. The test split
  both selects and reports, so the number is optimistic.
* ``clean``: select on a *val* split (after every epoch), then evaluate the selected
  checkpoint once on the test split and report that.

Pure logic (no mmengine): the protocol as a validated value, its evaluation schedule, the
split checks and the wording of the result. ``projects.tempme.engine.protocols`` runs it.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

__all__ = ['EvaluationProtocol', 'PROTOCOLS', 'parse_protocol', 'is_better', 'metric_label',
           'check_splits', 'split_identity']

#: Where each protocol selects and where it reports.
PROTOCOLS = {'paper': ('test', 'test'), 'clean': ('val', 'test')}
_RULES = ('greater', 'less')
_FIELDS = ('name', 'select', 'rule', 'val_first_iter', 'val_iter_interval')


def _optional_step(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'evaluation_protocol.{name} must be a positive integer or None, '
                         f'got {value!r}')
    return value


@dataclass(frozen=True)
class EvaluationProtocol:
    """A protocol as configured: ``evaluation_protocol = dict(name=..., ...)``.

    Args:
        name: ``'paper'`` or ``'clean'``.
        select: metric key that picks the best evaluation (as the metric returns it,
            e.g. ``'retrieval/t2v_R1'``); the best-checkpoint hook must select on it too.
        rule: ``'greater'`` or ``'less'``: which values of ``select`` are better.
        val_first_iter, val_iter_interval: ``paper`` only; the training steps (1-based)
            after which the model is evaluated besides the epoch ends: step
            ``val_first_iter`` and every multiple of ``val_iter_interval``. ``None``
            leaves either out.
    """

    name: str
    select: str
    rule: str = 'greater'
    val_first_iter: Optional[int] = None
    val_iter_interval: Optional[int] = None

    @property
    def selected_on(self) -> str:
        return PROTOCOLS[self.name][0]

    @property
    def reported_on(self) -> str:
        return PROTOCOLS[self.name][1]

    def validates_after_step(self, step: int) -> bool:
        """Whether to evaluate after training step ``step`` (1-based), epoch ends aside."""
        return (step == self.val_first_iter
                or (self.val_iter_interval is not None and step % self.val_iter_interval == 0))

    def describe_best(self) -> str:
        """What the reported number is, e.g. for the log and the saved result."""
        label = metric_label(self.select)
        if self.selected_on == self.reported_on:
            return (f'best {label} on the {self.reported_on} split, selected on the '
                    f'{self.selected_on} split ({self.name} protocol)')
        return (f'{self.reported_on} split metrics of the checkpoint with the best '
                f'{self.selected_on} {label} ({self.name} protocol)')

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_protocol(cfg: Optional[Mapping[str, Any]]) -> EvaluationProtocol:
    """Validate an ``evaluation_protocol`` config dict; unknown keys are errors (typos)."""
    if cfg is None:
        raise ValueError(
            'no evaluation_protocol in the config: add _base_/protocols/paper.py or '
            '_base_/protocols/clean.py to _base_')
    if not isinstance(cfg, Mapping):
        raise ValueError(f'evaluation_protocol must be a dict, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(_FIELDS))
    if unknown:
        raise ValueError(f'evaluation_protocol has unknown keys {unknown}; known: '
                         f'{list(_FIELDS)}')
    name = cfg.get('name')
    if name not in PROTOCOLS:
        raise ValueError(f'evaluation_protocol.name must be one of {sorted(PROTOCOLS)}, '
                         f'got {name!r}')
    select = cfg.get('select')
    if not isinstance(select, str) or not select:
        raise ValueError(f'evaluation_protocol.select must name a metric key, got {select!r}')
    rule = cfg.get('rule', 'greater')
    if rule not in _RULES:
        raise ValueError(f'evaluation_protocol.rule must be one of {_RULES}, got {rule!r}')
    first = _optional_step('val_first_iter', cfg.get('val_first_iter'))
    interval = _optional_step('val_iter_interval', cfg.get('val_iter_interval'))
    if name != 'paper' and (first is not None or interval is not None):
        raise ValueError(
            f'evaluation_protocol.val_first_iter / val_iter_interval belong to the paper '
            f'protocol (evaluation on the test split during training); the {name} '
            'protocol evaluates after each epoch only: set them to None')
    return EvaluationProtocol(name, select, rule, first, interval)


def is_better(value: float, best: Optional[float], rule: str) -> bool:
    """Strictly better than the best so far (the first evaluation always is)."""
    if best is None:
        return True
    return value > best if rule == 'greater' else value < best


def metric_label(key: str) -> str:
    """``'retrieval/t2v_R1'`` -> ``'t2v R@1'``; other keys are returned as they are."""
    name = key.rsplit('/', 1)[-1]
    for side in ('t2v', 'v2t'):
        for k in ('1', '5', '10'):
            if name == f'{side}_R{k}':
                return f'{side} R@{k}'
    return name


def split_identity(dataset_cfg: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The annotation file a dataset config reads (``data_root`` joined), for comparing."""
    if not dataset_cfg:
        return None
    ann_file = dataset_cfg.get('ann_file')
    if not ann_file:
        return None
    root = dataset_cfg.get('data_root') or ''
    path = ann_file if ann_file.startswith('/') or not root else f'{root}/{ann_file}'
    parts = [p for p in path.replace('\\', '/').split('/') if p not in ('', '.')]
    return ('/' if path.startswith('/') else '') + '/'.join(parts)


def check_splits(protocol: EvaluationProtocol, val_split: Optional[str],
                 test_split: Optional[str]) -> None:
    """Refuse a config whose val / test annotation files contradict the protocol."""
    if val_split is None:
        raise ValueError(f'the {protocol.name} protocol evaluates during training: '
                         'val_dataloader needs a dataset with an ann_file')
    if protocol.name == 'paper' and test_split is not None and val_split != test_split:
        raise ValueError(
            f'the paper protocol evaluates and selects on the test split, but '
            f'val_dataloader reads {val_split} and test_dataloader {test_split}: point '
            'val_dataloader at the test annotation, or select on the val split with the '
            'clean protocol (_base_/protocols/clean.py)')
    if protocol.name == 'clean':
        if test_split is None:
            raise ValueError('the clean protocol reports on the test split once training '
                             'ends: test_dataloader needs a dataset with an ann_file')
        if val_split == test_split:
            raise ValueError(
                f'the clean protocol selects on a val split, but val_dataloader and '
                f'test_dataloader both read {val_split}: give val_dataloader a held-out '
                'annotation (README, "Evaluation protocols"; for MSR-VTT '
                'annotations/msrvtt_val.json), or use the paper protocol')
