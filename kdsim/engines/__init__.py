"""Simulation engines behind one protocol and one driver (``kdsim.engines.driver``).

``numpy`` is the readable reference engine and the ground truth for the others; ``numba``
the compiled CPU engine (``numba_cpu``); ``cuda`` the GPU engine (``cuda_gpu``: numba-cuda
kernels on CuPy arrays, a thread or a warp per trajectory; ``cupy`` is another name for it, kept for
earlier scripts); ``auto`` the numba engine when numba imports and the problem exports a kernel
spec, else the reference engine. ``auto`` stays on the CPU: a GPU run must be asked for by name.
The array-module engine on CuPy (``cupy_gpu``) is reachable as an engine module
(``backend=kdsim.engines.cupy_gpu``): a cross-check and a benchmark baseline, not a user path.
numba-cuda and CuPy are imported only when asked for.
"""
from __future__ import annotations

from .. import _validate as V
from .driver import RunOutput, coefficients
from .driver import run as run_engine

#: every backend name kdsim knows; "auto" picks the fastest available
BACKENDS = ("auto", "numpy", "numba", "cuda", "cupy")

__all__ = ["BACKENDS", "RunOutput", "coefficients", "get_engine", "numba_available", "run", "run_engine"]


def numba_available():
    """True when numba imports."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def get_engine(backend, problem=None):
    """The engine module of a backend name (clear error for unknown names or missing packages).

    ``auto`` needs the ``problem`` it will run: the numba engine when numba imports and the
    problem exports a kernel spec, else the reference engine.
    """
    V.choice("backend", backend, BACKENDS)
    if backend == "numpy":
        from . import reference
        return reference
    if backend == "numba":
        if not numba_available():
            raise ImportError("backend 'numba' needs numba: pip install numba (or use backend='numpy')")
        from . import numba_cpu
        if problem is not None and not numba_cpu.supports(problem):
            raise NotImplementedError(f"backend 'numba' has no kernels for {type(problem).__name__} "
                                      "(it exports no kernel spec); use backend='numpy'")
        return numba_cpu
    if backend in ("cuda", "cupy"):
        from . import cuda_gpu
        cuda_gpu.require()    # ImportError naming `pip install kdsim[gpu]`, or RuntimeError: no usable GPU
        if problem is not None and not cuda_gpu.supports(problem):
            raise NotImplementedError(f"backend {backend!r} has no kernels for {type(problem).__name__}; "
                                      "use backend='numpy'")
        return cuda_gpu
    if problem is None:
        raise ValueError("backend 'auto' is resolved per problem: pass the problem to get_engine")
    if numba_available():
        from . import numba_cpu
        if numba_cpu.supports(problem):
            return numba_cpu
    from . import reference
    return reference


def run(problem, plan, backend="auto", **options):
    """Run a validated plan on a backend (name or engine module); a ``RunOutput`` (see ``driver.run``)."""
    engine = get_engine(backend, problem) if isinstance(backend, str) else backend
    return run_engine(problem, plan, engine, **options)
