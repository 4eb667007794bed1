"""Simulation engines. Each exposes ``run(problem, plan) -> dict of record arrays``.

``numpy`` is the readable reference engine and the ground truth for the others;
``numba`` the compiled CPU engine (``numba_cpu``); ``cupy`` the GPU engine
(``cupy_gpu``: the array-module engine ``batched`` on CuPy arrays; CuPy is imported
only when asked for); ``auto`` the numba engine when numba imports and has kernels
for the problem, else the reference engine. ``auto`` stays on the CPU: a GPU run
must be asked for by name.
"""
from __future__ import annotations

from .. import _validate as V

#: every backend name kdsim knows; "auto" picks the fastest available
BACKENDS = ("auto", "numpy", "numba", "cupy")


def numba_available():
    """True when numba imports."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class _AutoEngine:
    """``auto``: the numba engine for problems it has kernels for, the reference engine otherwise."""

    name = "auto"
    _last = []

    @staticmethod
    def select(problem):
        """The engine module that ``run`` uses for ``problem``."""
        from . import numba_cpu, reference
        return numba_cpu if numba_cpu.supports(problem) else reference

    @classmethod
    def run(cls, problem, plan):
        engine = cls.select(problem)
        cls._last[:] = [engine]
        return engine.run(problem, plan)

    @classmethod
    def last_timing(cls):
        """Timing of the latest run if the numba engine ran it (see ``numba_cpu.last_timing``), else {}."""
        engine = cls._last[0] if cls._last else None
        return engine.last_timing() if hasattr(engine, "last_timing") else {}


def get_engine(backend):
    """Return the engine for a backend name (clear error for unknown names)."""
    V.choice("backend", backend, BACKENDS)
    if backend == "numpy":
        from . import reference
        return reference
    if backend == "numba":
        if not numba_available():
            raise ImportError("backend 'numba' needs numba: pip install numba (or use backend='numpy')")
        from . import numba_cpu
        return numba_cpu
    if backend == "cupy":
        from . import cupy_gpu
        cupy_gpu.require()    # ImportError naming `pip install kdsim[gpu]`, or RuntimeError: no usable GPU
        return cupy_gpu
    if numba_available():
        return _AutoEngine
    from . import reference
    return reference
