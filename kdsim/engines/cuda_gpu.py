"""The CUDA engine (backend ``"cuda"``; ``"cupy"`` is the same engine): numba-cuda kernels on CuPy arrays.

A thread per trajectory, or a warp (one block of 32 threads sharing its loops) where the trajectories are
too few to fill the device (``_kernels_cuda.layered_traj``: every family of the kernel spec, every
estimator, sampling scheme, momentum and temperature; ``lanes_per_trajectory``), the numba CPU engine's
index stream, the same divergence guard. Least squares under common random numbers runs in the affine form instead
(``_kernels_cuda.ls_affine_kernel``: one thread per seed, its (u, v) pair in registers for every λ,
compiled per dimension), and its records are the quadratics in λ of the saved pairs, with the CPU
kernel's rule against cancellation (``kernelspec.affine_record_values``); a seed the affine form cannot
decide is rerun per trajectory by the driver, as on the CPU. CuPy allocates, transfers and evaluates the records on the device (the problems'
own formulas, ``kdsim.kernelspec``); the kernels take CuPy arrays through ``__cuda_array_interface__``.
With a thread per trajectory or seed, blocks are 128 threads, narrower (down to one warp) when that would
leave multiprocessors idle (``_kernels_cuda.threads_per_block``).
Only the record arrays, ``diverged_step`` and ``x_final`` come back, once per seed chunk (default
budget: half of the device's free memory); with ``reduce=True`` the driver decides divergence and
the chunk's moments on the device, and only the (λ, record) moments and ``diverged_step`` come back.

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
from .driver import affine_path
from .numba_cpu import AffineForm, _Runner

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


def sm_count():
    """Multiprocessors of the current device (1 on the simulator, whose blocks run one after another)."""
    if simulated():
        return 1
    if not _SM_COUNT:
        _SM_COUNT.append(int(_import_cuda().get_current_device().MULTIPROCESSOR_COUNT))
    return _SM_COUNT[0]


_SM_COUNT = []


def _launch(kernel, n_threads, args, lanes=1):
    """``kernel`` over ``n_threads`` threads (one per trajectory or seed), blocks shaped by
    ``_kernels_cuda.threads_per_block``; with ``lanes`` > 1, one block of that many threads per trajectory."""
    from . import _kernels_cuda as K
    if lanes > 1:
        blocks, tpb = n_threads, lanes
    else:
        tpb = K.threads_per_block(n_threads, sm_count())
        blocks = -(-n_threads // tpb)
    with warnings.catch_warnings():         # the simulator's uint64 arithmetic wraps on numpy scalars
        warnings.filterwarnings("ignore", "overflow encountered in scalar", RuntimeWarning)
        kernel[blocks, tpb](*args)


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
    """Every family on ``_kernels_cuda.layered_traj`` (``lanes`` threads per trajectory: 1, 32 or None, the
    device's choice); records from the saved iterates, on the device."""

    saved_iterates = True
    traj_kernel = "cuda_layered_traj"       # the per-trajectory kernel's last shape: …_traj or …_warp
    reduces_on_device = True            # run_chunk(…, device=True): the driver reduces on the device

    def __init__(self, spec, plan, dtype, lanes=None):
        super().__init__(spec, plan, dtype)
        from . import _kernels_cuda as K
        self.K, self.xp, self.lanes = K, _xp(), lanes
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
                    + (8 * n if self.scode else 0) + 8 + self.K.WARP * w + self.R * self.dim * 8 + self.dim * w)
        return int(self.L * per_traj + super().bytes_per_seed)

    def run_chunk(self, s0, s1, device=False):
        return self.run_trajectories(np.arange(s0, s1), device), None

    def run_trajectories(self, seeds, device=False):
        """Every λ of the given seeds (local indices); ``device``: the arrays stay on the device."""
        xp, wd, K = self.xp, self.wd, self.K
        put = (lambda a: a) if device else (lambda a: _host(xp, a))  # noqa: E731
        ns = len(seeds)
        keys = xp.asarray(np.ascontiguousarray(self.keys_of(seeds).ravel()))
        a, c = self.traj_coefs(ns)
        T, dim, n, b, sb = len(keys), self.dim, self.spec.n, self.plan.batch_size, K.SAMPLE_BLOCK
        W = self.lanes or (1 if simulated() else K.lanes_per_trajectory(T, sm_count()))
        self.traj_kernel = "cuda_layered_warp" if W > 1 else "cuda_layered_traj"

        def z(*shape, dtype=wd, fill=0):
            """(…, T) arrays; with a warp per trajectory stored trajectory by trajectory, the first axis
            fastest (a layer's inputs of one sample neighbour each other): the transpose of a C array."""
            if W == 1:
                return xp.full(shape + (T,), fill, dtype=dtype)
            return xp.full((T,) + shape[::-1], fill, dtype=dtype).T
        X, G, Ys, GY, VEL = (z(dim) for _ in range(5))
        H, D, Dn = z(self.widths, sb), z(self.wmax, sb), z(self.wmax, sb)
        IDX = z(b, dtype=np.int64)
        TAKEN = z(n if (self.scode == 0 and b < n) else 1, dtype=np.bool_)
        PERM = z(n if self.scode else 1, dtype=np.int64)
        PEPOCH = xp.full(T, -1, dtype=np.int64)
        NRM = z(W)
        saved = z(self.R, dim, dtype=np.float64, fill=np.nan)
        div = xp.full(T, -1, dtype=np.int64)
        xfin = z(dim)
        args = (self.A, self.Y, self.rt, self.Gt, self.ridge, self.alpha, self.dims, self.offs, self.boffs, self.act,
                self.code, wd.type(self.gam), self.dev_inv_bs, wd.type(1.0 / n), self.x0, xp.asarray(a), xp.asarray(c),
                bool(self.est.uses_teacher), bool(self.est.snapshot), int(self.plan.svrg_period), int(self.snap_start),
                self.dev_nfw, self.dev_rec, int(self.plan.steps), keys, int(b), int(self.scode), int(self.epoch_steps),
                wd.type(self.mom), self.tau, self.Qt, wd.type(self.limit), int(W), X, G, Ys, GY, VEL, H, D, Dn, IDX,
                TAKEN, PERM, PEPOCH, NRM, saved, div, xfin)
        t0 = time.perf_counter()
        _launch(K.layered_traj, T, args, lanes=W)
        if xp is not np:
            xp.cuda.runtime.deviceSynchronize()
        self.timers["kernel"].run_s += time.perf_counter() - t0
        shape = (self.L, ns)
        saved_t = xp.ascontiguousarray(xp.transpose(saved, (2, 0, 1)))                   # (T, R, dim)
        recs = self.records(saved_t, div)
        out = {name: put(v).reshape(shape + (self.R,)) for name, v in recs.items()}
        out["diverged_step"] = put(div).reshape(shape)
        out["x_final"] = put(xfin.T.astype(np.float64)).reshape(shape + (dim,))
        if self.plan.keep_iterates:
            out["iterates"] = put(saved_t).reshape(shape + (self.R, dim))
        return out

    @property
    def kernel(self):
        return self.traj_kernel

    def records(self, saved, div):
        """dist2_opt, subopt, dist2_teacher (T, R) from the saved iterates (T, R, dim) of the live records."""
        t0 = time.perf_counter()
        values = KS.saved_records(self.refs, saved, div, self.xp.asarray(self.rec_steps), self.row_block, self.xp)
        self.timers["records"].run_s += time.perf_counter() - t0
        return dict(zip(RECORDS, values))


class _CudaLeastSquaresRunner(_CudaRunner):
    """Least squares: the affine (u, v) kernel (one thread per seed, every λ) under common random numbers,
    else the per-trajectory kernel. Records of the affine form are the quadratics in λ of the saved pairs,
    evaluated on the device (``kernelspec.affine_record_values``, the cancellation rule of the CPU kernel)."""

    def __init__(self, spec, plan, dtype, path="auto", lanes=None):
        super().__init__(spec, plan, dtype, lanes)
        self.affine = affine_path(spec, plan, path)
        if not self.affine:
            return
        xp, wd = self.xp, dtype
        dev = lambda a, t=wd: xp.asarray(np.array(a, dtype=t, order="C"))  # noqa: E731 - a writeable copy
        form = AffineForm(spec, plan, wd)
        self.form = form
        self.bvec, self.rth_v = dev(spec.Y[:, 0]), dev(spec.teacher_residuals[:, 0])
        self.gcv, self.anorm = dev(form.gcv), dev(form.anorm, np.float64)
        self.gam_bs_dev, self.scales = dev(form.gam_bs), dev(form.scales)
        with np.errstate(over="ignore"):
            self.acw = dev(self.coef[:, 0])
        self.acoef = np.asarray(self.coef[:, 0], dtype=np.float64)
        F, self.alpha64 = spec.record_factor()
        self.F = dev(F, np.float64)
        self.xstar, self.theta = dev(spec.x_star, np.float64), dev(spec.theta, np.float64)
        self.fixed_bytes += F.nbytes

    @property
    def kernel(self):
        return "cuda_ls_affine" if self.affine else self.traj_kernel

    @property
    def bytes_per_seed(self):
        if not self.affine:
            return super().bytes_per_seed
        w, d, n, b, R, L = self.wd.itemsize, self.dim, self.spec.n, self.plan.batch_size, self.R, self.L
        kernel = (2 * R * d * w + 2 * d * w + b * (8 + 2 * w) + n + (8 * n if self.scode else 0) + 8 + 9 * L + 1)
        records = 3 * L * R * 8 + 8 * R * 8 + L * d * 8      # the records, their sums, x_final(λ)
        return int(kernel + records + _Runner.bytes_per_seed.fget(self))

    def _run_affine(self, s0, s1):
        """The kernel on seeds s0 .. s1 − 1: saved pairs (R, d, S), ufin, vfin (d, S), div (L, S), unsafe (S,)."""
        xp, wd, d, ns = self.xp, self.wd, self.dim, s1 - s0
        K = self.K
        keys = xp.asarray(np.ascontiguousarray(self.keys_of(np.arange(s0, s1))[0]))
        n, b = self.spec.n, self.plan.batch_size
        usave = xp.full((self.R, d, ns), np.nan, dtype=wd)
        vsave = xp.full((self.R, d, ns), np.nan, dtype=wd)
        ufin, vfin = xp.zeros((d, ns), dtype=wd), xp.zeros((d, ns), dtype=wd)
        div = xp.full((self.L, ns), -1, dtype=np.int64)
        unsafe = xp.zeros(ns, dtype=np.bool_)
        alive = xp.zeros((self.L, ns), dtype=np.bool_)
        IDX = xp.zeros((b, ns), dtype=np.int64)
        RU, RV = xp.zeros((b, ns), dtype=wd), xp.zeros((b, ns), dtype=wd)
        TAKEN = xp.zeros((n if (self.scode == 0 and b < n) else 1, ns), dtype=np.bool_)
        PERM = xp.zeros((n if self.scode else 1, ns), dtype=np.int64)
        PEPOCH = xp.full(ns, -1, dtype=np.int64)
        f = self.form
        kernel = K.ls_affine_kernel(d, wd, self.mom != 0, bool(self.est.uses_teacher))
        args = (self.A, self.bvec, self.rth_v, self.gcv, self.anorm, f.gcv_norm, f.c1, self.gam_bs_dev,
                f.gam_alpha, self.scales, self.x0, self.acw, f.plain, self.dev_rec,
                int(self.plan.steps), keys, int(b), int(self.scode), int(self.epoch_steps), wd.type(self.mom),
                float(self.limit), IDX, RU, RV, TAKEN, PERM, PEPOCH, alive, usave, vsave, div, unsafe, ufin, vfin)
        t0 = time.perf_counter()
        _launch(kernel, ns, args)
        if xp is not np:
            xp.cuda.runtime.deviceSynchronize()
        self.timers["kernel"].run_s += time.perf_counter() - t0
        return usave, vsave, ufin, vfin, div, unsafe

    def _pairs(self, usave, vsave, r0, r1):
        """Rows (u, v) of records r0 .. r1 − 1, float64, record-major: ((r1 − r0)·S, d) each."""
        xp = self.xp
        flat = lambda a: xp.ascontiguousarray(xp.transpose(a[r0:r1], (0, 2, 1))).reshape(-1, self.dim)  # noqa: E731
        U, V = flat(usave).astype(np.float64), flat(vsave).astype(np.float64)
        if not self.est.uses_teacher:
            V[...] = 0.0
        return U, V

    def _record_blocks(self, ns):
        per = max(1, KS.rows_per_block(12 * self.dim * 8) // max(ns, 1))
        return [(r0, min(self.R, r0 + per)) for r0 in range(0, self.R, per)]

    def run_chunk(self, s0, s1, device=False):
        if not self.affine:
            return super().run_chunk(s0, s1, device)
        xp, ns, L, R = self.xp, s1 - s0, self.L, self.R
        put = (lambda a: a) if device else (lambda a: _host(xp, a))  # noqa: E731
        usave, vsave, ufin, vfin, div, unsafe = self._run_affine(s0, s1)
        t0 = time.perf_counter()
        recs = [xp.empty((L, R, ns)) for _ in RECORDS]
        for r0, r1 in self._record_blocks(ns):
            U, V = self._pairs(usave, vsave, r0, r1)
            vals = KS.affine_record_values(xp, U, V, self.acoef, self.xstar, self.theta, self.F, self.alpha64,
                                           self.form.quad_tol)
            for o, v in zip(recs, vals):
                o[:, r0:r1] = v.reshape(L, r1 - r0, ns)
        steps = xp.asarray(self.rec_steps)
        dead = (div[:, None, :] >= 0) & (steps[None, :, None] >= div[:, None, :])           # (L, R, S)
        out = {}
        for name, o in zip(RECORDS, recs):
            o[dead] = np.nan
            out[name] = put(xp.ascontiguousarray(xp.transpose(o, (0, 2, 1))))
        uf, vf = ufin.T.astype(np.float64), vfin.T.astype(np.float64)
        x = xp.stack([uf + a * vf if a != 0.0 else uf for a in self.acoef])                    # (L, S, d)
        x[div >= 0] = np.nan
        out["diverged_step"], out["x_final"] = put(div), put(x)
        if self.plan.keep_iterates:
            U, V = self._pairs(usave, vsave, 0, R)
            it = xp.stack([U + a * V if a != 0.0 else U for a in self.acoef]).reshape(L, R, ns, self.dim)
            it[dead] = np.nan
            out["iterates"] = put(xp.transpose(it, (0, 2, 1, 3)))
        self.timers["records"].run_s += time.perf_counter() - t0
        return out, _host(xp, unsafe)

    def run_coefficients(self, s0, s1):
        """(div (L, S), unsafe (S,), coefficients (S, R, 3, 3)) of the affine form (``driver.coefficients``)."""
        xp, ns = self.xp, s1 - s0
        usave, vsave, _, _, div, unsafe = self._run_affine(s0, s1)
        coeffs = xp.empty((self.R, ns, 3, 3))
        for r0, r1 in self._record_blocks(ns):
            U, V = self._pairs(usave, vsave, r0, r1)
            sums = KS.affine_sums(xp, U, V, self.xstar, self.theta, self.F)[0]
            coeffs[r0:r1] = KS.affine_coefficients(xp, sums, self.alpha64).reshape(r1 - r0, ns, 3, 3)
        return _host(xp, div), _host(xp, unsafe), _host(xp, xp.transpose(coeffs, (1, 0, 2, 3)))


def prepare(spec, plan, dtype=None, path="auto", lanes=None):
    """A runner of the plan on the CUDA kernels. ``path``: "auto"; for least squares "affine" (required) or
    "trajectory" (the per-trajectory kernel, every family's only path). ``lanes``: threads per trajectory
    of that kernel, 1 or 32 (one warp; fewer than a warp, a power of two, runs the same shared loops at a
    warp's cost); None chooses by the device's size (``_kernels_cuda.lanes_per_trajectory``), and one
    thread on the simulator, which runs every thread in Python."""
    if lanes is not None and lanes not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"lanes must be None or a power of two from 1 to 32 (threads per trajectory); got {lanes!r}")
    if spec.family == "least_squares":
        require()
        return _CudaLeastSquaresRunner(spec, plan, resolve_dtype(dtype, plan), path, lanes)
    if path not in ("auto", "trajectory"):
        raise ValueError(f"path must be 'auto' or 'trajectory' for backend 'cuda' on {spec.family} "
                         f"(the per-trajectory kernel); got {path!r}")
    require()
    return _CudaRunner(spec, plan, resolve_dtype(dtype, plan), lanes)
