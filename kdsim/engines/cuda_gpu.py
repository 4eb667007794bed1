"""The CUDA engine (backend ``"cuda"``; ``"cupy"`` is the same engine): numba-cuda kernels on CuPy arrays.

One thread per trajectory (``_kernels_cuda.layered_traj``, every family of the kernel spec, every
estimator, sampling scheme, momentum and temperature), the numba CPU engine's index stream, the same
divergence guard. CuPy allocates, transfers and evaluates the records on the device (the problems'
own formulas, ``kdsim.kernelspec``); the kernels take CuPy arrays through ``__cuda_array_interface__``.
Only the record arrays, ``diverged_step`` and ``x_final`` come back, once per seed chunk (default
budget: half of the device's free memory).

Without a GPU, numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported)
runs the same kernels on the CPU on numpy arrays: the ``cudasim`` tests compare them there with the
reference engine, trajectory by trajectory. The array-module engine on CuPy (``cupy_gpu``) stays
available as ``backend=kdsim.engines.cupy_gpu`` (a cross-check and a benchmark baseline).

numba-cuda and CuPy are imported only inside functions. Without them (or without a usable device,
outside the simulator) every entry point raises one clear ImportError or RuntimeError.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np

from .. import kernelspec as KS
from ..plan import RECORDS, resolve_dtype
from . import cupy_gpu
from .numba_cpu import _Runner

NAME = "cuda"
TAKES = "spec"
INSTALL_HINT = "pip install kdsim[gpu]"

_CHECKED = []


def simulated():
    """True when numba-cuda's simulator runs the kernels on the CPU (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def _import_cuda():
    try:
        from numba import cuda
    except ImportError as exc:
        raise ImportError("backend 'cuda' needs numba-cuda and CuPy with an NVIDIA GPU: " + INSTALL_HINT +
                          " (or set NUMBA_ENABLE_CUDASIM=1 to run its kernels on the CPU), or use "
                          "backend='numpy' or backend='numba'") from exc
    return cuda


def gpu_status():
    """(usable, reason): the simulator, or numba-cuda and CuPy with a device that runs a kernel."""
    try:
        cuda = _import_cuda()
    except ImportError as exc:
        return False, str(exc)
    if simulated():
        return True, "numba-cuda simulator (NUMBA_ENABLE_CUDASIM=1): the kernels run on the CPU"
    ok, reason = cupy_gpu.gpu_status()
    if not ok:
        return False, reason.replace("backend 'cupy'", "backend 'cuda'")
    if _CHECKED:
        return True, reason
    try:
        if not cuda.is_available():
            return False, "numba-cuda sees no usable CUDA device"
    except Exception as exc:  # noqa: BLE001 - the driver's own error types
        return False, f"numba-cuda cannot use the CUDA driver ({type(exc).__name__}: {exc})"
    _CHECKED.append(True)
    return True, reason


def available():
    """True when the CUDA engine can run here (a GPU, or the simulator); never raises."""
    return gpu_status()[0]


def require():
    """ImportError (numba-cuda or CuPy missing) or RuntimeError (no usable device), each one line."""
    ok, reason = gpu_status()
    if ok:
        return
    if "pip install" in reason:
        raise ImportError(reason)
    raise RuntimeError(f"backend 'cuda' cannot run: {reason}; use backend='numpy' or backend='numba'")


def supports(problem):
    """True when the problem exports a kernel spec (the kernel runs every such family)."""
    return bool(getattr(problem, "exports_kernel_spec", lambda: False)())


def _xp():
    if simulated():
        return np
    return cupy_gpu.import_cupy()


def _host(xp, a):
    return a if xp is np else xp.asnumpy(a)


class _CudaRunner(_Runner):
    """Every family on ``_kernels_cuda.layered_traj``; records from the saved iterates, on the device."""

    saved_iterates = True
    kernel = "cuda_layered_traj"

    def __init__(self, spec, plan, dtype):
        super().__init__(spec, plan, dtype)
        from . import _kernels_cuda as K
        self.K, self.xp = K, _xp()
        xp, wd = self.xp, dtype
        if spec.depth + 2 > 16:
            raise ValueError(f"backend 'cuda' runs networks of at most 14 layers; this one has {spec.depth}")
        dev = lambda a, t=wd: xp.asarray(np.array(a, dtype=t, order="C"))  # noqa: E731 - a writeable copy
        self.A, self.Y = dev(spec.A), dev(spec.Y)
        self.rt, self.Gt, self.ridge = dev(spec.teacher_residuals), dev(spec.teacher_map), dev(spec.teacher_ridge)
        self.alpha = dev(spec.ridge_vector())
        self.dims = dev(spec.dims, np.int64)
        self.offs = dev(spec.offsets, np.int64)
        self.boffs = dev(spec.bias_offsets if spec.biases else (), np.int64)
        self.act, self.code = spec.activation_code, spec.link_code
        self.x0 = dev(plan.x0)
        self.dev_nfw = dev(self.nfw)
        self.dev_inv_bs = dev(self.inv_bs)
        self.dev_rec = dev(self.rec_steps, np.int64)
        self.tau = wd.type(spec.temperature)
        self.Qt = dev(spec.teacher_probs if spec.teacher_probs is not None else np.zeros((0, spec.d_out)))
        self.refs = spec.record_refs(xp)
        self.row_block = KS.rows_per_block(spec.record_row_bytes)
        self.widths = int(sum(spec.dims))
        self.wmax = int(max(spec.dims[1:]))
        self.fixed_bytes += KS.block_bytes(spec.record_row_bytes, self.L * self.S * self.R)
        self.default_budget = None if xp is np else cupy_gpu.device_budget
        self.timing_extra = {"device": "numba-cuda simulator" if xp is np else "CUDA device"}

    @property
    def bytes_per_seed(self):
        w, n, b, sb = self.wd.itemsize, self.spec.n, self.plan.batch_size, self.K.SAMPLE_BLOCK
        per_traj = (5 * self.dim * w + sb * (self.widths + 2 * self.wmax) * w + 8 * b + n
                    + (8 * n if self.scode else 0) + 8 + self.R * self.dim * 8 + self.dim * w)
        return int(self.L * per_traj + super().bytes_per_seed)

    def run_trajectories(self, seeds):
        xp, wd, K = self.xp, self.wd, self.K
        ns = len(seeds)
        keys = xp.asarray(np.ascontiguousarray(self.keys_of(seeds).ravel()))
        a, c = self.traj_coefs(ns)
        T, dim, n, b, sb = len(keys), self.dim, self.spec.n, self.plan.batch_size, K.SAMPLE_BLOCK
        z = lambda *shape: xp.zeros(shape, dtype=wd)  # noqa: E731
        X, G, Ys, GY, VEL = (z(dim, T) for _ in range(5))
        H, D, Dn = z(self.widths, sb, T), z(self.wmax, sb, T), z(self.wmax, sb, T)
        IDX = xp.zeros((b, T), dtype=np.int64)
        TAKEN = xp.zeros((n if (self.scode == 0 and b < n) else 1, T), dtype=np.bool_)
        PERM = xp.zeros((n if self.scode else 1, T), dtype=np.int64)
        PEPOCH = xp.full(T, -1, dtype=np.int64)
        saved = xp.full((self.R, dim, T), np.nan)
        div = xp.full(T, -1, dtype=np.int64)
        xfin = z(dim, T)
        args = (self.A, self.Y, self.rt, self.Gt, self.ridge, self.alpha, self.dims, self.offs, self.boffs, self.act,
                self.code, wd.type(self.gam), self.dev_inv_bs, wd.type(1.0 / n), self.x0, xp.asarray(a), xp.asarray(c),
                bool(self.est.uses_teacher), bool(self.est.snapshot), int(self.plan.svrg_period), int(self.snap_start),
                self.dev_nfw, self.dev_rec, int(self.plan.steps), keys, int(b), int(self.scode), int(self.epoch_steps),
                wd.type(self.mom), self.tau, self.Qt, wd.type(self.limit), X, G, Ys, GY, VEL, H, D, Dn, IDX, TAKEN,
                PERM, PEPOCH, saved, div, xfin)
        t0 = time.perf_counter()
        blocks = -(-T // K.THREADS)
        with warnings.catch_warnings():         # the simulator's uint64 arithmetic wraps on numpy scalars
            warnings.filterwarnings("ignore", "overflow encountered in scalar", RuntimeWarning)
            K.layered_traj[blocks, K.THREADS](*args)
        if xp is not np:
            xp.cuda.runtime.deviceSynchronize()
        self.timers["kernel"].run_s += time.perf_counter() - t0
        shape = (self.L, ns)
        div_h = _host(xp, div).reshape(shape)
        saved_t = xp.ascontiguousarray(xp.transpose(saved, (2, 0, 1)))                   # (T, R, dim)
        recs = self.records(saved_t, xp.asarray(div_h.ravel()))
        out = {name: _host(xp, v).reshape(shape + (self.R,)) for name, v in recs.items()}
        out["diverged_step"] = div_h
        out["x_final"] = _host(xp, xfin).T.astype(np.float64).reshape(shape + (dim,))
        if self.plan.keep_iterates:
            out["iterates"] = _host(xp, saved_t).reshape(shape + (self.R, dim))
        return out

    def records(self, saved, div):
        """dist2_opt, subopt, dist2_teacher (T, R) from the saved iterates (T, R, dim) of the live records."""
        t0 = time.perf_counter()
        values = KS.saved_records(self.refs, saved, div, self.xp.asarray(self.rec_steps), self.row_block, self.xp)
        self.timers["records"].run_s += time.perf_counter() - t0
        return dict(zip(RECORDS, values))


def prepare(spec, plan, dtype=None, path="auto"):
    """A runner of the plan on the CUDA kernels (``path``: "auto" or "trajectory", the only path)."""
    if path not in ("auto", "trajectory"):
        raise ValueError(f"path must be 'auto' or 'trajectory' for backend 'cuda' (one thread per trajectory); "
                         f"got {path!r}")
    require()
    return _CudaRunner(spec, plan, resolve_dtype(dtype, plan))
