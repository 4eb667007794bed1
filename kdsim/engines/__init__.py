"""Simulation engines. Each exposes ``run(problem, plan) -> dict of record arrays``.

``numpy`` is the readable reference engine and the ground truth for the others.
"""
from __future__ import annotations

from .. import _validate as V

#: every backend name kdsim knows; "auto" picks the fastest available
BACKENDS = ("auto", "numpy")


def get_engine(backend):
    """Return the engine module for a backend name (clear error for unknown names)."""
    V.choice("backend", backend, BACKENDS)
    from . import reference
    return reference
