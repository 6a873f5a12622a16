"""Fixes for upstream breakages that keep ``import mmaction.models`` from working.

The project runs on torch 2.14, mmengine 0.10.7, mmcv-lite 2.1.0, mmaction2 1.2.0 and
transformers 5.x. With mmaction2 from PyPI, ``import mmaction.models`` fails (a package
missing from the wheel; helpers VindLU imports that transformers 5 removed). Each fix only
adds what is missing, detects its problem without importing the broken code, and does
nothing when the installed packages do not have the problem (a source checkout of mmaction2
has the DRN package, so that fix skips itself there). Applied once when this module is
imported (re-applying is harmless). Nothing in site-packages is modified, and nothing that exists is
replaced: checkpoint loading and warning filters are not touched here (see
:func:`projects.tempme.checkpoint.safe_checkpoint_loading`).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch

__all__ = ['MissingDRN', 'apply_fixes', 'fix_missing_drn', 'fix_transformers_for_vindlu']


def _module_available(name: str) -> bool:
    """Whether a top-level module can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _mmaction_dirs() -> List[str]:
    """Package directories of the installed mmaction (empty when it is not installed)."""
    try:
        spec = importlib.util.find_spec('mmaction')
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


# ---------------------------------------------------------------------------------------------
# 1. mmaction2 1.2.0: the DRN localizer package is missing from the PyPI wheel and sdist.
# ---------------------------------------------------------------------------------------------

DRN_PACKAGE = 'mmaction.models.localizers.drn'
DRN_ISSUE = 'https://github.com/open-mmlab/mmaction2/issues/2714'


class MissingDRN:
    """Stand-in for mmaction's DRN localizer, whose code the PyPI release does not ship.

    Importing it keeps ``import mmaction.models`` working; building it fails loudly instead of
    returning something that is not DRN.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(
            'DRN is not available: mmaction2 1.2.0 from PyPI ships without '
            f'mmaction/models/localizers/drn ({DRN_ISSUE}). Install mmaction2 from a source '
            'checkout that contains that package to use DRN.')


def _upstream_drn_missing(mmaction_dirs: Iterable[str]) -> bool:
    """Whether ``localizers/__init__.py`` imports ``.drn`` while ``drn/drn.py`` is absent.

    Looks at files only: importing any part of ``mmaction.models`` would run the failing
    import, and asking the import system about ``mmaction.models.localizers.drn`` needs its
    parent packages imported (a source checkout's ``drn`` folder has no ``__init__.py``, so
    it would be resolved as a namespace package through ``sys.modules``).
    """
    for root in mmaction_dirs:
        localizers = os.path.join(root, 'models', 'localizers')
        init_file = os.path.join(localizers, '__init__.py')
        if not os.path.isfile(init_file):
            continue
        with open(init_file, encoding='utf-8') as f:
            if '.drn' not in f.read():
                return False
        return not os.path.isfile(os.path.join(localizers, 'drn', 'drn.py'))
    return False


def _stand_in_module(name: str, is_package: bool) -> types.ModuleType:
    module = types.ModuleType(name, 'Stand-in for code missing from the mmaction2 release.')
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_package)
    if is_package:
        module.__path__ = []
    return module


def fix_missing_drn() -> bool:
    """Provide ``mmaction.models.localizers.drn`` when the installed mmaction2 lacks it.

    Targets mmaction2 1.2.0 (upstream issue #2714): ``localizers/__init__.py`` does
    ``from .drn.drn import DRN`` but the wheel has no ``drn`` package, so ``import
    mmaction.models`` raises ModuleNotFoundError. A stand-in package whose ``DRN`` (a
    :class:`MissingDRN`) refuses to be built is put in ``sys.modules`` and registered as
    ``DRN`` in mmaction's ``MODELS``, as the real module would be. Returns True when the
    stand-in was installed.
    """
    if DRN_PACKAGE in sys.modules or not _upstream_drn_missing(_mmaction_dirs()):
        return False
    package = _stand_in_module(DRN_PACKAGE, is_package=True)
    module = _stand_in_module(f'{DRN_PACKAGE}.drn', is_package=False)
    module.DRN = MissingDRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module

    from mmaction.registry import MODELS
    if 'DRN' not in MODELS.module_dict:  # MODELS.get would import mmaction.models
        MODELS.register_module(name='DRN', module=MissingDRN)
    return True


# ---------------------------------------------------------------------------------------------
# 2. transformers 5.x: helpers VindLU imports from ``transformers.modeling_utils`` are gone.
# ---------------------------------------------------------------------------------------------

# Names ``mmaction/models/multimodal/vindlu/modeling_bert.py`` imports from modeling_utils.
VINDLU_MODELING_UTILS_NAMES = (
    'apply_chunking_to_forward',
    'find_pruneable_heads_and_indices',
    'prune_linear_layer',
)


def _find_pruneable_heads_and_indices(heads: Iterable[int], n_heads: int, head_size: int,
                                      already_pruned_heads: Iterable[int]
                                      ) -> Tuple[set, torch.Tensor]:
    """Heads still to prune and the flat indices of the projection rows to keep.

    transformers 5 removed this helper from every module, yet VindLU's
    ``BertAttention.prune_heads`` calls it. ``heads`` and ``already_pruned_heads`` use the
    original head numbering; ``n_heads`` is the current (already reduced) head count.
    """
    pruned_before = set(already_pruned_heads)
    to_prune = set(heads) - pruned_before
    keep = torch.ones(n_heads, head_size, dtype=torch.bool)
    for head in to_prune:
        # Position of ``head`` once the heads pruned earlier have been removed.
        keep[head - sum(1 for h in pruned_before if h < head)] = False
    return to_prune, torch.arange(n_heads * head_size)[keep.flatten()].long()


def fix_transformers_for_vindlu() -> List[str]:
    """Put the helpers VindLU imports back on ``transformers.modeling_utils`` where missing.

    Targets mmaction2 1.2.0 with transformers >= 5: mmaction imports VindLU whenever
    transformers is installed, and VindLU imports ``apply_chunking_to_forward``,
    ``find_pruneable_heads_and_indices`` and ``prune_linear_layer`` from
    ``transformers.modeling_utils``. transformers now keeps the first and last in
    ``transformers.pytorch_utils`` and dropped the middle one, so those objects are used, and a
    local equivalent where none exists. Returns the names that were added.
    """
    if not (_module_available('mmaction') and _module_available('transformers')):
        return []
    try:
        modeling_utils = importlib.import_module('transformers.modeling_utils')
        pytorch_utils = importlib.import_module('transformers.pytorch_utils')
    except ImportError:
        return []  # a broken transformers install; mmaction reports it on its own
    fallbacks: Dict[str, Callable] = {
        'find_pruneable_heads_and_indices': _find_pruneable_heads_and_indices,
    }
    added = []
    for name in VINDLU_MODELING_UTILS_NAMES:
        if hasattr(modeling_utils, name):
            continue
        provider = getattr(pytorch_utils, name, None) or fallbacks.get(name)
        if provider is None:
            continue
        setattr(modeling_utils, name, provider)
        added.append(name)
    return added


# ---------------------------------------------------------------------------------------------


def apply_fixes() -> Dict[str, Any]:
    """Apply every fix; returns what each one did (False / [] when it was not needed)."""
    return {
        'drn': fix_missing_drn(),
        'transformers_vindlu': fix_transformers_for_vindlu(),
    }


apply_fixes()
