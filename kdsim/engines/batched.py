"""The array-module engine: every trajectory of a chunk advanced at once with array operations.

``run(problem, plan, xp=numpy, dtype=float64)`` is written against an array module
``xp`` (numpy or CuPy; ``kdsim.engines.cupy_gpu`` passes CuPy), so the GPU path's
logic runs, and is tested, on the CPU with numpy. It returns exactly what
``reference.run`` returns (``dist2_opt``, ``subopt``, ``dist2_teacher`` as (L, S, R),
``diverged_step`` (L, S), ``x_final`` (L, S, dim), host numpy float64 arrays) and follows
its semantics step for step:

* the same counter-based minibatches: ``minibatch_indices`` below is an array-module
  twin of ``kdsim.rng.minibatch_indices`` (SplitMix64 keys, multiply-shift, Floyd's
  algorithm; uint64 arithmetic wraps identically in numpy and CuPy), tested equal;
* the same control-variate direction g = ∇f_B(x) − a·T_B + c·T (``kdsim.estimators``),
  evaluated as one product with a combined residual. Every supported problem has
  per-sample gradients J(x)ᵀ(r_i a_iᵀ) with an output-space residual r_i = link(M a_i) − y_i
  of an output map M (least squares, GLMs: M = xᵀ, link identity / σ / exp; softmax:
  M = X, link softmax; deep linear: M = W_L⋯W_1, J(x)ᵀ the pull-back through the layers,
  identity for the others). T_B's residuals do not depend on x (the teacher's, computed
  once on the host) or are the SVRG snapshot's, so
  g = J(x)ᵀ[(1/b) Σ_{i∈B} (r_i(x) − a·r^θ_i) a_iᵀ + c·∇g(Θ̄)] + αx − a·ridge + c·ridge
  (deep linear; the other families fold c·T into one constant), and for SVRG
  g = J(x)ᵀ(…r_i(x)…) − λ J(y)ᵀ(…r_i(y)…) + αx − λαy + λ∇f(y);
* the same divergence guard: after a step, not (‖x‖² <= limit) (NaN and inf included)
  marks the trajectory diverged at step t + 1 and freezes it at NaN; a non-finite record
  marks it diverged at the record step. ``limit`` is 1e100 in float64 and the largest
  float32 in float32, as in the numba engine;
* the same records, computed on the device in float64 from the iterate: ‖C − x*‖²,
  ‖C − θ‖² in the problem's canonical coordinates (softmax: class-centred weights; deep
  linear: the end-to-end map) and the cancellation-free f − f* of the problems'
  ``suboptimality`` (least squares ½(‖F e‖² + α‖e‖²) with F = R/√n from a QR of A;
  softmax and the GLMs: device versions built on x* — the log1p / expm1(t) − t forms and
  the extended-precision ∇f(x*) the problem caches; deep linear: its end-to-end
  expansion (squared loss) or f − f* (softmax loss), as ``DeepLinear.suboptimality``).
  Records are stored record-major ([record][λ][seed]) on the device. Only the record
  arrays, ``diverged_step`` and ``x_final`` come back to the host, once per chunk.

Least squares under common random numbers (one index stream for every λ) with the
estimators sgd, kd, kd_loss, corrected runs THEORY §5.1's affine form: one pair (u, v)
per seed, x_t(λ) = u_t + λ v_t, with

    u_{t+1} = u_t − γ((H_B + αI) u_t − q_B),                         u_0 = x_0
    v_{t+1} = v_t − γ((H_B + αI) v_t − (1/b)Σ_{i∈B} a_i r^θ_i − κ),  v_0 = 0

(q_B = (1/b)Σ a_i b_i, r^θ_i = a_iᵀθ − b_i, κ = ridge for kd and kd_loss (αθ, resp. 0),
κ = ridge − T = −(1/n)Σ_i a_i r^θ_i for corrected; sgd has v ≡ 0), which reproduces
x_{t+1} = x_t − γ(∇f_B(x_t) − λT_B + c T) exactly in exact arithmetic. Divergence is
judged per λ after every step from ‖x_t(λ)‖² = ‖u‖² + 2λ⟨u, v⟩ + λ²‖v‖² (three dot
products per seed). Records are evaluated per λ from the vectors e = (u − x*) + λv
(and F e = F(u − x*) + λ F v), not from the quadratic's three coefficients, which lose
every digit to cancellation where x_t(λ) → x* (THEORY §8 claim 2: θ = x*, λ = 1);
``affine_coefficients`` returns the coefficients as well (a continuous λ curve per
seed). A seed on which an alive λ's ‖u‖² or λ²‖v‖² leaves the range (or its squared
norm falls too close to the limit to be judged from the three dot products) is
"unsafe": it is rerun per trajectory, so divergence is decided exactly as in the
reference. Every other case (no common random numbers, SVRG, the other families) runs
per trajectory: X of shape (L, S, dim), minibatch rows gathered with A[idx] and
batched products; with common random numbers one gather per seed serves every λ.

Memory: seeds run in chunks sized from ``max_bytes`` (``kdsim.engines.plan``), each
trajectory keeping its global stream number, so chunking never changes the numbers;
full-data terms (softmax, GLM and deep-softmax f − f*, the SVRG snapshot's full
gradient) are evaluated in row blocks within a quarter of the budget.
"""
from __future__ import annotations

import time

import numpy as np

from .. import _validate as V
from ..problems.deep_linear import DeepLinear
from ..problems.glm import LogisticRegression, PoissonRegression
from ..problems.least_squares import LeastSquares
from ..problems.softmax import _H_COEF, SoftmaxRegression
from . import plan as memplan

#: squared norm beyond which an iterate counts as diverged (as in the reference engine)
DIVERGENCE_LIMIT = 1e100
#: working precisions of the iterate arithmetic
DTYPES = ("float64", "float32")
#: the record arrays every engine returns
RECORDS = ("dist2_opt", "subopt", "dist2_teacher")
#: how least squares may run: "auto" (affine form where it applies), "affine", "trajectory"
PATHS = ("auto", "affine", "trajectory")
#: Floyd's membership test: compare with earlier picks up to this batch size, else an (T, n) scratch
FLOYD_COMPARE_MAX = 32
#: the affine guard trusts q(λ) > limit only when |q − limit| exceeds this fraction of its scale
AFFINE_DECISIVE = 1e-8

_FAMILIES = {LeastSquares: "least_squares", SoftmaxRegression: "softmax",
             LogisticRegression: "logistic", PoissonRegression: "poisson", DeepLinear: "deep_linear"}
_LAST_TIMING = {}

# ------------------------------------------------------------------ index stream
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


def splitmix64(z, xp=np):
    """SplitMix64 finaliser of a uint64 array of module ``xp`` (wrapping arithmetic).

    Equals ``kdsim.rng.splitmix64``; every operand is a uint64 array or numpy uint64
    scalar, so numpy and CuPy compute the same integers.
    """
    z = xp.asarray(z, dtype=xp.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def stream_keys(seed, streams, xp=np):
    """Per-stream keys splitmix64(splitmix64(seed) ^ stream) of ``kdsim.rng.step_keys``."""
    seed_key = splitmix64(np.array([seed], dtype=np.uint64))[0]
    return splitmix64(xp.asarray(streams, dtype=xp.uint64) ^ seed_key, xp)


def minibatch_from_keys(skeys, step, n, b, xp=np, taken=None):
    """Minibatch indices (T, b) of one step for streams with keys ``skeys`` (T,).

    Floyd's algorithm exactly as ``kdsim.rng.minibatch_indices``: draw j uses
    h = splitmix64(key + (j + 1)·GOLDEN), r = ((h >> 32)·(c + 1)) >> 32 with
    c = n − b + j; the pick is c when r was picked before, else r. Membership is a
    comparison with the earlier picks (O(b²), no scratch) or, when ``taken`` — a
    boolean (T, n) array, all False — is given, a lookup there (reset before return).
    b = n gives 0 .. n−1 in order.
    """
    T = skeys.shape[0]
    if b == n:
        return xp.broadcast_to(xp.arange(n, dtype=xp.int64), (T, n))
    keys = splitmix64(skeys ^ np.uint64(step), xp)
    out = xp.empty((T, b), dtype=xp.int64)
    rows = xp.arange(T) if taken is not None else None
    with np.errstate(over="ignore"):
        for j in range(b):
            c = n - b + j
            h = splitmix64(keys + np.uint64(((j + 1) * _GOLDEN) & _MASK64), xp)
            r = (((h >> _S32) * np.uint64(c + 1)) >> _S32).astype(xp.int64)
            if j == 0:
                pick = r
            elif taken is not None:
                pick = xp.where(taken[rows, r], c, r)
            else:
                pick = xp.where((out[:, :j] == r[:, None]).any(axis=1), c, r)
            if taken is not None:
                taken[rows, pick] = True
            out[:, j] = pick
    if taken is not None:
        taken[rows[:, None], out] = False
    return out


def minibatch_indices(seed, streams, step, n, batch_size, xp=np):
    """Array-module twin of ``kdsim.rng.minibatch_indices`` (same integers), shape (T, b)."""
    n = V.int_in_range("n", n, 1)
    b = V.int_in_range("batch_size", batch_size, 1, n)
    skeys = stream_keys(seed, xp.atleast_1d(xp.asarray(streams, dtype=xp.uint64)), xp)
    taken = None
    if FLOYD_COMPARE_MAX < b < n:
        taken = xp.zeros((skeys.shape[0], n), dtype=bool)
    return xp.ascontiguousarray(minibatch_from_keys(skeys, step, n, b, xp, taken))


# ------------------------------------------------------------------ helpers
def supports(problem):
    """True for the problem classes this engine runs (least squares, softmax, logistic, Poisson, deep linear)."""
    return type(problem) in _FAMILIES


def resolve_dtype(dtype, plan=None):
    """The working dtype: ``dtype`` if given, else ``plan.dtype`` if the plan has one, else float64."""
    if dtype is None:
        dtype = getattr(plan, "dtype", None) or "float64"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    return np.dtype(V.choice("dtype", name, DTYPES))


def guard_limit(dtype):
    """The divergence limit in a working dtype: 1e100, or the dtype's largest value if smaller."""
    return min(DIVERGENCE_LIMIT, float(np.finfo(np.dtype(dtype)).max))


def last_timing():
    """Timing of the latest ``run`` / ``affine_coefficients`` call.

    Keys: ``path`` ("affine" or "trajectory"), ``array_module``, ``dtype``, ``chunks``,
    ``chunk_seeds``, ``fallback_seeds`` (seeds rerun per trajectory after the affine
    form became unsafe for them), ``run_s`` (wall time of the chunk loop, transfers of
    the results included), ``total_s`` (the whole call, set-up included),
    ``trajectory_steps`` (λ × seeds × steps) and ``throughput`` (trajectory-steps per
    second of ``run_s``).
    """
    return dict(_LAST_TIMING)


def _to_host(xp, arr):
    """A host numpy copy of a device array (numpy arrays pass through)."""
    return getattr(xp, "asnumpy", np.asarray)(arr)


def _rowdot(xp, a, b):
    """Σ over the last axis of a·b (einsum's fused path in numpy, a product and a sum elsewhere)."""
    if xp is np:
        return np.einsum("...d,...d->...", a, b)
    return (a * b).sum(axis=-1)


def _expm1_minus_id(xp, t):
    """h(t) = e^t − 1 − t without cancellation: ``softmax._expm1_minus_id`` in array-module form."""
    small = xp.abs(t) <= 1.0
    ts = xp.where(small, t, 0.0)
    out = xp.full_like(ts, _H_COEF[-1])
    for c in _H_COEF[-2::-1]:               # Horner
        out = out * ts + c
    out = out * ts * ts
    tl = xp.where(small, 0.0, t)
    return xp.where(small, out, xp.expm1(tl) - tl)


def _expit(xp, z):
    """σ(z) = 1/(1 + e^{−z}) without overflow."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _link(kind, xp, Z):
    """Per-sample mean prediction of logits Z (…, K): the residual is link(Z) − target."""
    if kind == "least_squares":
        return Z
    if kind == "softmax":
        E = xp.exp(Z - Z.max(axis=-1, keepdims=True))
        return E / E.sum(axis=-1, keepdims=True)
    if kind == "logistic":
        return _expit(xp, Z)
    return xp.exp(Z)                        # poisson


# ------------------------------------------------------------------ the engine
class _Engine:
    """Device-resident data of one run and the two chunk runners (affine, per trajectory)."""

    def __init__(self, problem, plan, xp, wd, budget, path):
        self.problem, self.plan, self.xp, self.wd = problem, plan, xp, wd
        self.kind = _FAMILIES[type(problem)]
        p, est = problem, plan.estimator
        self.est = est
        self.L, self.S, self.R = len(plan.lams), plan.n_seeds, len(plan.record_steps)
        self.n, self.dim, self.b = p.n, p.dim, plan.batch_size
        self.steps = plan.steps
        self.rec_steps = [int(t) for t in plan.record_steps]
        self.crn = bool(np.all(plan.streams == plan.streams[0]))
        self.limit = guard_limit(wd)
        self.alpha = float(p.l2)
        self.gamma = float(plan.step)
        self.lams = np.asarray(plan.lams, dtype=np.float64)
        coef = np.array([est.coefficients(lam) for lam in plan.lams], dtype=np.float64)   # (L, 2)
        self.teacher = est.uses_teacher
        self.snapshot = est.snapshot
        self.deep = self.kind == "deep_linear"
        affine_ok = self.kind == "least_squares" and self.crn and not est.snapshot
        if path == "affine" and not affine_ok:
            raise ValueError("path='affine' needs least squares, common random numbers and an estimator "
                             f"among sgd, kd, kd_loss, corrected; got {p.name}, estimator {est.name!r}, "
                             f"common_random_numbers={self.crn}")
        self.affine = affine_ok and (path == "affine" or (path == "auto" and (self.L > 1 or est.name == "sgd")))
        self.floyd_taken = FLOYD_COMPARE_MAX < self.b < self.n

        # ---- problem data (host float64 → device, once)
        # every family: output-space residuals r_i = link(M a_i) − target_i, M the (K, d') output map
        self.link_kind = self.kind
        if self.deep:
            K, dfeat = p.d_out, p.d_in
            targets = p._targets
            self.link_kind = "least_squares" if p.loss_type == "squared" else "softmax"
        elif self.kind == "softmax":
            K, dfeat = p.n_classes, p.n_features
            targets = np.eye(K)[p.y]
        elif self.kind == "least_squares":
            K, dfeat = 1, p.dim
            targets = p.b[:, None]
        else:
            K, dfeat = 1, p.dim
            targets = p.y[:, None]
        self.K, self.dfeat = K, dfeat
        A64 = np.asarray(p.A, dtype=np.float64)
        if self.teacher:
            terms = p.teacher_terms(plan.theta, est.teacher_term)
            ridge = terms.ridge
            tfull = None if self.deep else terms.full          # deep linear: depends on x (below)
            th = plan.theta
            if self.deep:
                rt = terms.residuals
            elif self.kind == "softmax":
                Zt = A64 @ p.weights(th).T
                Et = np.exp(Zt - Zt.max(axis=1, keepdims=True))
                rt = Et / Et.sum(axis=1, keepdims=True) - targets
            elif self.kind == "least_squares":
                rt = (A64 @ th - p.b)[:, None]
            else:
                rt = (p.dpsi(A64 @ th) - p.y)[:, None]
        else:
            ridge, tfull, rt = np.zeros(p.dim), np.zeros(p.dim), np.zeros((p.n, K))
        dev = self._dev
        self.A = dev(A64, wd)
        self.Y = dev(targets, wd)
        self.Rt = dev(rt, wd)
        self.x0 = dev(plan.x0, wd)
        with np.errstate(over="ignore", invalid="ignore"):
            a_w = coef[:, 0].astype(wd)
            if self.deep:
                # deep linear: T = J(x)ᵀ∇g(Θ̄) + ridge depends on x; its map part c·∇g(Θ̄) joins the
                # output-space gradient before the pull-back, the ridge part stays in κ
                kappa = (coef[:, 1:] - coef[:, :1]) * ridge[None, :]
                full_map = terms.full_map if (self.teacher and est.corrected) else None
            else:
                # κ = −a·ridge + c·T, constant for the teacher-anchored estimators
                kappa = -coef[:, :1] * ridge[None, :] + coef[:, 1:] * tfull[None, :]
                full_map = None
        self.a4 = dev(a_w.reshape(self.L, 1, 1, 1), wd)
        self.full_map_c = (None if full_map is None
                           else dev(coef[:, 1].reshape(self.L, 1, 1, 1) * full_map[None, None], wd))
        if self.deep:
            self.layer_shapes = [tuple(int(v) for v in s) for s in p.shapes]
            self.layer_offsets = [int(o) for o in p._offsets]
        self.lam3 = dev(self.lams.reshape(self.L, 1, 1), wd)             # SVRG: a = c = λ
        self.kappa = dev(kappa.reshape(self.L, 1, self.dim), wd)
        # records (float64)
        self.xstar = dev(p.canonical(p.solution()), np.float64)
        self.theta_c = dev(p.canonical_teacher(plan.theta), np.float64)
        self.A64 = self.A if wd == np.float64 else dev(A64, np.float64)
        if self.kind == "least_squares":
            self.F = dev(p.gram_factor(), np.float64)
        elif self.deep:
            xs = p.solution()
            self.x_star_sq = float(xs @ xs)
            if p.loss_type == "squared":
                Ms, Gs, Rc = p._squared_reference
                self.M_star, self.Rc_T = dev(Ms, np.float64), dev(Rc.T, np.float64)
                self.G_star = dev(Gs, np.float64) if (p._bottleneck or p.l2 > 0) else None
            else:
                self.f_star = float(p.f_star)
                self.Y64 = dev(targets, np.float64)
        elif self.kind == "softmax":
            ps, logp, g = p._at_optimum
            self.p_star, self.logp_star = dev(ps, np.float64), dev(logp, np.float64)
            self.g_star = dev(g, np.float64)
        else:
            zs, g = p._at_optimum
            self.g_star = dev(g, np.float64)
            if self.kind == "logistic":
                from scipy.special import expit
                self.s_star, self.sb_star = dev(expit(zs), np.float64), dev(expit(-zs), np.float64)
                self.log_s = dev(-np.logaddexp(0.0, -zs), np.float64)          # log σ(z*)
                self.log_sb = dev(-np.logaddexp(0.0, zs), np.float64)          # log σ(−z*)
            else:
                self.zs, self.ez = dev(zs, np.float64), dev(np.exp(zs), np.float64)
        if self.affine:
            nv = 2 if self.teacher else 1
            lab = np.column_stack([p.b, rt[:, 0]]) if self.teacher else p.b[:, None]
            kap = np.zeros((nv, p.dim))                                           # (κ_u, κ_v), κ_u = 0
            if self.teacher:
                kap[1] = ridge - tfull if est.corrected else ridge
            self.nv = nv
            self.lab = dev(lab.T, wd)                                            # (nv, n)
            self.kap_uv = dev(kap, wd)
            self.lam_col = dev(self.lams.reshape(self.L, 1), np.float64)

        # ---- memory
        w, f8 = wd.itemsize, 8
        L, R, n, dim = self.L, self.R, self.n, self.dim
        bb = n if self.b == n else self.b
        Lr = 1 if self.crn else L
        rec_out = L * (3 * R * f8 + f8 + dim * f8)                       # records, flags, x_final
        traj = (L * dim * (6 * w + 4 * f8)                                # state, step temporaries, record vectors
                + (Lr * bb * (dfeat + 2 * K) * w if self.b < n else 0)   # gathers
                + 4 * L * bb * K * w * (2 if self.snapshot else 1)       # logits, residuals
                + (2 * L * dim * w if self.snapshot else 0)              # snapshot and its κ
                + (Lr * n if self.floyd_taken else 0) + 3 * Lr * bb * f8 + rec_out)
        if self.affine:
            nv = self.nv
            aff = (dim * nv * (6 * w + 4 * f8) + (bb * (dim + 2 * nv) * w if self.b < n else 0)
                   + 4 * bb * nv * w + 5 * L * dim * f8 + (n if self.floyd_taken else 0) + 3 * bb * f8
                   + rec_out + 9 * R * f8)
            traj = max(traj, aff)
        if self.deep:
            widest = max(max(r, c) for r, c in p.shapes)
            traj += 6 * L * len(p.shapes) * widest * widest * w * (2 if self.snapshot else 1)
        self.bytes_per_seed = int(traj)
        self.fixed_bytes = int(A64.nbytes * (2 if wd != np.float64 else 1) + 3 * n * K * w
                               + (dim * dim * f8 if self.kind == "least_squares" else 0))
        # full-data row blocks (softmax / GLM / deep-softmax records, SVRG full gradients)
        per_row = 10 * n * K * f8
        self.row_block = max(1, (budget // 4) // per_row)

    def _dev(self, arr, dtype):
        return self.xp.asarray(np.ascontiguousarray(np.asarray(arr, dtype=np.float64), dtype=dtype))

    # ------------------------------------------------------------ minibatches
    def _draw(self, skeys, t, taken):
        """(rows, b) minibatch indices of step t, or None for the full batch (b = n)."""
        if self.b == self.n:
            return None
        return minibatch_from_keys(skeys, t, self.n, self.b, self.xp, taken)

    # ------------------------------------------------------------ records
    def _canonical(self, X):
        if self.deep:
            _, Q = self._chain(X, suffix=False)
            return Q[-1].reshape(X.shape[0], self.K * self.dfeat)
        if self.kind != "softmax":
            return X
        W = X.reshape(X.shape[:-1] + (self.K, self.dfeat))
        return (W - W.mean(axis=-2, keepdims=True)).reshape(X.shape)

    def _subopt_block(self, X):
        """f(x) − f* of rows X (T, dim), float64, cancellation-free (see the problems' suboptimality)."""
        xp = self.xp
        if self.deep:
            return self._deep_subopt_block(X)
        E = X - self.xstar
        quad = 0.5 * self.alpha * (E * E).sum(axis=1)
        if self.kind == "least_squares":
            FE = E @ self.F.T
            return 0.5 * (FE * FE).sum(axis=1) + quad
        if self.kind == "softmax":
            T = E.shape[0]
            Delta = (self.A64 @ E.reshape(T * self.K, self.dfeat).T).reshape(self.n, T, self.K)
            p = self.p_star[:, None, :]                                           # (n, 1, K)
            Dc = Delta - (Delta * p).sum(axis=-1, keepdims=True)
            big = xp.abs(Dc).max(axis=-1) > 1.0
            w = (p * _expm1_minus_id(xp, xp.where(big[..., None], 0.0, Dc))).sum(axis=-1)
            Zb = self.logp_star[:, None, :] + Dc
            m = Zb.max(axis=-1, keepdims=True)
            lse = (m + xp.log(xp.exp(Zb - m).sum(axis=-1, keepdims=True)))[..., 0]
            D = xp.where(big, lse, xp.log1p(w)).T                                 # (T, n)
        else:
            delta = E @ self.A64.T                                                # (T, n)
            if self.kind == "logistic":
                s, sb = self.s_star, self.sb_star
                u0, u1 = -s * delta, sb * delta
                big = xp.maximum(xp.abs(u0), xp.abs(u1)) > 1.0
                small = xp.log1p(sb * _expm1_minus_id(xp, xp.where(big, 0.0, u0))
                                 + s * _expm1_minus_id(xp, xp.where(big, 0.0, u1)))
                D = xp.where(big, xp.logaddexp(self.log_sb + u0, self.log_s + u1), small)
            else:
                big = xp.abs(delta) > 1.0
                small = self.ez * _expm1_minus_id(xp, xp.where(big, 0.0, delta))
                D = xp.where(big, xp.exp(self.zs + delta) - self.ez * (1.0 + delta), small)
        return D.mean(axis=1) + E @ self.g_star + quad

    def _deep_subopt_block(self, X):
        """f(x) − f* of deep linear rows, as ``DeepLinear.suboptimality`` computes it."""
        xp = self.xp
        T = X.shape[0]
        _, Q = self._chain(X, suffix=False)
        M = Q[-1]                                                                # (T, K, d_in)
        ridge = 0.5 * self.alpha * _rowdot(xp, X, X)
        if self.problem.loss_type == "squared":
            E = M - self.M_star
            ER = E @ self.Rc_T
            out = 0.5 * (ER * ER).sum(axis=(1, 2))
            if self.G_star is not None:
                out = out + (E * self.G_star).sum(axis=(1, 2))
            if self.alpha > 0:
                out = out + (ridge - 0.5 * self.alpha * self.x_star_sq)
            return out
        Z = (self.A64 @ M.reshape(T * self.K, self.dfeat).T).reshape(self.n, T, self.K)
        m = Z.max(axis=-1, keepdims=True)
        lse = (m + xp.log(xp.exp(Z - m).sum(axis=-1, keepdims=True)))[..., 0]
        zy = (Z * self.Y64[:, None, :]).sum(axis=-1)
        return (lse - zy).mean(axis=0) + ridge - self.f_star

    # ------------------------------------------------------------ deep linear chain
    def _chain(self, X, suffix=True):
        """Layers of rows X (…, dim): prefix products Q[k] = W_{k−1}⋯W_0 (Q[0] None, Q[-1] the
        end-to-end map) and suffix products P[k] = W_{L−1}⋯W_{k+1} (P[-1] None), as
        ``DeepLinear._chain``."""
        lead = X.shape[:-1]
        Ws = [X[..., o:o + r * c].reshape(lead + (r, c))
              for (r, c), o in zip(self.layer_shapes, self.layer_offsets[:-1])]
        depth = len(Ws)
        Q = [None] * (depth + 1)
        for k in range(depth):
            Q[k + 1] = Ws[k] if Q[k] is None else Ws[k] @ Q[k]
        P = [None] * depth
        if suffix:
            for k in range(depth - 1, 0, -1):
                P[k - 1] = Ws[k] if P[k] is None else P[k] @ Ws[k]
        return P, Q

    def _pull(self, P, Q, G):
        """J(x)ᵀ G for map-space directions G (…, K, d_in): blocks P[k]ᵀ G Q[k]ᵀ, packed to (…, dim)."""
        lead = G.shape[:-2]
        blocks = []
        for k in range(len(P)):
            g = G if P[k] is None else P[k].swapaxes(-1, -2) @ G
            g = g if Q[k] is None else g @ Q[k].swapaxes(-1, -2)
            blocks.append(g.reshape(lead + (-1,)))
        return blocks[0] if len(blocks) == 1 else self.xp.concatenate(blocks, axis=-1)

    def _record_values(self, X64):
        """(dist2_opt, subopt, dist2_teacher) of rows X64 (T, dim), float64."""
        xp = self.xp
        C = self._canonical(X64)
        d2o = ((C - self.xstar) ** 2).sum(axis=1)
        d2t = ((C - self.theta_c) ** 2).sum(axis=1)
        T = X64.shape[0]
        if self.kind == "least_squares" or (self.deep and self.problem.loss_type == "squared") \
                or T <= self.row_block:
            sub = self._subopt_block(X64)
        else:
            sub = xp.concatenate([self._subopt_block(X64[r0:r0 + self.row_block])
                                  for r0 in range(0, T, self.row_block)])
        return d2o, sub, d2t

    # ------------------------------------------------------------ per trajectory
    def _full_grad(self, Yf):
        """∇f(y) (ridge included) of rows Yf (T, dim) in the working dtype, in row blocks."""
        xp = self.xp
        parts = []
        for r0 in range(0, Yf.shape[0], self.row_block):
            Yb = Yf[r0:r0 + self.row_block]
            T = Yb.shape[0]
            if self.deep:
                P, Q = self._chain(Yb)
                M = Q[-1]
            else:
                M = Yb.reshape(T, self.K, self.dfeat)
            Z = (self.A @ M.reshape(T * self.K, self.dfeat).T).reshape(self.n, T, self.K)
            Rs = _link(self.link_kind, xp, Z) - self.Y[:, None, :]                            # (n, T, K)
            G = (Rs.reshape(self.n, T * self.K).T @ self.A).reshape(T, self.K, self.dfeat) / self.n
            G = self._pull(P, Q, G) if self.deep else G.reshape(T, self.dim)
            parts.append(G + self.alpha * Yb)
        return parts[0] if len(parts) == 1 else xp.concatenate(parts)

    def _logits(self, Ab, M):
        """Z[l, s, i, :] = M[l, s] a_i for the minibatch rows (Ab (Lr, ns, b, d') or None: every row)."""
        xp = self.xp
        L, ns = M.shape[:2]
        if Ab is None:
            Z = self.A @ M.reshape(L * ns * self.K, self.dfeat).T                    # (n, L·ns·K)
            return Z.reshape(self.n, L, ns, self.K).transpose(1, 2, 0, 3)
        return xp.matmul(Ab, M.swapaxes(-1, -2))

    def _map_grad(self, Ab, Rc):
        """(1/b) Σ_i Rc[l, s, i, :] a_iᵀ, the output-map gradient (L, ns, K, d')."""
        xp = self.xp
        L, ns, b = Rc.shape[:3]
        if Ab is None:
            Rf = Rc.transpose(0, 1, 3, 2).reshape(L * ns * self.K, self.n)
            G = (Rf @ self.A).reshape(L, ns, self.K, self.dfeat)
        else:
            G = xp.matmul(Rc.swapaxes(-1, -2), Ab)
        if b > 1:
            G /= b
        return G

    def traj_chunk(self, seeds):
        """Per-trajectory run of the global seeds ``seeds`` (host int array), every λ."""
        xp, wd = self.xp, self.wd
        L, ns, dim, K, dfeat, R = self.L, len(seeds), self.dim, self.K, self.dfeat, self.R
        Lr = 1 if self.crn else L
        streams = np.ascontiguousarray(self.plan.streams[:Lr][:, seeds]).ravel()
        skeys = stream_keys(self.plan.seed, streams, xp)
        taken = xp.zeros((Lr * ns, self.n), dtype=bool) if self.floyd_taken else None
        X = xp.broadcast_to(self.x0, (L, ns, dim)).copy()
        div = xp.full((L, ns), -1, dtype=xp.int64)
        outs = [xp.full((R, L, ns), xp.nan, dtype=xp.float64) for _ in RECORDS]     # record-major
        gamma = wd.type(self.gamma)
        alpha = wd.type(self.alpha)
        kappa = self.kappa if self.teacher else None
        snap = None
        rec = 0
        for t in range(self.steps + 1):
            if rec < R and self.rec_steps[rec] == t:
                X, div = self._record_traj(X, div, outs, rec, t)
                rec += 1
            if t == self.steps:
                break
            idx = self._draw(skeys, t, taken)
            if idx is None:                       # full batch: (n, …) data, plain products below
                Ab, Yb, Rtb = None, self.Y, self.Rt
            else:
                idx = idx.reshape(Lr, ns, self.b)
                Ab, Yb = self.A[idx], self.Y[idx]
                Rtb = self.Rt[idx] if self.teacher else None
            if self.snapshot and t % self.plan.svrg_period == 0:
                snap = X.copy()
                full = self._full_grad(snap.reshape(L * ns, dim)).reshape(L, ns, dim)
                full -= alpha * snap
                kappa = self.lam3 * full                   # −a·αy + c·∇f(y), a = c = λ
                if self.deep:
                    Py, Qy = self._chain(snap)
                    Msnap = Qy[-1]
                else:
                    Msnap = snap.reshape(L, ns, K, dfeat)
            if self.deep:
                P, Q = self._chain(X)
                M = Q[-1]                                                     # (L, ns, K, d_in)
            else:
                M = X.reshape(L, ns, K, dfeat)
            # combined residual r_i(x) − a·r_i(anchor), then one product with the minibatch rows
            Rc = _link(self.link_kind, xp, self._logits(Ab, M))
            Rc -= Yb                                                          # (L, ns, b, K)
            if self.teacher:
                Rc -= self.a4 * Rtb
            elif self.snapshot and not self.deep:
                Rs = _link(self.link_kind, xp, self._logits(Ab, Msnap))
                Rs -= Yb
                Rs *= self.a4
                Rc -= Rs
            Gm = self._map_grad(Ab, Rc)
            if self.deep:
                if self.full_map_c is not None:
                    Gm += self.full_map_c                                     # c·∇g(Θ̄), pulled back at x
                G = self._pull(P, Q, Gm)
                if self.snapshot:                     # a·J(y)ᵀ∇g_B(W(y)), pulled back at y
                    Rs = _link(self.link_kind, xp, self._logits(Ab, Msnap))
                    Rs -= Yb
                    Gs = self._map_grad(Ab, Rs)
                    Gs *= self.a4
                    G -= self._pull(Py, Qy, Gs)
            else:
                G = Gm.reshape(L, ns, dim)
            if self.alpha:
                G += alpha * X
            if kappa is not None:
                G += kappa
            G *= gamma
            X -= G
            norm2 = _rowdot(xp, X, X)
            newly = (div < 0) & ~(norm2 <= self.limit)
            div = xp.where(newly, t + 1, div)
            X += xp.where(newly, xp.nan, 0.0).astype(wd)[..., None]          # freeze at NaN
        return self._finish(outs, div, X.astype(xp.float64))

    def _record_traj(self, X, div, outs, r, t):
        xp = self.xp
        L, ns = div.shape
        vals = self._record_values(X.reshape(L * ns, self.dim).astype(xp.float64, copy=False))
        vals = [v.reshape(L, ns) for v in vals]
        alive = div < 0
        fin = xp.isfinite(vals[0]) & xp.isfinite(vals[1]) & xp.isfinite(vals[2])
        keep = alive & fin
        for out, v in zip(outs, vals):
            out[r] = xp.where(keep, v, xp.nan)
        bad = alive & ~fin
        div = xp.where(bad, t, div)
        X = xp.where(bad[..., None], xp.nan, X)
        return X, div

    def _finish(self, outs, div, xfin):
        xp = self.xp
        res = {name: np.ascontiguousarray(np.moveaxis(_to_host(xp, o), 0, -1))      # (L, ns, R)
               for name, o in zip(RECORDS, outs)}
        res["diverged_step"] = _to_host(xp, div).astype(np.int64)
        res["x_final"] = _to_host(xp, xfin).astype(np.float64)
        return res

    # ------------------------------------------------------------ affine (least squares)
    def affine_chunk(self, seeds, want_coeffs=False):
        """THEORY §5.1 for the global seeds ``seeds``: one (u, v) pair per seed serves every λ.

        The pair is stored as U of shape (ns, nv, dim) (nv = 2, or 1 for sgd: v ≡ 0).
        Returns (result dict, unsafe seed mask (host), coefficients (ns, R, 3, 3) or None).
        """
        xp, wd = self.xp, self.wd
        L, ns, dim, R, nv = self.L, len(seeds), self.dim, self.R, self.nv
        skeys = stream_keys(self.plan.seed, np.ascontiguousarray(self.plan.streams[0, seeds]), xp)
        taken = xp.zeros((ns, self.n), dtype=bool) if self.floyd_taken else None
        U = xp.zeros((ns, nv, dim), dtype=wd)
        U[:, 0, :] = self.x0
        div = xp.full((L, ns), -1, dtype=xp.int64)
        unsafe = xp.zeros(ns, dtype=bool)
        outs = [xp.full((R, L, ns), xp.nan, dtype=xp.float64) for _ in RECORDS]     # record-major
        coeffs = xp.full((ns, R, 3, 3), xp.nan, dtype=xp.float64) if want_coeffs else None
        gamma, alpha = wd.type(self.gamma), wd.type(self.alpha)
        lam = self.lam_col                                                      # (L, 1) float64
        rec = 0
        for t in range(self.steps + 1):
            if rec < R and self.rec_steps[rec] == t:
                div = self._record_affine(U, div, unsafe, outs, coeffs, rec, t)
                rec += 1
            if t == self.steps:
                break
            idx = self._draw(skeys, t, taken)
            if idx is None:                                                     # full batch: two plain products
                Z = (U.reshape(ns * nv, dim) @ self.A.T).reshape(ns, nv, self.n)
                Z -= self.lab                                                   # (nv, n)
                G = (Z.reshape(ns * nv, self.n) @ self.A).reshape(ns, nv, dim)
            else:
                Ab = self.A[idx]                                                # (ns, b, dim)
                Z = xp.matmul(U, Ab.swapaxes(-1, -2))                           # (ns, nv, b)
                Z -= self.lab[:, idx].transpose(1, 0, 2)
                G = xp.matmul(Z, Ab)                                            # (ns, nv, dim)
            if self.b > 1:
                G /= self.b
            if self.alpha:
                G += alpha * U
            if nv == 2:
                G -= self.kap_uv
            G *= gamma
            U -= G
            # guard: ‖u + λv‖² from three dot products per seed, float64
            Uc = U.astype(xp.float64, copy=False)
            uu = _rowdot(xp, Uc[:, 0], Uc[:, 0])
            if nv == 2:
                vv = _rowdot(xp, Uc[:, 1], Uc[:, 1])
                q = uu + 2.0 * lam * _rowdot(xp, Uc[:, 0], Uc[:, 1]) + lam * lam * vv    # (L, ns)
                scale = xp.maximum(uu, lam * lam * vv)
            else:
                q = xp.broadcast_to(uu, (L, ns))
                scale = q
            decisive = (xp.isfinite(q) & xp.isfinite(scale)
                        & (xp.abs(q - self.limit) > AFFINE_DECISIVE * xp.maximum(scale, self.limit)))
            alive = (div < 0) & ~unsafe
            newly = alive & decisive & (q > self.limit)
            div = xp.where(newly, t + 1, div)
            still = alive & ~newly
            unsafe = unsafe | (still & (~decisive | (scale > self.limit))).any(axis=0)
        # final iterates x(λ) = u + λv
        U64 = U.astype(xp.float64)
        u = U64[None, :, 0, :]
        if nv == 2:
            lam3 = self.lam_col[:, :, None]
            x = xp.where(lam3 == 0.0, u, u + lam3 * U64[None, :, 1, :])
        else:
            x = xp.broadcast_to(u, (L, ns, dim))
        x = xp.where((div >= 0)[..., None], xp.nan, x)
        res = self._finish(outs, div, x)
        unsafe_h = _to_host(xp, unsafe).astype(bool)
        return res, unsafe_h, (None if coeffs is None else _to_host(xp, coeffs))

    def _record_affine(self, U, div, unsafe, outs, coeffs, r, t):
        """Records of every λ from (u, v): e = (u − x*) + λv formed per λ (no cancellation)."""
        xp = self.xp
        L, ns = div.shape
        W = xp.array(U.transpose(1, 0, 2), dtype=xp.float64, order="C")          # a copy: (u, v) as (nv, ns, dim)
        et = W[0] - self.theta_c
        W[0] -= self.xstar                                                      # (u − x*, v)
        FW = (W.reshape(self.nv * ns, self.dim) @ self.F.T).reshape(self.nv, ns, -1)   # one product
        eu, Fe = W[0], FW[0]
        a2 = self.alpha
        vals = [xp.empty((L, ns)) for _ in RECORDS]                            # dist2_opt, subopt, dist2_teacher
        if self.nv == 2:
            v, Fv = W[1], FW[1]
            E, FE = xp.empty_like(eu), xp.empty_like(Fe)                        # reused per λ
            for k, lam in enumerate(self.lams.tolist()):
                xp.multiply(v, lam, out=E)
                E += eu
                vals[0][k] = _rowdot(xp, E, E)
                xp.multiply(v, lam, out=E)
                E += et
                vals[2][k] = _rowdot(xp, E, E)
                xp.multiply(Fv, lam, out=FE)
                FE += Fe
                vals[1][k] = 0.5 * (_rowdot(xp, FE, FE) + a2 * vals[0][k])
        else:
            vals[0][:] = _rowdot(xp, eu, eu)
            vals[2][:] = _rowdot(xp, et, et)
            vals[1][:] = 0.5 * (_rowdot(xp, Fe, Fe) + a2 * vals[0])
        alive = (div < 0) & ~unsafe
        fin = xp.isfinite(vals[0]) & xp.isfinite(vals[1]) & xp.isfinite(vals[2])
        keep = alive & fin
        for out, val in zip(outs, vals):
            out[r] = xp.where(keep, val, xp.nan)
        div = xp.where(alive & ~fin, t, div)
        if coeffs is not None:
            ee, ff, tt = _rowdot(xp, eu, eu), _rowdot(xp, Fe, Fe), _rowdot(xp, et, et)
            if self.nv == 2:
                vv, Fvv = _rowdot(xp, v, v), _rowdot(xp, Fv, Fv)
                cols = [(ee, 2.0 * _rowdot(xp, eu, v), vv),
                        (0.5 * (ff + a2 * ee), _rowdot(xp, Fe, Fv) + a2 * _rowdot(xp, eu, v),
                         0.5 * (Fvv + a2 * vv)),
                        (tt, 2.0 * _rowdot(xp, et, v), vv)]
            else:
                z = xp.zeros(ns)
                cols = [(ee, z, z), (0.5 * (ff + a2 * ee), z, z), (tt, z, z)]
            valid = keep.any(axis=0)[:, None]
            for q, trio in enumerate(cols):
                coeffs[:, r, q, :] = xp.where(valid, xp.stack(trio, axis=1), xp.nan)
        return div

    # ------------------------------------------------------------ chunk
    def run_chunk(self, s0, s1, want_coeffs=False):
        """Records of seeds s0 .. s1−1 (host arrays), the number of fallback seeds, coefficients."""
        seeds = np.arange(s0, s1)
        if not self.affine:
            return self.traj_chunk(seeds), 0, None
        res, unsafe, coeffs = self.affine_chunk(seeds, want_coeffs)
        if unsafe.any():
            sel = np.flatnonzero(unsafe)
            redo = self.traj_chunk(seeds[sel])
            for k in res:
                res[k][:, sel] = redo[k]
        return res, int(unsafe.sum()), coeffs


# ------------------------------------------------------------------ public API
def _engine(problem, plan, xp, dtype, max_bytes, path):
    if not supports(problem):
        names = ", ".join(sorted(c.__name__ for c in _FAMILIES))
        raise NotImplementedError(f"the batched (array-module) engine has no path for {type(problem).__name__} "
                                  f"(it runs: {names}); use backend='numpy'")
    V.choice("path", path, PATHS)
    wd = resolve_dtype(dtype, plan)
    budget = memplan.default_budget() if max_bytes is None else V.int_in_range("max_bytes", max_bytes, 1)
    return _Engine(problem, plan, xp, wd, budget, path), budget


def _chunk_plan(eng, budget, chunk_seeds, host_outputs):
    fixed = eng.fixed_bytes + (eng.L * eng.S * (3 * eng.R + 1 + eng.dim) * 8 if host_outputs else 0)
    return memplan.plan_chunks(eng.S, eng.bytes_per_seed, fixed_bytes=fixed,
                               budget=budget - budget // 4, chunk_seeds=chunk_seeds)


def _timing(eng, xp, t_start, t_run, cplan, fallback):
    run_s = time.perf_counter() - t_run
    steps = eng.L * eng.S * eng.steps
    _LAST_TIMING.clear()
    _LAST_TIMING.update({
        "path": "affine" if eng.affine else "trajectory", "array_module": xp.__name__,
        "dtype": eng.wd.name, "chunks": len(cplan.chunks), "chunk_seeds": cplan.chunk_seeds,
        "fallback_seeds": fallback, "run_s": run_s, "total_s": time.perf_counter() - t_start,
        "trajectory_steps": steps, "throughput": steps / run_s if run_s > 0 else float("inf"),
    })


def run(problem, plan, xp=np, dtype=None, *, max_bytes=None, chunk_seeds=None, path="auto"):
    """Run a validated plan (see ``kdsim.simulate``) with array module ``xp``; same dict as ``reference.run``.

    ``dtype``: "float64" or "float32" iterate arithmetic (default ``plan.dtype`` if the plan
    has one, else float64); records are float64 either way. ``max_bytes``: working memory
    (on the device for CuPy) the run may use, default half the available host memory;
    seeds run in chunks that fit (``chunk_seeds`` forces a chunk size). ``path``: "auto"
    (least squares' affine form where it applies and pays: common random numbers, estimator
    sgd/kd/kd_loss/corrected, and more than one λ or sgd), or force "affine" / "trajectory".
    Chunking and path never change the records beyond rounding.
    """
    t_start = time.perf_counter()
    eng, budget = _engine(problem, plan, xp, dtype, max_bytes, path)
    L, S, R, dim = eng.L, eng.S, eng.R, eng.dim
    cplan = _chunk_plan(eng, budget, chunk_seeds, host_outputs=xp is np)
    out = {name: np.full((L, S, R), np.nan) for name in RECORDS}
    out["diverged_step"] = np.full((L, S), -1, dtype=np.int64)
    out["x_final"] = np.full((L, S, dim), np.nan)
    fallback = 0
    t_run = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s0, s1 in cplan.chunks:
            res, nf, _ = eng.run_chunk(s0, s1)
            fallback += nf
            for k, v in res.items():
                out[k][:, s0:s1] = v
    _timing(eng, xp, t_start, t_run, cplan, fallback)
    return out


def affine_coefficients(problem, plan, xp=np, dtype=None, *, max_bytes=None, chunk_seeds=None):
    """Per-seed quadratics in λ of the records (least squares, common random numbers).

    For sgd, kd, kd_loss and corrected, x_t(λ) = u_t + λ v_t (THEORY §5.1), so each record
    is c0 + c1·λ + c2·λ² per seed and record step. Returns ``{record: (S, R, 3)}`` plus
    ``diverged_step`` (L, S) for the plan's own λ grid. Coefficients are NaN once every λ
    of the plan has diverged for the seed, and from the first record after the affine
    form became unsafe for it (its u or v left the range while a λ had not). Evaluating
    them where x_t(λ) ≈ x* (or ≈ θ) loses digits to cancellation; ``run``'s records are
    evaluated without it.
    """
    t_start = time.perf_counter()
    eng, budget = _engine(problem, plan, xp, dtype, max_bytes, "affine")
    L, S, R = eng.L, eng.S, eng.R
    eng.bytes_per_seed += 9 * R * 8
    cplan = _chunk_plan(eng, budget, chunk_seeds, host_outputs=xp is np)
    coeffs = np.full((S, R, 3, 3), np.nan)
    div = np.full((L, S), -1, dtype=np.int64)
    fallback = 0
    t_run = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s0, s1 in cplan.chunks:
            res, unsafe, c = eng.affine_chunk(np.arange(s0, s1), want_coeffs=True)
            coeffs[s0:s1] = c
            d = res["diverged_step"]
            if unsafe.any():
                sel = np.flatnonzero(unsafe)
                d[:, sel] = eng.traj_chunk(s0 + sel)["diverged_step"]
                fallback += len(sel)
            div[:, s0:s1] = d
    _timing(eng, xp, t_start, t_run, cplan, fallback)
    return {**{name: coeffs[:, :, q, :] for q, name in enumerate(RECORDS)}, "diverged_step": div}
