"""Compile the CUDA engine's kernels to PTX for compute capability 9.0 without a GPU (float64, float32).

The per-trajectory kernel (a thread, and a warp, per trajectory), and the affine least-squares kernel
at d = 50 (W1's dimension) with and without momentum: there, with the coordinate loops of fixed trip count, u and v (and the velocities)
must be promoted to registers, i.e. the PTX has no local-memory loads or stores.

Where nvJitLink is installed (``cuda.bindings.nvjitlink``, from ``numba-cuda[cu13]``), the PTX is also
assembled for sm_90 and ptxas's register and spill report is read: without momentum the affine kernel
must spill at most ``SPILL_BUDGET`` bytes, a few scalars around the draw and the divergence test, not
the (u, v) pair (800 bytes at d = 50 in float64; a kernel with two unrolled paths through its step
spilled 1,348). With momentum the state is twice the register file at d = 50 and spills by design.

Run as a script by tests/test_engine_cuda.py: numba-cuda asks the current device for its compute
capability when it compiles a device function, so the device is stood in for by one with (9, 0).
"""
import re
import types

import numba
import numpy as np
from numba.cuda import compile_ptx
import numba.cuda.dispatcher as dispatcher

dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))

from kdsim.engines import _kernels_cuda as K  # noqa: E402


def args(wd, lanes):
    """Arguments of ``layered_traj`` with the engine's types (shapes do not matter for typing): with one
    lane the scratch (…, T) is C-ordered, with a warp per trajectory the engine passes transposed views."""
    if lanes == 1:
        z = lambda *s, t=wd: np.zeros(s, t)  # noqa: E731
    else:
        z = lambda *s, t=wd: np.zeros(s[::-1], t).T  # noqa: E731
    f = lambda *s: np.zeros(s, wd)  # noqa: E731
    i = lambda *s: np.zeros(s, np.int64)  # noqa: E731
    return (f(10, 3), f(10, 3), f(10, 3), f(3, 3), f(20), f(20), i(3), i(3), i(0), 1, 1, wd(0.1), f(4), wd(0.1),
            f(20), f(4, 2), f(4, 2), True, False, 5, 0, f(0), i(3), 10, np.zeros(4, np.uint64), 3, 0, 4, wd(0.0),
            wd(1.0), f(0, 3), wd(1e30), lanes, z(20, 4), z(20, 4), z(20, 4), z(20, 4), z(20, 4), z(10, 16, 4),
            z(5, 16, 4), z(5, 16, 4), z(3, 4, t=np.int64), z(10, 4, t=np.bool_), z(10, 4, t=np.int64), i(4),
            z(lanes, 4), z(3, 20, 4, t=np.float64), i(4), z(20, 4))


#: a compiler library that is not installed (NVVM, NVRTC): the test skips, it cannot fail on them
MISSING = ("No such file", "cannot be found", "could not be found", "libnvvm", "libnvrtc", "NVVM not")

def affine_args(wd, d):
    """Arguments of the affine least-squares kernel with the engine's types."""
    f = lambda *s: np.zeros(s, wd)  # noqa: E731
    i = lambda *s: np.zeros(s, np.int64)  # noqa: E731
    b = lambda *s: np.zeros(s, np.bool_)  # noqa: E731
    return (f(10, d), f(10), f(10), f(d), np.zeros(10), 0.5, wd(0.9), f(3), wd(0.1), f(1), f(d), f(3), False,
            i(3), 10, np.zeros(4, np.uint64), 1, 0, 10, wd(0.0), 1e100, i(1, 4), f(1, 4), f(1, 4), b(10, 4), i(1, 4),
            i(4), b(3, 4), f(3, d, 4), f(3, d, 4), i(3, 4), b(4), f(d, 4), f(d, 4))


CASES = [(f"{wd.__name__} layered_traj lanes={lanes}", K.layered_traj.py_func, args(wd, lanes), False)
         for wd in (np.float64, np.float32) for lanes in (1, K.WARP)]
CASES += [(f"{wd.__name__} ls_affine d=50 momentum={mom}", K.ls_affine_kernel(50, wd, mom, True).py_func,
           affine_args(wd, 50), True) for wd in (np.float64, np.float32) for mom in (False, True)]

#: bytes of spill stores allowed for the affine kernel without momentum (scalars, not the iterate pair)
SPILL_BUDGET = 256


def assemble(ptx):
    """(registers, spill-store bytes) of ptxas for sm_90 through nvJitLink, or None where it is missing."""
    try:
        from cuda.bindings import nvjitlink
    except ImportError:
        return None
    data = ptx.encode()
    handle = nvjitlink.create(3, ["-arch=sm_90", "-verbose", "-Xptxas=-v"])
    try:
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
    finally:
        nvjitlink.destroy(handle)
    text = bytes(log).decode(errors="replace")
    return int(re.search(r"Used (\d+) registers", text).group(1)), int(re.search(r"(\d+) bytes spill stores", text).group(1))

for name, fn, arguments, in_registers in CASES:
    sig = tuple(numba.typeof(a) for a in arguments)
    try:
        ptx, _ = compile_ptx(fn, sig, cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 - decided below: a missing library skips, anything else fails
        if any(m in str(exc) for m in MISSING):
            print("SKIP", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise SystemExit(0)
        raise
    assert ".entry" in ptx, name
    local = len(re.findall(r"\b(?:ld|st)\.local", ptx))
    assert not (in_registers and local), f"{name}: {local} local-memory loads/stores (u, v not in registers)"
    report = assemble(ptx)
    if report is not None:
        print(f"{name}: {report[0]} registers, {report[1]} bytes of spill stores (ptxas, sm_90)")
        assert not (in_registers and "momentum=False" in name and report[1] > SPILL_BUDGET), \
            f"{name}: {report[1]} bytes of spill stores > {SPILL_BUDGET} (the iterate pair spills)"
    print(name, "PTX ok")
