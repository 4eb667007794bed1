"""The numba CPU engine (backend ``"numba"``): fused, compiled per-trajectory kernels.

Entry point ``run(problem, plan) -> dict`` returns exactly what the reference engine
returns (``dist2_opt``, ``subopt``, ``dist2_teacher`` as (L, S, R), ``diverged_step``
(L, S), ``x_final`` (L, S, dim)) and follows its semantics step for step: the same
counter-based minibatches (``kdsim.rng``'s numba twin), the same control-variate
form g = ∇f_B(x) − a·T_B + c·T (``kdsim.estimators``), the same records and the same
divergence guard (‖x‖² > 1e100 or non-finite → diverged at step t + 1, frozen, later
records NaN).

What makes it fast:

* least squares with common random numbers and a teacher-anchored estimator
  (sgd, kd, kd_loss, corrected) runs one (u, v) pair per seed and serves every λ
  from it (THEORY §5.1: x_t(λ) = u_t + λ v_t), with seeds stepped in lockstep
  blocks whose records share one triangular product with F. A record is
  evaluated from its quadratic in λ where a rounding bound keeps it within 1e-12
  relative, and directly from e = (u − x*) + λ v otherwise (no cancellation);
  ``affine_coefficients`` returns the coefficients too (a continuous λ curve per
  seed). Without common random numbers, and for SVRG, per-trajectory kernels run;
  so does any seed whose u or v left the range while some λ of it had not (the
  affine form would carry no digits there);
* per-sample teacher quantities that do not depend on x (least squares: the
  teacher residual a_iᵀθ − b_i) are computed once; a minibatch gradient is one
  product with a combined residual;
* f(x) − f* for least squares is ½(‖F e‖² + α‖e‖²) with F = R/√n from a QR of A
  (½ eᵀ(H + αI)e without cancellation), O(d²/2) per record; F is computed once per
  problem (``LeastSquares.gram_factor``), not per call; softmax's
  cancellation-free f(x) − f* is compiled too (``_kernels_records``);
* the set-up's BLAS calls run on one thread, so no spinning OpenBLAS worker
  competes with the kernel threads.

Precision: ``dtype`` "float64" (default) or "float32" for the iterate arithmetic;
records are always evaluated in float64 from the iterate. In float32 the guard's
limit is the largest float32 (1e100 does not exist there), so a float32 trajectory
is flagged when ‖x‖² overflows.

Memory: seeds run in chunks (``kdsim.engines.plan``) with their global stream
numbers, so a chunked run equals an unchunked one bit for bit; ``run_reduced``
keeps only a running mean and variance per (λ, record).

Timing: ``last_timing()`` separates JIT compilation (or loading from numba's
cache) from the run itself; ``warmup()`` compiles ahead of time.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _validate as V
from ..problems.deep_linear import DeepLinear
from ..problems.glm import LogisticRegression, PoissonRegression
from ..problems.least_squares import LeastSquares
from ..problems.softmax import SoftmaxRegression
from ..rng import splitmix64
from . import plan as memplan

#: squared norm beyond which an iterate counts as diverged (as in the reference engine)
DIVERGENCE_LIMIT = 1e100
#: working precisions of the iterate arithmetic
DTYPES = ("float64", "float32")
#: the record arrays every engine returns
RECORDS = ("dist2_opt", "subopt", "dist2_teacher")

_LAST_TIMING = {}


def available():
    """True when numba imports (the engine is usable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_dtype(dtype, plan=None):
    """The working dtype: ``dtype`` if given, else ``plan.dtype`` if the plan has one, else float64."""
    if dtype is None:
        dtype = getattr(plan, "dtype", None) or "float64"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    return np.dtype(V.choice("dtype", name, DTYPES))


def guard_limit(dtype):
    """The divergence limit in a working dtype: 1e100, or the dtype's largest value if smaller."""
    dtype = np.dtype(dtype)
    return dtype.type(min(DIVERGENCE_LIMIT, float(np.finfo(dtype).max)))


def stream_keys(seed, streams):
    """Per-stream keys splitmix64(splitmix64(seed) ^ stream) of ``kdsim.rng.step_keys``."""
    return splitmix64(splitmix64(np.uint64(seed)) ^ np.asarray(streams, dtype=np.uint64))


def last_timing():
    """Timing of the latest ``run``/``run_reduced``/``affine_coefficients`` call.

    Keys: ``compile_s`` (JIT compilation or cache loading, measured by calling each
    kernel on zero trajectories first), ``run_s`` (kernel time), ``records_s`` (time
    of the compiled records evaluated after the kernel: softmax suboptimality),
    ``total_s`` (wall time of the call, including setup and every record), ``kernel``,
    ``chunks``, ``chunk_seeds``, ``trajectory_steps`` (λ × seeds × steps) and
    ``throughput`` (trajectory-steps per second of ``run_s``).
    """
    return dict(_LAST_TIMING)


# --------------------------------------------------------------------- families
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


class _Timer:
    """Calls a kernel ``kernel(lo, hi, *args)`` over trajectory blocks on worker threads.

    Kernels are serial, ``nogil`` functions over a range of trajectories; the
    engine splits the range into blocks (several per thread, for balance when some
    trajectories stop early) and runs them on a thread pool. Each block writes only
    its own rows. A first call on the empty range (lo = hi = 0) compiles the kernel
    or loads it from numba's cache, and is timed as ``compile_s``.
    """

    def __init__(self):
        self.compile_s = 0.0
        self.run_s = 0.0

    def call(self, kernel, n_items, args, align=1):
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
        self.compile_s += t1 - t0
        self.run_s += t2 - t1


class _Runner:
    """Common set-up of a family: sizes, coefficients, stream keys, dtype scalars."""

    saved_iterates = False

    def __init__(self, problem, plan, dtype):
        self.problem, self.plan = problem, plan
        self.wd = dtype
        self.L, self.S, self.R = len(plan.lams), plan.n_seeds, len(plan.record_steps)
        self.dim = problem.dim
        self.est = plan.estimator
        self.coef = np.array([self.est.coefficients(lam) for lam in plan.lams], dtype=np.float64)
        self.keys = stream_keys(plan.seed, plan.streams)                 # (L, S) uint64
        self.crn = bool(np.all(plan.streams == plan.streams[0]))
        self.rec_steps = np.ascontiguousarray(plan.record_steps, dtype=np.int64)
        self.limit = guard_limit(dtype)
        self.zero = dtype.type(0.0)
        self.gam = dtype.type(plan.step)
        self.timer = _Timer()
        self.records_timer = _Timer()          # records evaluated after the kernel (layered families)
        self.kernel_name = ""

    @property
    def bytes_per_seed(self):
        return memplan.chunk_bytes(self.L, self.R, self.dim, self.wd.itemsize,
                                   saved_iterates=self.saved_iterates)

    def traj_coefs(self, n_seeds):
        """λ-major per-trajectory (a, c) in the working dtype (a λ beyond float32 becomes inf)."""
        with np.errstate(over="ignore"):
            a = np.repeat(self.coef[:, 0], n_seeds).astype(self.wd)
            c = np.repeat(self.coef[:, 1], n_seeds).astype(self.wd)
        return a, c

    def new_records(self, shape):
        return [np.full(shape, np.nan) for _ in RECORDS]


class _LeastSquaresRunner(_Runner):
    """Least squares: the affine (u, v) kernel under common random numbers, else per trajectory."""

    def __init__(self, problem, plan, dtype):
        super().__init__(problem, plan, dtype)
        from . import _kernels_ls as K
        self.K = K
        p, est, wd = problem, self.est, dtype
        A64 = p.A
        self.A = np.ascontiguousarray(A64, dtype=wd)
        self.bvec = np.ascontiguousarray(p.b, dtype=wd)
        if est.uses_teacher:
            terms = p.teacher_terms(plan.theta, est.teacher_term)
            rth = A64 @ plan.theta - p.b                       # teacher residuals, once
            ridge, tfull = terms.ridge, terms.full
        else:
            rth, ridge, tfull = np.zeros(p.n), np.zeros(p.dim), np.zeros(p.dim)
        self.rth = rth.astype(wd)
        self.ridge = np.ascontiguousarray(ridge, dtype=wd)
        self.tfull = np.ascontiguousarray(tfull, dtype=wd)
        self.alpha = wd.type(p.l2)
        self.alpha64 = float(p.l2)
        self.inv_b = wd.type(1.0 / plan.batch_size)
        self.inv_n = wd.type(1.0 / p.n)
        self.x0 = np.ascontiguousarray(plan.x0, dtype=wd)
        self.xstar = np.ascontiguousarray(p.canonical(p.solution()), dtype=np.float64)
        self.theta_c = np.ascontiguousarray(p.canonical_teacher(plan.theta), dtype=np.float64)
        self.F = np.array(p.gram_factor())                  # a writeable copy: one kernel signature
        self.affine = self.crn and not est.snapshot
        if self.affine:
            self._affine_setup(A64, ridge, tfull)
        with np.errstate(over="ignore"):
            self.acw = self.coef[:, 0].astype(wd)
        self.use_v = est.uses_teacher
        self.kernel_name = "ls_affine" if self.affine else "ls_traj"

    # -- affine ------------------------------------------------------------
    def _affine_setup(self, A64, ridge, tfull):
        """Inputs of ``ls_affine``: columns zero-padded to whole SIMD vectors, γ folded in."""
        wd, n, d = self.wd, self.problem.n, self.dim
        lanes = 32 // wd.itemsize                          # one AVX register
        dp = -(-d // lanes) * lanes
        gam = float(self.plan.step)
        shift = np.asarray(ridge, dtype=np.float64) - (np.asarray(tfull, np.float64) if self.est.corrected
                                                       else 0.0)
        self.A_pad = np.zeros((n, dp), dtype=wd)
        self.A_pad[:, :d] = self.A
        self.x0_pad = np.zeros(dp, dtype=wd)
        self.x0_pad[:d] = self.x0
        self.gcv_pad = np.zeros(dp, dtype=wd)
        self.gcv_pad[:d] = gam * shift
        self.gcv_norm = float(np.linalg.norm(gam * shift))
        self.agcv = (A64 @ (gam * shift)).astype(wd)          # a_iᵀ(γc), for steps taken in pairs
        self.plain = bool(self.problem.l2 == 0 and not np.any(self.gcv_pad != 0))
        self.c1 = wd.type(1.0 - gam * float(self.problem.l2))
        self.gam_b = wd.type(gam / self.plan.batch_size)
        self.anorm = np.linalg.norm(A64, axis=1)
        self.Ft_lanes = self.K.lane_factor(self.F)
        self.quad_tol = 2.0 * (max(d, self.F.shape[0]) + 3) * np.finfo(np.float64).eps / self.K.QUAD_RECORD_RTOL

    def _affine_args(self, keys, outs, div, ufin, vfin, unsafe, coeffs):
        return (self.A_pad, self.bvec, self.rth, self.agcv, self.anorm, self.gcv_pad, self.gcv_norm, self.plain,
                self.c1, self.gam_b, self.x0_pad, self.coef[:, 0].copy(), self.acw, self.use_v, self.rec_steps,
                self.plan.steps, keys, self.plan.batch_size, self.xstar, self.theta_c, self.Ft_lanes, self.alpha64,
                self.quad_tol, self.limit, self.zero, outs[0], outs[1], outs[2], div, ufin, vfin, unsafe, coeffs)

    def _affine_buffers(self, ns, want_coeffs):
        outs = [np.empty((self.L, ns, self.R)) for _ in RECORDS]     # ls_affine writes every entry
        div = np.full((self.L, ns), -1, dtype=np.int64)
        ufin = np.empty((ns, self.dim), dtype=self.wd)
        vfin = np.empty((ns, self.dim), dtype=self.wd)
        unsafe = np.zeros(ns, dtype=np.bool_)
        coeffs = np.full((ns if want_coeffs else 0, self.R, 3, 3), np.nan)
        return outs, div, ufin, vfin, unsafe, coeffs

    def run_affine(self, s0, s1, want_coeffs=False):
        keys = np.ascontiguousarray(self.keys[0, s0:s1])
        bufs = self._affine_buffers(s1 - s0, want_coeffs)
        self.timer.call(self.K.ls_affine, len(keys), self._affine_args(keys, *bufs), align=self.K.SEED_BLOCK)
        return bufs

    # -- per trajectory ----------------------------------------------------
    def _traj_args(self, keys, a, c, outs, div, xfin):
        return (self.A, self.bvec, self.rth, self.ridge, self.tfull, self.alpha, self.gam, self.inv_b,
                self.inv_n, self.x0, a, c, self.est.snapshot, self.plan.svrg_period, self.rec_steps,
                self.plan.steps, keys, self.plan.batch_size, self.xstar, self.theta_c, self.F,
                self.alpha64, self.limit, self.zero, outs[0], outs[1], outs[2], div, xfin)

    def _traj_buffers(self, T):
        return (self.new_records((T, self.R)), np.full(T, -1, dtype=np.int64),
                np.empty((T, self.dim), dtype=self.wd))

    def run_traj(self, seeds):
        """Per-trajectory kernel for the given global seed indices (all λ)."""
        ns = len(seeds)
        keys = np.ascontiguousarray(self.keys[:, seeds].ravel())
        a, c = self.traj_coefs(ns)
        outs, div, xfin = self._traj_buffers(len(keys))
        self.timer.call(self.K.ls_traj, len(keys), self._traj_args(keys, a, c, outs, div, xfin))
        shape = (self.L, ns)
        return {**{k: o.reshape(shape + (self.R,)) for k, o in zip(RECORDS, outs)},
                "diverged_step": div.reshape(shape),
                "x_final": xfin.astype(np.float64).reshape(shape + (self.dim,))}

    def run_chunk(self, s0, s1):
        if not self.affine:
            return self.run_traj(np.arange(s0, s1))
        outs, div, ufin, vfin, unsafe, _ = self.run_affine(s0, s1)
        res = self._affine_result(outs, div, ufin, vfin)
        if unsafe.any():
            sel = np.flatnonzero(unsafe)
            redo = self.run_traj(s0 + sel)
            for k in res:
                res[k][:, sel] = redo[k]
        return res

    def _affine_result(self, outs, div, ufin, vfin):
        a = self.coef[:, 0][:, None, None]
        u = ufin.astype(np.float64)[None]
        v = vfin.astype(np.float64)[None]
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.where(a == 0.0, u, u + a * v)
        x = np.where((div >= 0)[:, :, None], np.nan, x)
        return {**dict(zip(RECORDS, outs)), "diverged_step": div, "x_final": x}


class _LayeredRunner(_Runner):
    """Softmax regression, canonical GLMs and deep linear nets: ``_kernels_layered.layered_traj``.

    The kernel saves the iterate at each record step; the records are then computed
    with the problem's own ``canonical`` and ``suboptimality`` (numpy), exactly as
    the reference engine computes them. Each subclass provides two static methods:
    ``structure(p)`` -> (inputs, targets (n, d_out), layer widths, layer offsets,
    residual code of ``_kernels_layered``) and ``teacher(p, theta, term)`` ->
    (teacher residuals (n, d_out), their mean map (d_out, d_in), ridge (dim,)).
    """

    saved_iterates = True
    kernel_name = "layered_traj"

    def __init__(self, problem, plan, dtype):
        super().__init__(problem, plan, dtype)
        from . import _kernels_layered as K
        self.K = K
        p, est, wd = problem, self.est, dtype
        A, Y, dims, offs, code = self.structure(p)
        n, d_out, d_in = p.n, dims[-1], dims[0]
        if est.uses_teacher:
            rt, Gt, ridge = self.teacher(p, plan.theta, est.teacher_term)
        else:
            rt, Gt, ridge = np.zeros((n, d_out)), np.zeros((d_out, d_in)), np.zeros(p.dim)
        c = np.ascontiguousarray
        self.A, self.Y = c(A, dtype=wd), c(Y, dtype=wd)
        self.rt, self.Gt, self.ridge = c(rt, dtype=wd), c(Gt, dtype=wd), c(ridge, dtype=wd)
        self.dims = np.asarray(dims, dtype=np.int64)
        self.offs = np.asarray(offs, dtype=np.int64)
        self.code = int(code)
        self.alpha = wd.type(p.l2)
        self.inv_b = wd.type(1.0 / plan.batch_size)
        self.inv_n = wd.type(1.0 / n)
        self.x0 = c(plan.x0, dtype=wd)
        self.xstar = p.canonical(p.solution())
        self.theta_c = p.canonical_teacher(plan.theta)
        self.kernel_name = "layered_traj"

    # -- kernel --------------------------------------------------------------
    def _args(self, keys, a, c, saved, div, xfin):
        return (self.A, self.Y, self.rt, self.Gt, self.ridge, self.dims, self.offs, self.code,
                self.alpha, self.gam, self.inv_b, self.inv_n, self.x0, a, c, self.est.uses_teacher,
                self.est.snapshot, self.plan.svrg_period, self.rec_steps, self.plan.steps, keys,
                self.plan.batch_size, self.limit, self.zero, saved, div, xfin)

    def _buffers(self, T):
        return (np.full((T, self.R, self.dim), np.nan), np.full(T, -1, dtype=np.int64),
                np.empty((T, self.dim), dtype=self.wd))

    def run_chunk(self, s0, s1):
        ns = s1 - s0
        keys = np.ascontiguousarray(self.keys[:, s0:s1].ravel())
        a, c = self.traj_coefs(ns)
        saved, div, xfin = self._buffers(len(keys))
        self.timer.call(self.K.layered_traj, len(keys), self._args(keys, a, c, saved, div, xfin))
        shape = (self.L, ns)
        div = div.reshape(shape)
        recs = self.records(saved.reshape(shape + (self.R, self.dim)), div)
        return {**recs, "diverged_step": div,
                "x_final": xfin.astype(np.float64).reshape(shape + (self.dim,))}

    def records(self, saved, div):
        """dist2_opt, subopt, dist2_teacher from the saved iterates (problem's numpy code)."""
        p = self.problem
        valid = (div[:, :, None] < 0) | (self.rec_steps[None, None, :] < div[:, :, None])
        out = {name: np.full(valid.shape, np.nan) for name in RECORDS}
        rows = saved.reshape(-1, self.dim)[valid.ravel()]
        vals = {name: np.empty(len(rows)) for name in RECORDS}
        block = max(1, (1 << 23) // max(1, p.n * int(self.dims[-1]) + self.dim))
        for b0 in range(0, len(rows), block):
            X = rows[b0:b0 + block]
            C = p.canonical(X)
            vals["dist2_opt"][b0:b0 + block] = np.sum((C - self.xstar) ** 2, axis=1)
            vals["dist2_teacher"][b0:b0 + block] = np.sum((C - self.theta_c) ** 2, axis=1)
            vals["subopt"][b0:b0 + block] = self.suboptimality(X)
        for name in RECORDS:
            out[name][valid] = vals[name]
        return out

    def suboptimality(self, X):
        """f(x) − f* per row of X (the problem's own numpy code unless a family compiles it)."""
        return self.problem.suboptimality(X)


class _SoftmaxRunner(_LayeredRunner):
    def suboptimality(self, X):
        """f(x) − f* per row: the compiled twin of ``SoftmaxRegression.suboptimality``."""
        from ..problems.softmax import _H_COEF
        from ._kernels_records import softmax_subopt
        p = self.problem
        P, logP, g = p._at_optimum
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(X.shape[0])
        self.records_timer.call(softmax_subopt, X.shape[0],
                                (X, np.ascontiguousarray(p.solution()), np.ascontiguousarray(p.A, np.float64),
                                 P, logP, g, float(p.l2), _H_COEF, out))
        return out

    @staticmethod
    def structure(p):
        return p.A, np.eye(p.n_classes)[p.y], (p.n_features, p.n_classes), (0, p.dim), 1

    @staticmethod
    def teacher(p, theta, term):
        from ..problems.softmax import _softmax
        rt = _softmax(p.A @ p.weights(theta).T) - np.eye(p.n_classes)[p.y]
        return rt, rt.T @ p.A / p.n, p.teacher_terms(theta, term).ridge


class _GLMRunner(_LayeredRunner):
    @staticmethod
    def structure(p):
        from ..problems.glm import LogisticRegression
        code = 2 if isinstance(p, LogisticRegression) else 3
        return p.A, p.y[:, None], (p.dim, 1), (0, p.dim), code

    @staticmethod
    def teacher(p, theta, term):
        rt = (p.dpsi(p.A @ theta) - p.y)[:, None]
        return rt, rt.T @ p.A / p.n, p.teacher_terms(theta, term).ridge


class _DeepLinearRunner(_LayeredRunner):
    @staticmethod
    def structure(p):
        targets = p.Y if p.loss_type == "squared" else np.eye(p.n_classes)[p.Y]
        return p.A, targets, p.dims, p._offsets, 0 if p.loss_type == "squared" else 1

    @staticmethod
    def teacher(p, theta, term):
        terms = p.teacher_terms(theta, term)
        return terms.residuals, terms.full_map, terms.ridge


#: problem class -> runner; exact classes only (a subclass may change the math)
_FAMILIES = {LeastSquares: _LeastSquaresRunner, SoftmaxRegression: _SoftmaxRunner,
             LogisticRegression: _GLMRunner, PoissonRegression: _GLMRunner, DeepLinear: _DeepLinearRunner}


def supports(problem):
    """True when this engine has kernels for the problem's exact class."""
    return type(problem) in _FAMILIES


def _runner(problem, plan, dtype):
    if not available():
        raise ImportError("backend 'numba' needs numba (pip install numba)")
    cls = _FAMILIES.get(type(problem))
    if cls is None:
        names = ", ".join(sorted(c.__name__ for c in _FAMILIES))
        raise NotImplementedError(f"backend 'numba' has no kernels for {type(problem).__name__} "
                                  f"(it has: {names}); use backend='numpy'")
    # The set-up's small BLAS calls (QR of A, teacher terms) run on one thread: OpenBLAS's
    # worker threads busy-wait for a while after a multi-threaded call, and on a machine
    # with as many cores as kernel threads they would take a core from the kernels
    # (measured: the first run after set-up 1.4x slower with 2 threads).
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        return cls(problem, plan, resolve_dtype(dtype, plan))


def _finish_timing(runner, t_start, cplan, extra=None):
    steps = runner.L * runner.S * runner.plan.steps
    run_s = runner.timer.run_s
    _LAST_TIMING.clear()
    _LAST_TIMING.update({
        "compile_s": runner.timer.compile_s + runner.records_timer.compile_s, "run_s": run_s,
        "total_s": time.perf_counter() - t_start, "kernel": runner.kernel_name,
        "dtype": runner.wd.name, "chunks": len(cplan.chunks), "chunk_seeds": cplan.chunk_seeds,
        "trajectory_steps": steps, "throughput": steps / run_s if run_s > 0 else float("inf"),
        "records_s": runner.records_timer.run_s,
        **(extra or {}),
    })


# ------------------------------------------------------------------ public API
def run(problem, plan, *, dtype=None, memory_budget=None, chunk_seeds=None):
    """Run a validated plan (see ``kdsim.simulate``); same dict as ``reference.run``.

    ``dtype``: "float64" or "float32" (default ``plan.dtype`` if present, else float64).
    ``memory_budget``: bytes the run may use (default half the available memory);
    ``chunk_seeds``: force the number of seeds per chunk. Chunking never changes
    the numbers.
    """
    t_start = time.perf_counter()
    runner = _runner(problem, plan, dtype)
    L, S, R, dim = runner.L, runner.S, runner.R, runner.dim
    fixed = L * S * (3 * R * 8 + 8 + dim * 8)
    cplan = memplan.plan_chunks(S, runner.bytes_per_seed, fixed_bytes=fixed, budget=memory_budget,
                                chunk_seeds=chunk_seeds)
    if len(cplan.chunks) == 1:                     # one chunk: its arrays are the result
        out = runner.run_chunk(0, S)
    else:
        out = {name: np.full((L, S, R), np.nan) for name in RECORDS}
        out["diverged_step"] = np.full((L, S), -1, dtype=np.int64)
        out["x_final"] = np.full((L, S, dim), np.nan)
        for s0, s1 in cplan.chunks:
            res = runner.run_chunk(s0, s1)
            for k, v in res.items():
                out[k][:, s0:s1] = v
    _finish_timing(runner, t_start, cplan)
    return out


def run_reduced(problem, plan, *, dtype=None, memory_budget=None, chunk_seeds=None):
    """Run a plan keeping only per-(λ, record) moments over the non-diverged seeds.

    Returns ``{"mean": {record: (L, R)}, "var": {record: (L, R)}, "count": (L,),
    "diverged_step": (L, S)}``: the mean equals ``SimResult.mean`` of the full run
    (seeds that diverged at any step are left out, as there), ``var`` has ddof = 1
    (NaN with fewer than two seeds), ``count`` is the number of seeds that entered
    each λ. Memory per chunk is bounded by ``memory_budget``; the full (λ, seed,
    record) arrays are never allocated.
    """
    t_start = time.perf_counter()
    runner = _runner(problem, plan, dtype)
    L, S, R = runner.L, runner.S, runner.R
    cplan = memplan.plan_chunks(S, runner.bytes_per_seed, fixed_bytes=L * S * 8,
                                budget=memory_budget, chunk_seeds=chunk_seeds)
    moments = {name: memplan.RunningMoments(L, R) for name in RECORDS}
    div = np.full((L, S), -1, dtype=np.int64)
    for s0, s1 in cplan.chunks:
        res = runner.run_chunk(s0, s1)
        keep = res["diverged_step"] < 0
        div[:, s0:s1] = res["diverged_step"]
        for name in RECORDS:
            moments[name].add(res[name], keep)
    mean, var = {}, {}
    count = None
    for name in RECORDS:
        mean[name], var[name], count = moments[name].result()
    _finish_timing(runner, t_start, cplan)
    return {"mean": mean, "var": var, "count": count, "diverged_step": div}


def affine_coefficients(problem, plan, *, dtype=None, memory_budget=None, chunk_seeds=None):
    """Per-seed quadratics in λ of the records (least squares, common random numbers).

    For estimators sgd, kd, kd_loss and corrected, x_t(λ) = u_t + λ v_t (THEORY §5.1)
    and each record is c0 + c1·λ + c2·λ² per seed and record step. Returns
    ``{record: (S, R, 3)}`` plus ``diverged_step`` (L, S) for the plan's own λ grid.
    Coefficients are NaN after every λ of the plan diverged for that seed, and for
    seeds whose u or v left the finite range while a λ of the plan had not.
    Evaluating them far from the plan's λ can lose digits to cancellation; the
    records of ``run`` are evaluated without it.
    """
    t_start = time.perf_counter()
    runner = _runner(problem, plan, dtype)
    if not isinstance(runner, _LeastSquaresRunner) or not runner.affine:
        raise ValueError("affine_coefficients needs least squares, common random numbers and an "
                         f"estimator among sgd, kd, kd_loss, corrected; got {problem.name}, "
                         f"estimator {plan.estimator.name!r}, common_random_numbers={runner.crn}")
    L, S, R = runner.L, runner.S, runner.R
    per_seed = runner.bytes_per_seed + 9 * R * 8
    cplan = memplan.plan_chunks(S, per_seed, fixed_bytes=S * 9 * R * 8, budget=memory_budget,
                                chunk_seeds=chunk_seeds)
    coeffs = np.full((S, R, 3, 3), np.nan)
    div = np.full((L, S), -1, dtype=np.int64)
    for s0, s1 in cplan.chunks:
        _, d, _, _, unsafe, c = runner.run_affine(s0, s1, want_coeffs=True)
        c[unsafe] = np.nan
        coeffs[s0:s1] = c
        div[:, s0:s1] = d
    _finish_timing(runner, t_start, cplan)
    return {**{name: coeffs[:, :, q, :] for q, name in enumerate(RECORDS)}, "diverged_step": div}


def warmup(problem_kind="least_squares", dtype="float64"):
    """Compile (or load from numba's cache) the kernels of one problem family; return seconds.

    ``problem_kind``: "least_squares", or a family whose problem module exists
    ("softmax", "logistic", "poisson", "deep_linear").
    """
    from ..simulate import make_plan
    problem = _tiny_problem(problem_kind)
    t0 = time.perf_counter()
    theta = problem.default_x0() + 0.1
    for est in ("kd", "svrg"):
        plan = make_plan(problem, theta, [0.0, 0.5], 0.01, 2, 2, batch_size=1, estimator=est)
        run(problem, plan, dtype=dtype)
    return time.perf_counter() - t0


def _tiny_problem(kind):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 3))
    if kind == "least_squares":
        return LeastSquares(A, rng.standard_normal(6))
    if kind == "softmax":
        from ..problems.softmax import SoftmaxRegression
        return SoftmaxRegression(A, np.arange(6) % 3, 3, l2=0.1)
    if kind == "logistic":
        from ..problems.glm import LogisticRegression
        return LogisticRegression(A, (np.arange(6) % 2).astype(float), l2=0.1)
    if kind == "poisson":
        from ..problems.glm import PoissonRegression
        return PoissonRegression(0.3 * A, (np.arange(6) % 3).astype(float), l2=0.1)
    if kind == "deep_linear":
        from ..problems.deep_linear import DeepLinear
        return DeepLinear(A, rng.standard_normal((6, 2)), hidden=(2,), l2=0.1)
    raise ValueError(f"unknown problem_kind {kind!r}; valid values: 'least_squares', 'softmax', "
                     "'logistic', 'poisson', 'deep_linear'")
