"""TempMe for mmaction2: temporal token merging for efficient text-video retrieval.

Importing this package first applies the compatibility fixes for the dependency stack
(:mod:`projects.tempme.compat`), then registers every component in mmaction2's
registries, so configs can use it through ``custom_imports``.
"""
# isort: off
from . import compat  # noqa: F401  (must run before anything imports mmaction.models)
# Importing the submodules registers their components.
from . import datasets, engine, evaluation, merging, models  # noqa: F401,E402
