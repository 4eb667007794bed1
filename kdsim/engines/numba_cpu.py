"""The numba CPU engine (backend ``"numba"``): fused, compiled per-trajectory kernels.

It reads the problem's ``KernelSpec`` and follows the reference engine step for step: the
same counter-based minibatches (``kdsim.rng``'s numba twin), the same control-variate form
g = ∇f_B(x) − a·T_B + c·T (``kdsim.estimators``), the same records and divergence guard
(‖x‖² above ``guard_limit`` or non-finite → diverged at step t + 1, frozen, later records NaN).

Kernels: least squares under common random numbers with a teacher-anchored estimator runs
one (u, v) pair per seed for every λ (docs/theory.md §5.1, ``_kernels_ls.ls_affine``); a seed
the affine form cannot decide is returned as unsafe and rerun per trajectory by the driver.
Other least-squares runs use ``ls_traj``; softmax, GLMs and deep linear nets the layered
kernel ``_kernels_layered.layered_traj``, whose saved iterates are turned into records by
``kdsim.kernelspec.record_values`` (softmax's f − f* by its compiled twin).

Precision: ``dtype`` "float64" or "float32" for the iterate arithmetic; records are float64.
Seeds run in blocks on a thread pool of ``nogil`` kernels; each block writes its own rows.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _validate as V
from .. import kernelspec as KS
from ..plan import RECORDS, guard_limit, resolve_dtype
from ..rng import stream_keys
from .. import memory
from ._simd import aligned_zeros
from .driver import Timer, affine_path

NAME = "numba"
TAKES = "spec"


def available():
    """True when numba imports (the engine is usable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def supports(problem):
    """True when the problem exports a kernel spec (every family with kernels here)."""
    return bool(getattr(problem, "exports_kernel_spec", lambda: False)())


def threads():
    """Worker threads of the engine: ``set_threads`` value, else numba's thread count."""
    if _THREADS:
        return _THREADS[0]
    try:
        import numba
        return int(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        return os.cpu_count() or 1


def set_threads(n):
    """Use ``n`` worker threads (None: back to numba's default)."""
    _THREADS.clear()
    if n is not None:
        _THREADS.append(V.int_in_range("threads", n, 1))


_THREADS = []


def _read_only(*arrays):
    """Read-only views of ``arrays``: a kernel's inputs are typed read-only whatever the problem's arrays
    are, so that one kernel serves both (numba compiles a kernel once per argument type, and the
    layered kernel's compile takes about a minute)."""
    views = []
    for a in arrays:
        v = a.view()
        v.flags.writeable = False
        views.append(v)
    return tuple(views)


def call_blocks(timer, kernel, n_items, args, align=1):
    """Call ``kernel(lo, hi, *args)`` over blocks of trajectories on worker threads.

    Several blocks per thread balance trajectories that stop early. A first call on the
    empty range compiles the kernel or loads it from numba's cache; it is timed as
    ``compile_s``.
    """
    t0 = time.perf_counter()
    kernel(0, 0, *args)
    t1 = time.perf_counter()
    workers = min(threads(), -(-n_items // align))
    if workers <= 1:
        kernel(0, n_items, *args)
    else:
        n_blocks = min(-(-n_items // align), 8 * workers)
        edges = np.linspace(0, n_items, n_blocks + 1).astype(np.int64)
        edges[1:-1] = edges[1:-1] // align * align     # whole blocks of the kernel per range
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(kernel, int(lo), int(hi), *args)
                       for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
            for f in futures:
                f.result()
    t2 = time.perf_counter()
    timer.compile_s += t1 - t0
    timer.run_s += t2 - t1


class _Runner:
    """Common set-up of a family: sizes, coefficients, dtype scalars, timers."""

    saved_iterates = False

    def __init__(self, spec, plan, dtype):
        self.spec, self.plan = spec, plan
        self.wd = dtype
        self.dtype = dtype.name
        self.L, self.S, self.R = plan.n_lams, plan.n_seeds, plan.n_records
        self.dim = spec.dim
        self.est = plan.estimator
        self.table = plan.coefficient_table                               # (L, E, 2) per epoch
        self.coef = self.table[:, 0, :]                                   # (L, 2) of the first epoch
        self.scode, self.epoch_steps, self.mom = plan.sampling_code, plan.steps_per_epoch, dtype.type(plan.momentum)
        self.inv_bs = np.array([0.0] + [1.0 / k for k in range(1, plan.batch_size + 1)], dtype=dtype)
        self.snap_start = plan.snapshot_start
        w = plan.full_weights                                           # n·w_i of SVRG's full gradient, or none
        self.nfw = np.zeros(0, dtype=dtype) if w is None else (spec.n * w).astype(dtype)
        self.crn = plan.common_random_numbers
        self.rec_steps = np.ascontiguousarray(plan.record_steps, dtype=np.int64)
        self.limit = dtype.type(guard_limit(dtype))
        self.zero = dtype.type(0.0)
        self.gam = dtype.type(plan.step)
        # "records": wall time of records evaluated after the kernel; "records_kernel": their compiled part
        self.timers = {"kernel": Timer(), "records": Timer(), "records_kernel": Timer()}
        self.fixed_bytes = spec.A.nbytes + spec.Y.nbytes + spec.teacher_residuals.nbytes

    @property
    def bytes_per_seed(self):
        keep = self.plan.keep_iterates
        per = memory.chunk_bytes(self.L, self.R, self.dim, self.wd.itemsize,
                                 saved_iterates=self.saved_iterates or keep)
        if getattr(self, "affine", False):        # the pair (u, v) per seed, and one row of x(λ) = u + λv
            per += 2 * self.dim * self.wd.itemsize + self.dim * 8
            if keep:                              # (u, v) at every record
                per += 2 * self.R * self.dim * (self.wd.itemsize + 8)
        return per

    def keys_of(self, seeds):
        """(L, len(seeds)) stream keys of the plan's seeds with local indices ``seeds``."""
        return stream_keys(self.plan.seed, self.plan.streams_of(seeds))

    def traj_coefs(self, n_seeds):
        """λ-major per-trajectory (a, c) tables (T, E) in the working dtype (a λ beyond float32 becomes inf)."""
        with np.errstate(over="ignore"):
            a = np.ascontiguousarray(np.repeat(self.table[:, :, 0], n_seeds, axis=0), dtype=self.wd)
            c = np.ascontiguousarray(np.repeat(self.table[:, :, 1], n_seeds, axis=0), dtype=self.wd)
        return a, c

    def new_records(self, shape):
        return [np.full(shape, np.nan) for _ in RECORDS]

    def run_chunk(self, s0, s1):
        return self.run_trajectories(np.arange(s0, s1)), None


class AffineForm:
    """The constants of least squares' affine form (docs/theory.md §5.1) in dtype ``wd``, γ folded in:
    ``gcv`` = γκ (κ the shift of v's recursion), ``c1`` = 1 − γα, ``gam_bs`` = γ/b_t by batch size,
    ``gam_alpha`` = γα, the per-epoch λ ``scales``, ``anorm`` = ‖a_i‖, ``plain`` (α = 0 and κ = 0), and
    ``quad_tol``, the cancellation rule of records evaluated from their quadratics in λ."""

    def __init__(self, spec, plan, wd):
        from ._kernels_ls import QUAD_RECORD_RTOL
        gam = float(plan.step)
        self.gcv64 = gam * spec.affine_shift(plan.estimator.corrected)
        self.gcv = self.gcv64.astype(wd)
        self.gcv_norm = float(np.linalg.norm(self.gcv64))
        self.plain = bool(spec.l2 == 0 and not np.any(self.gcv != 0))
        self.c1 = wd.type(1.0 - gam * float(spec.l2))
        self.gam_bs = np.array([0.0] + [gam / k for k in range(1, plan.batch_size + 1)]).astype(wd)
        self.gam_alpha = wd.type(gam * float(spec.l2))
        with np.errstate(over="ignore"):
            self.scales = np.ascontiguousarray(plan.lambda_scales, dtype=wd)
        self.anorm = np.linalg.norm(spec.A, axis=1)
        F, _ = spec.record_factor()
        self.quad_tol = 2.0 * (max(spec.dim, F.shape[0]) + 3) * np.finfo(np.float64).eps / QUAD_RECORD_RTOL


class _LeastSquaresRunner(_Runner):
    """Least squares: the affine (u, v) kernel under common random numbers, else per trajectory."""

    def __init__(self, spec, plan, dtype, path="auto"):
        super().__init__(spec, plan, dtype)
        from . import _kernels_ls as K
        self.K = K
        est, wd = self.est, dtype
        A64 = spec.A
        self.A = np.ascontiguousarray(A64, dtype=wd)
        self.bvec = np.ascontiguousarray(spec.Y[:, 0], dtype=wd)
        self.rth = np.ascontiguousarray(spec.teacher_residuals[:, 0], dtype=wd)
        ridge, tfull = spec.teacher_ridge, spec.teacher_full
        self.ridge = np.ascontiguousarray(ridge, dtype=wd)
        self.tfull = np.ascontiguousarray(tfull, dtype=wd)
        self.alpha = spec.ridge_vector().astype(wd)      # α per coordinate
        self.inv_n = wd.type(1.0 / spec.n)
        self.x0 = np.ascontiguousarray(plan.x0, dtype=wd)
        self.xstar = np.ascontiguousarray(spec.x_star, dtype=np.float64)
        self.theta_c = np.ascontiguousarray(spec.theta, dtype=np.float64)
        self.F, self.alpha64 = spec.record_factor()      # a writeable copy: one kernel signature
        self.affine = affine_path(spec, plan, path)
        if self.affine:
            self._affine_setup(A64)
        with np.errstate(over="ignore"):
            self.acw = self.coef[:, 0].astype(wd)
        self.use_v = est.uses_teacher
        self.kernel = "ls_affine" if self.affine else "ls_traj"
        self.fixed_bytes += self.F.nbytes + (self.A_pad.nbytes + self.Ft_lanes.nbytes if self.affine else 0)

    # -- affine ------------------------------------------------------------
    def _affine_setup(self, A64):
        """Inputs of ``ls_affine``: columns zero-padded to whole SIMD vectors, γ folded in."""
        wd, n, d = self.wd, self.spec.n, self.dim
        form = AffineForm(self.spec, self.plan, wd)
        lanes = self.K.LANES                               # whole explicit vectors
        dp = -(-d // lanes) * lanes
        self.A_pad = aligned_zeros((n, dp), wd)
        self.A_pad[:, :d] = self.A
        self.x0_pad = np.zeros(dp, dtype=wd)
        self.x0_pad[:d] = self.x0
        self.gcv_pad = np.zeros(dp, dtype=wd)
        self.gcv_pad[:d] = form.gcv
        self.gcv_norm, self.plain, self.c1 = form.gcv_norm, form.plain, form.c1
        self.gam_bs, self.gam_alpha, self.scales = form.gam_bs, form.gam_alpha, form.scales
        self.anorm, self.quad_tol = form.anorm, form.quad_tol
        self.agcv = (A64 @ form.gcv64).astype(wd)          # a_iᵀ(γc), for steps taken in pairs
        Ft = self.K.lane_factor(self.F)
        self.Ft_lanes = aligned_zeros(Ft.shape, Ft.dtype)
        self.Ft_lanes[...] = Ft

    def _affine_args(self, keys, outs, div, ufin, vfin, unsafe, coeffs, usave, vsave):
        return (self.A_pad, self.bvec, self.rth, self.agcv, self.anorm, self.gcv_pad, self.gcv_norm, self.plain,
                self.c1, self.gam_bs, self.gam_alpha, self.scales, self.x0_pad, self.coef[:, 0].copy(), self.acw,
                self.use_v, self.rec_steps, self.plan.steps, keys, self.plan.batch_size, self.scode, self.epoch_steps,
                self.mom, self.xstar, self.theta_c, self.Ft_lanes, self.alpha64,
                self.quad_tol, self.limit, self.zero, outs[0], outs[1], outs[2], div, ufin, vfin, unsafe, coeffs,
                usave, vsave)

    def _affine_buffers(self, ns, want_coeffs):
        outs = [np.empty((self.L, ns, self.R)) for _ in RECORDS]     # ls_affine writes every entry
        div = np.full((self.L, ns), -1, dtype=np.int64)
        ufin = np.empty((ns, self.dim), dtype=self.wd)
        vfin = np.empty((ns, self.dim), dtype=self.wd)
        unsafe = np.zeros(ns, dtype=np.bool_)
        coeffs = np.full((ns if want_coeffs else 0, self.R, 3, 3), np.nan)
        keep = self.plan.keep_iterates and not want_coeffs
        usave = np.full((ns if keep else 0, self.R, self.dim), np.nan, dtype=self.wd)
        vsave = np.full((ns if keep else 0, self.R, self.dim), np.nan, dtype=self.wd)
        return outs, div, ufin, vfin, unsafe, coeffs, usave, vsave

    def run_affine(self, s0, s1, want_coeffs=False):
        keys = np.ascontiguousarray(self.keys_of(np.arange(s0, s1))[0])
        bufs = self._affine_buffers(s1 - s0, want_coeffs)
        call_blocks(self.timers["kernel"], self.K.ls_affine, len(keys), self._affine_args(keys, *bufs),
                    align=self.K.SEED_BLOCK)
        return bufs

    def run_coefficients(self, s0, s1):
        _, div, _, _, unsafe, coeffs, _, _ = self.run_affine(s0, s1, want_coeffs=True)
        return div, unsafe, coeffs

    # -- per trajectory ----------------------------------------------------
    def _traj_args(self, keys, a, c, outs, div, xfin, saved):
        A, bvec, rth, ridge, tfull, alpha, x0, nfw, xstar, theta_c, F = _read_only(
            self.A, self.bvec, self.rth, self.ridge, self.tfull, self.alpha, self.x0, self.nfw, self.xstar, self.theta_c,
            self.F)
        return (A, bvec, rth, ridge, tfull, alpha, self.gam, self.inv_bs,
                self.inv_n, x0, a, c, self.est.snapshot, self.plan.svrg_period, self.snap_start, nfw,
                self.rec_steps,
                self.plan.steps, keys, self.plan.batch_size, self.scode, self.epoch_steps, self.mom, xstar, theta_c,
                F, self.alpha64, self.limit, self.zero, outs[0], outs[1], outs[2], div, xfin, saved)

    def run_trajectories(self, seeds):
        """Per-trajectory kernel for the given seeds (local indices, every λ)."""
        ns = len(seeds)
        keys = np.ascontiguousarray(self.keys_of(seeds).ravel())
        a, c = self.traj_coefs(ns)
        T = len(keys)
        outs, div, xfin = self.new_records((T, self.R)), np.full(T, -1, dtype=np.int64), np.empty((T, self.dim), self.wd)
        keep = self.plan.keep_iterates
        saved = np.full((T if keep else 0, self.R, self.dim), np.nan, dtype=self.wd)
        call_blocks(self.timers["kernel"], self.K.ls_traj, T, self._traj_args(keys, a, c, outs, div, xfin, saved))
        shape = (self.L, ns)
        out = {**{k: o.reshape(shape + (self.R,)) for k, o in zip(RECORDS, outs)},
               "diverged_step": div.reshape(shape),
               "x_final": xfin.astype(np.float64).reshape(shape + (self.dim,))}
        if keep:
            out["iterates"] = saved.astype(np.float64).reshape(shape + (self.R, self.dim))
        return out

    def run_chunk(self, s0, s1):
        if not self.affine:
            return self.run_trajectories(np.arange(s0, s1)), None
        outs, div, ufin, vfin, unsafe, _, usave, vsave = self.run_affine(s0, s1)
        x = np.empty((self.L, s1 - s0, self.dim))                     # x(λ) = u + λv, built in place
        with np.errstate(over="ignore", invalid="ignore"):
            for k, a in enumerate(self.coef[:, 0]):
                if a != 0.0:
                    np.multiply(vfin, a, out=x[k])
                    x[k] += ufin
                else:
                    x[k] = ufin
        x[div >= 0] = np.nan
        out = {**dict(zip(RECORDS, outs)), "diverged_step": div, "x_final": x}
        if self.plan.keep_iterates:                                   # x_r(λ) = u_r + λv_r at every record
            u, v = usave.astype(np.float64), vsave.astype(np.float64)
            out["iterates"] = np.stack([u + a * v if a != 0.0 else u for a in self.coef[:, 0]])
        return out, unsafe


class _LayeredRunner(_Runner):
    """Softmax regression, canonical GLMs, deep linear nets and MLPs: ``_kernels_layered.layered_traj``.

    The kernel saves the iterate at each record step; the records are then computed by
    ``kdsim.kernelspec.record_values`` (softmax's f − f* by the compiled twin). The kernel's inputs
    are zero-padded to whole vectors (``_pad_inputs``); it saves the iterate in the problem's layout.
    """

    saved_iterates = True
    kernel = "layered_traj"

    def __init__(self, spec, plan, dtype, path="auto"):
        super().__init__(spec, plan, dtype)
        V.choice("path", path, ("auto", "trajectory"))
        from . import _kernels_layered as K
        self.K = K
        self._subopt_inputs = None                       # softmax records' layouts, built at the first record
        wd = dtype
        c = np.ascontiguousarray
        self.A, self.Y = c(spec.A, dtype=wd), c(spec.Y, dtype=wd)
        self.rt, self.Gt = c(spec.teacher_residuals, dtype=wd), c(spec.teacher_map, dtype=wd)
        self.ridge = c(spec.teacher_ridge, dtype=wd)
        self.dims = np.asarray(spec.dims, dtype=np.int64)
        self.offs = np.asarray(spec.offsets, dtype=np.int64)
        self.act = spec.activation_code
        self.boffs = np.asarray(spec.bias_offsets if spec.biases else (), dtype=np.int64)
        self.code = spec.link_code
        self.alpha = spec.ridge_vector().astype(wd)      # α per coordinate
        self.inv_n = wd.type(1.0 / spec.n)
        self.x0 = c(plan.x0, dtype=wd)
        self.refs = spec.record_refs(np)
        self.tau = wd.type(spec.temperature)
        self.Qt = c(spec.teacher_probs if spec.teacher_probs is not None else np.zeros((0, spec.d_out)), dtype=wd)
        # softmax's f − f* is the compiled records kernel (``suboptimality``), whose scratch is per call: a
        # block's temporaries are then its rows' canonical coordinates and their differences from x* and θ
        row_bytes = 4 * 8 * spec.dim if spec.family == "softmax" else spec.record_row_bytes
        self.row_block = KS.rows_per_block(row_bytes)
        self.fixed_bytes += KS.block_bytes(row_bytes, self.L * self.S * self.R)
        self._pad_inputs()

    def _pad_inputs(self):
        """Zero-pad the inputs to whole vectors of the kernel (``LANES``), on a cache line, so that the
        first layer's rows of weights are whole vectors. The padded weights see zero inputs and have no
        ridge, start at 0 and so stay exactly 0 (‖x‖² unchanged); ``keep`` gives the kernel the problem's
        coordinates in x.

        One layer without biases whose last input is a column of ones (an intercept) and whose other
        inputs are whole vectors (d_in = k·LANES + 1: 65 with digits' bias) gives that column's weights
        to the kernel as the layer's bias (``fold``): the products then skip a padded vector that held one
        input. The same numbers up to the order of a sum; Gt's bias column moves after the others.
        """
        n, d0 = self.A.shape
        d1, wd, lanes = int(self.dims[1]), self.wd, self.K.LANES
        self.fold = (len(self.dims) == 2 and len(self.boffs) == 0 and d0 > 1 and (d0 - 1) % lanes == 0
                     and bool(np.all(self.A[:, -1] == 1)))
        dk = d0 - 1 if self.fold else d0                # inputs the kernel reads from A
        dp = -(-dk // lanes) * lanes
        A = aligned_zeros((n, dp), wd)
        A[:, :dk] = self.A[:, :dk]
        self.fixed_bytes += (dp - dk) * n * wd.itemsize
        self.A = A
        # the same steps when dp == d0 (copies): the kernel then sees the same array types for every problem
        self.keep = np.arange(self.dim, dtype=np.int64)
        w0 = d1 * d0                                    # layer 0's weights, first in x
        row, col = np.arange(w0) // d0, np.arange(w0) % d0
        self.keep[:w0] = row * dp + col
        if self.fold:                                   # the intercept's weights: the bias, after W
            self.keep[:w0][col == dk] = d1 * dp + row[col == dk]
        shift = d1 * (dp - d0) + (d1 if self.fold else 0)
        self.keep[w0:] += shift

        def padded(v):
            out = aligned_zeros((self.dim + shift,), wd)    # on a cache line, as x is in the kernel
            out[self.keep] = v
            return out
        self.x0, self.alpha, self.ridge = padded(self.x0), padded(self.alpha), padded(self.ridge)
        Gt = np.zeros((self.Gt.shape[0], dp + (1 if self.fold else 0)), dtype=wd)
        Gt[:, :dk] = self.Gt[:, :dk]
        if self.fold:
            Gt[:, dp] = self.Gt[:, dk]
            self.boffs = np.array([d1 * dp, d1 * dp + d1], dtype=np.int64)
        else:
            self.boffs = self.boffs + shift
        self.Gt = Gt
        self.dims = self.dims.copy()
        self.dims[0] = dp
        self.offs = self.offs + np.where(np.arange(len(self.offs)) > 0, shift, 0)
        if self.fold:
            self.offs[-1] = d1 * dp                     # the weights end where the bias starts

    def _args(self, keys, a, c, saved, div, xfin):
        A, Y, rt, Gt, ridge, alpha, x0, nfw, Qt = _read_only(self.A, self.Y, self.rt, self.Gt, self.ridge, self.alpha,
                                                            self.x0, self.nfw, self.Qt)
        return (A, Y, rt, Gt, ridge, self.dims, self.offs, self.code,
                alpha, self.gam, self.inv_bs, self.inv_n, x0, a, c, self.est.uses_teacher,
                self.est.snapshot, self.plan.svrg_period, self.snap_start, nfw, self.rec_steps, self.plan.steps, keys,
                self.plan.batch_size, self.scode, self.epoch_steps, self.mom, self.tau, Qt, self.act, self.boffs,
                self.keep, self.limit, self.zero, saved, div, xfin)

    def run_trajectories(self, seeds):
        ns = len(seeds)
        keys = np.ascontiguousarray(self.keys_of(seeds).ravel())
        a, c = self.traj_coefs(ns)
        T = len(keys)
        saved = np.empty((T, self.R, self.dim))           # the kernel writes every entry
        div, xfin = np.full(T, -1, dtype=np.int64), np.empty((T, self.dim), dtype=self.wd)
        call_blocks(self.timers["kernel"], self.K.layered_traj, T, self._args(keys, a, c, saved, div, xfin))
        shape = (self.L, ns)
        div = div.reshape(shape)
        saved = saved.reshape(shape + (self.R, self.dim))
        recs = self.records(saved, div)
        out = {**recs, "diverged_step": div, "x_final": xfin.astype(np.float64).reshape(shape + (self.dim,))}
        if self.plan.keep_iterates:
            out["iterates"] = saved
        return out

    def records(self, saved, div):
        """dist2_opt, subopt, dist2_teacher from the saved iterates of the trajectories alive then."""
        if self.spec.family == "mlp":   # a forward pass of every sample per record: small products, one BLAS thread
            from threadpoolctl import threadpool_limits
            with threadpool_limits(limits=1, user_api="blas"):
                return self._records(saved, div)
        return self._records(saved, div)

    def _records(self, saved, div):
        t0, c0 = time.perf_counter(), self.timers["records_kernel"].compile_s
        sub = self.suboptimality if self.spec.family == "softmax" else None       # softmax: the compiled twin
        values = KS.saved_records(self.refs, saved, div, self.rec_steps, self.row_block, np, subopt=sub)
        out = dict(zip(RECORDS, values))
        compiled = self.timers["records_kernel"].compile_s - c0
        self.timers["records"].run_s += time.perf_counter() - t0 - compiled
        return out

    def suboptimality(self, X):
        """Softmax regression's f − f* of rows X by the compiled records kernel (``_kernels_records``)."""
        from ._kernels_records import softmax_subopt, subopt_inputs
        r = self.refs.refs
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(X.shape[0])
        masked = self.spec.l2_mask is not None            # the kernel's ridge term is α‖e‖²
        if self._subopt_inputs is None:
            self._subopt_inputs = subopt_inputs(self.spec.A, r["p_star"], r["logp_star"])
        call_blocks(self.timers["records_kernel"], softmax_subopt, X.shape[0],
                    (X, np.ascontiguousarray(r["x_star_raw"]), *self._subopt_inputs, self.spec.n, r["g_star"],
                     0.0 if masked else float(self.spec.l2), KS.H_COEF, out))
        if masked:
            out += 0.5 * KS.ridge_quadratic(X - r["x_star_raw"], self.spec.l2_weights)
        return out


def prepare(spec, plan, dtype=None, path="auto"):
    """A runner of the plan on the problem's kernel spec (see ``kdsim.engines.driver``).

    ``dtype``: "float64" or "float32" (default ``plan.dtype``); ``path``: "auto", or force
    least squares' "affine" form or the per-"trajectory" kernels.
    """
    if not available():
        raise ImportError("backend 'numba' needs numba (pip install numba)")
    cls = _LeastSquaresRunner if spec.family == "least_squares" else _LayeredRunner
    # The set-up's small BLAS calls run on one thread: OpenBLAS's workers busy-wait after a
    # multi-threaded call and would take a core from the kernel threads.
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        return cls(spec, plan, resolve_dtype(dtype, plan), path)
