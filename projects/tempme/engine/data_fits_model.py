"""Check, in every Runner, that the data pipeline can feed the video encoder.

``tools/train.py``, ``tools/test.py`` and ``tools/search.py`` run
:func:`~projects.tempme.config_checks.check_data_fits_model` before building anything;
mmaction2's own tools and scripts that build a ``Runner`` themselves do not. This hook,
on in every config (``default_hooks.data_fits_model``), runs the same check before the
first step there, so a ``--cfg-options`` change of ``clip_len`` without ``num_frames``
(or of the crop without the CLIP image size) fails with both fields named rather than
with a tensor-shape error in the first forward pass.
"""
from mmaction.registry import HOOKS
from mmengine.hooks import Hook

from ..config_checks import check_data_fits_model

__all__ = ['DataFitsModelHook']


@HOOKS.register_module()
class DataFitsModelHook(Hook):
    """Raise :class:`~projects.tempme.config_checks.ConfigMismatchError` before the
    first training, validation or test step when the runner's config disagrees."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        check_data_fits_model(runner.cfg)
