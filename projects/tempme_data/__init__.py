"""Preparing datasets: annotation conversion and the synthetic benchmark.

Shared by the scripts in ``tools/data/`` and ``tools/demo.py``. Standard library, numpy
and OpenCV only: importing it loads no torch, mmengine or mmaction2, so the converters answer
``--help`` at once.
"""
