"""TempMe for mmaction2: temporal token merging for efficient text-video retrieval.

Importing this package registers every component in mmaction2's registries (so configs can
use it through ``custom_imports``) after the fixes that let ``import mmaction.models`` work
on the pinned stack (:mod:`projects.tempme.compat`). It changes nothing else in the process:
checkpoint loading is made safe by the runner this project's configs name
(:class:`~projects.tempme.engine.TempMeRunner`) and by its tools, and warning filters are
set by its tools only.
"""
# isort: off
from . import compat  # noqa: F401  (must run before anything imports mmaction.models)
# Importing the submodules registers their components.
from . import datasets, engine, evaluation, merging, models  # noqa: F401,E402
