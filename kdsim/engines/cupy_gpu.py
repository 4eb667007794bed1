"""The GPU engine (backend ``"cupy"``): the array-module engine ``batched`` with CuPy arrays.

The runner is ``batched``'s on CuPy arrays: the kernel spec's data, the teacher's
per-sample residuals and the record constants move to the device once per run; every
step, record and divergence check runs there; only the record arrays, ``diverged_step``
and ``x_final`` come back, once per seed chunk (the default budget is half of the
device's free memory). The numbers are those of the array-module engine with numpy
up to the order of floating-point reductions, which the CPU suite checks.

CuPy is imported only inside functions, so importing kdsim never needs it. Without
CuPy every entry point raises ImportError naming ``pip install kdsim[gpu]``; with CuPy
but no usable CUDA device, ``require`` and ``run`` raise RuntimeError. ``available()``
is the check the ``auto`` backend must use before ever choosing this engine.
"""
from __future__ import annotations

from . import batched

NAME = "cupy"
TAKES = "spec"

#: what to install for this backend
INSTALL_HINT = "pip install kdsim[gpu]"
#: fraction of the device's free memory a run may use when ``max_bytes`` is not given
DEVICE_MEMORY_FRACTION = 0.5

_CHECKED = []   # [True] once a device has been verified usable in this process


def import_cupy():
    """The ``cupy`` module, or ImportError naming ``pip install kdsim[gpu]``."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            "backend 'cupy' needs CuPy and an NVIDIA GPU: " + INSTALL_HINT + " (CUDA 12 wheels, "
            "which CUDA 13 drivers run too; kdsim[gpu-cuda13] for CUDA 13's), or use backend='numpy' "
            "or backend='numba'") from exc
    return cupy


def gpu_status():
    """(usable, reason): whether CuPy imports, sees a CUDA device and can run a kernel on it."""
    try:
        cupy = import_cupy()
    except ImportError as exc:
        return False, str(exc)
    if _CHECKED:
        return True, "CUDA device usable"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDA driver or runtime missing: CuPy raises its own error types
        return False, f"CuPy imports but CUDA is not usable ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy imports but no CUDA device is visible"
    try:
        if int((cupy.arange(4, dtype=cupy.int64) * 2).sum()) != 12:
            return False, "a test kernel on the CUDA device returned a wrong result"
    except Exception as exc:  # e.g. no kernel image for this GPU, out of memory, NVRTC missing
        return False, f"CuPy sees {count} CUDA device(s) but cannot run a kernel ({type(exc).__name__}: {exc})"
    _CHECKED.append(True)
    return True, f"{count} CUDA device(s) usable"


def available():
    """True when CuPy imports and a CUDA device runs kernels (never raises)."""
    return gpu_status()[0]


def require():
    """Raise ImportError (no CuPy: ``pip install kdsim[gpu]``) or RuntimeError (no usable GPU)."""
    import_cupy()
    ok, reason = gpu_status()
    if not ok:
        raise RuntimeError(f"backend 'cupy' cannot run: {reason}; use backend='numpy' or backend='numba'")


def supports(problem):
    """True when the problem exports a kernel spec (the array-module engine runs every such family)."""
    return bool(getattr(problem, "exports_kernel_spec", lambda: False)())


def device_budget(fraction=DEVICE_MEMORY_FRACTION):
    """``fraction`` of the current device's free memory, in bytes."""
    cupy = import_cupy()
    free, _total = cupy.cuda.Device().mem_info
    return int(free * fraction)


def prepare(spec, plan, dtype=None, path="auto"):
    """A runner of the array-module engine on CuPy arrays (``batched.prepare`` with ``xp=cupy``)."""
    cupy = import_cupy()
    require()
    runner = batched.prepare(spec, plan, xp=cupy, dtype=dtype, path=path)
    runner.default_budget = device_budget
    return runner
