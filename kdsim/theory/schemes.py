"""Exact least-squares dynamics under any sampling scheme, with heavy-ball momentum (docs/theory.md §5.2).

No Monte Carlo: on tiny instances (n ≤ 7) every index sequence a scheme can draw is
enumerated, so the expectations below are finite averages, exact up to rounding.

Conventions (the engines' and ``kdsim.rng``'s)
----------------------------------------------
* **Update.** With momentum μ ∈ [0, 1) (torch's heavy ball, dampening 0, no Nesterov):
  `w_{t+1} = μ w_t + g_t`, `x_{t+1} = x_t − γ w_{t+1}`, `w_0 = 0`; μ = 0 is plain SGD.
* **Direction.** `g_t = ∇f_B(x_t) − a·T_B + c·T` (``kdsim.estimators``): "sgd" a = c = 0;
  "kd" a = λ, c = 0, `T_B = ∇f_B(θ)` (ridge included); "kd_loss" a = λ, c = 0,
  `T_B = ∇ℓ_B(θ)` (no ridge); "corrected" a = c = λ, `T = ∇f(θ)`. Here
  `f_i(x) = ½(a_iᵀx − b_i)² + (α/2)‖x‖²` and `∇f_B` is the mean over the b_t samples of
  step t's batch (b_t < b for a partial last batch).
* **Batches.** An epoch has K = ⌈n/b⌉ steps (⌊n/b⌋ with ``drop_last``); the epoch's
  permutation π is cut in order, batch k = `π[k·b : min((k+1)·b, n)]`. "reshuffle": an
  independent uniform permutation every epoch; "shuffle_once": one uniform permutation
  reused in every epoch; "iid": every step an independent uniform b-subset.

The path identity (docs/theory.md §5.2)
----------------------------------------
For estimator "kd" and **any** index sequence (B_t), with `x_λ = (1 − λ)x* + λθ`,
`H_B = (1/b_t) Σ_{i∈B} (a_i a_iᵀ + αI)`, `g_B = ∇f_B(x*)`, `δ = θ − x*`:

    x_t(λ) − x* = P_t (x_0 − x_λ) + (1 − λ) z_t + λ δ,

where z_t is SGD's (or momentum SGD's) deviation from x* started at x* on the same
batches, `z_{t+1} = (I − γH_{B_t}) z_t − γ g_{B_t}` without momentum, and
`P_t (x_0 − x_λ)` is the homogeneous recursion (no g_B term, `w_0 = 0`) started at
`x_0 − x_λ`. The proof is one line: `∇f_B(x) − λ∇f_B(θ) = H_B(x − x_λ) + (1 − λ) g_B`,
so `e_t = x_t − x_λ` obeys a recursion linear in `(e_0, g)`. The ridge changes nothing:
KD's fixed point solves `∇f(x) = λ∇f(θ)`, i.e. `H(x − x*) = λH(θ − x*)` with H including
αI, so `x_λ = (1 − λ)x* + λθ` with or without α (``path_identity`` checks it).

Exact moments by enumeration
----------------------------
Every iterate is affine in λ for every estimator: `x_t(λ) − x* = e_t + λ v_t`. The state
of ``exact_epoch_moments`` stacks three copies of the (error, momentum buffer) pair,
sharing the batches,

    s = (e, w_e, v, w_v, z, w_z, 1)     (the w blocks are dropped when μ = 0),

e: the λ = 0 part started at `x_0 − x*`; v: the λ-slope started at 0; z: SGD's deviation
started at x* (§5.2). One step on batch B is an affine map `s ↦ G_B s`, so a
second moment `S = E[s sᵀ]` (whose last column is `E s`) propagates exactly:

* "iid": `S ← mean_B G_B S G_Bᵀ` over the C(n, b) subsets, every step;
* "reshuffle": `S ← mean_π A_π S A_πᵀ` once per epoch, `A_π = G_{B_{K−1}} ⋯ G_{B_0}` the
  epoch map of π (epochs independent);
* "shuffle_once": each permutation's whole path `s_e = A_π^e s_0`, then `S = mean_π s_e s_eᵀ`.

Only the batch *sets* matter, and every ordered sequence of batch sets (plus the unused
remainder under ``drop_last``) comes from the same number of permutations
(`Π_k b_k! · (n − Kb)!`), so the average over the distinct sequences equals the average over
all n! permutations. From S: `E‖x_t(λ) − x*‖² = E‖e‖² + 2λ E⟨e, v⟩ + λ² E‖v‖²` (and the same
quadratics for `f − f*` and `‖x − θ‖²`), `M_t = E‖z_t‖²`, `c_t = ⟨θ − x*, E z_t⟩`.
"""
from __future__ import annotations

import itertools
import numbers
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from ..estimators import get_estimator
from ..rng import SAMPLINGS, steps_per_epoch
from .exact_ls import SUPPORTED_ESTIMATORS, _require_ls

#: largest n for which every permutation (n! of them) or b-subset is enumerated
MAX_ENUM_N = 7
#: largest state dimension D for which the averaged second-moment map is formed as a D² × D² matrix
KRON_MAX_DIM = 40


# ------------------------------------------------------------------ validation helpers
def _momentum(momentum):
    """μ ∈ [0, 1), with an error naming ``momentum``."""
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a real number in [0, 1); got {momentum!r}")
    mu = float(momentum)
    if not np.isfinite(mu) or mu < 0.0 or mu >= 1.0:
        raise ValueError(f"momentum must satisfy 0 <= momentum < 1 (heavy ball, dampening 0); got {momentum!r}")
    return mu


def _estimator(estimator):
    V.choice("estimator", estimator, SUPPORTED_ESTIMATORS + ("svrg",))
    if estimator == "svrg":
        raise ValueError("estimator 'svrg' is not covered here (its snapshot refresh is not part of the "
                         "enumerated state); valid estimators: " + ", ".join(map(repr, SUPPORTED_ESTIMATORS)))
    return get_estimator(estimator)


def _enum_n(problem):
    if problem.n > MAX_ENUM_N:
        raise ValueError(f"problem.n must satisfy n <= {MAX_ENUM_N} for exact enumeration (every one of the "
                         f"n! permutations, or b-subsets, is visited); got n = {problem.n}. Use Monte Carlo "
                         "(kdsim.simulate) for larger n")
    return problem.n


def _batches(batches, n):
    """A list of 1-d int64 index arrays with entries in [0, n)."""
    if isinstance(batches, np.ndarray) and batches.ndim == 2:
        batches = list(batches)
    try:
        seq = list(batches)
    except TypeError:
        raise TypeError(f"batches must be a sequence of index arrays; got {type(batches).__name__}") from None
    out = []
    for k, B in enumerate(seq):
        out.append(V.index_array(f"batches[{k}]", np.atleast_1d(np.asarray(B)), n))
    return out


def _x0(problem, x0):
    return problem.default_x0() if x0 is None else V.as_vector("x0", x0, problem.dim)


# ------------------------------------------------------------------ paths
def batch_sequence(perm_or_perms, n, batch_size, steps, drop_last=False):
    """The index batches of one path under "reshuffle" or "shuffle_once", step by step.

    Parameters
    ----------
    perm_or_perms : array_like
        Either one permutation of `0 .. n−1` (1-d, length n), reused in every epoch
        ("shuffle_once"), or one permutation per epoch (2-d `(epochs, n)`, or a sequence of
        permutations; epoch e uses row e: "reshuffle"). It must cover the epochs that
        ``steps`` reaches.
    n : int
        Number of samples.
    batch_size : int
        b, with `1 <= b <= n`.
    steps : int
        Number of steps T (>= 0).
    drop_last : bool
        Drop the partial last batch of each epoch (K = ⌊n/b⌋ steps instead of ⌈n/b⌉).

    Returns
    -------
    list of numpy.ndarray
        T int64 arrays; step t = e·K + k uses `π_e[k·b : min((k+1)·b, n)]`, as ``kdsim.rng``
        cuts an epoch's permutation (docs/theory.md §5.2). Feed it to ``run_path`` or
        ``path_identity``.
    """
    n = V.int_in_range("n", n, 1)
    b = V.int_in_range("batch_size", batch_size, 1, n)
    steps = V.int_in_range("steps", steps, 0)
    K = steps_per_epoch(n, b, bool(drop_last))
    perms = np.asarray(perm_or_perms)
    if perms.ndim not in (1, 2) or perms.shape[-1] != n or perms.size == 0:
        raise ValueError(f"perm_or_perms must be one permutation of 0..{n - 1} (shape ({n},)) or one per epoch "
                         f"(shape (epochs, {n})); got shape {perms.shape}")
    if not np.issubdtype(perms.dtype, np.integer):
        raise TypeError(f"perm_or_perms must hold integers; got dtype {perms.dtype}")
    rows = perms[None, :] if perms.ndim == 1 else perms
    ref = np.arange(n)
    for e, row in enumerate(rows):
        if not np.array_equal(np.sort(row), ref):
            raise ValueError(f"perm_or_perms[{e}] is not a permutation of 0..{n - 1}: {row.tolist()}")
    epochs_needed = -(-steps // K)
    if perms.ndim == 2 and rows.shape[0] < epochs_needed:
        raise ValueError(f"perm_or_perms has {rows.shape[0]} epoch permutations but {steps} steps of "
                         f"{K} per epoch need {epochs_needed}")
    out = []
    for t in range(steps):
        e, k = divmod(t, K)
        perm = rows[0] if perms.ndim == 1 else rows[e]
        out.append(np.array(perm[k * b:min((k + 1) * b, n)], dtype=np.int64))
    return out


def run_path(problem, theta, lam, step, batches, x0=None, momentum=0.0, estimator="kd"):
    """The deterministic iterates of one path: `x_0, x_1, …, x_T` on given index batches.

    A plain numpy loop with the problem's public gradients — the ground truth that
    ``exact_epoch_moments`` and ``path_identity`` are tested against. Step t computes
    `g = ∇f_B(x_t) − a·T_B + c·T` for estimator ``estimator`` at weight ``lam`` (module
    docstring), then `w ← μw + g`, `x ← x − γw` (torch's heavy ball, `w_0 = 0`).

    Parameters
    ----------
    problem : kdsim.LeastSquares
    theta : array_like
        The teacher θ (d,).
    lam : float
        KD weight λ (any finite real; ignored by "sgd").
    step : float
        Step size γ > 0.
    batches : sequence of array_like
        Index batches `B_0, …, B_{T−1}` (e.g. from ``batch_sequence``); `∇f_B` is the mean
        over the listed indices, so a partial batch is simply a shorter one.
    x0 : array_like, optional
        Start (default: ``problem.default_x0()``, the origin).
    momentum : float
        μ ∈ [0, 1).
    estimator : str
        "sgd", "kd", "kd_loss" or "corrected".

    Returns
    -------
    numpy.ndarray
        Iterates, shape `(T + 1, d)`.
    """
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    lam = V.finite_float("lam", lam)
    step = V.positive_float("step", step)
    mu = _momentum(momentum)
    est = _estimator(estimator)
    batches = _batches(batches, p.n)
    a, c = est.coefficients(lam)
    T_full = p.grad(theta) if est.corrected else None
    x = _x0(p, x0).copy()
    w = np.zeros(p.dim)
    out = np.empty((len(batches) + 1, p.dim))
    out[0] = x
    for t, B in enumerate(batches):
        g = p.grad(x, B)
        if est.uses_teacher:
            TB = p.grad(theta, B) if est.teacher_term == "f" else p.data_grad(theta, B)
            g = g - a * TB
            if est.corrected:
                g = g + c * T_full
        w = mu * w + g
        x = x - step * w
        out[t + 1] = x
    return out


@dataclass(frozen=True, eq=False)
class PathIdentity:
    """Both sides of the path identity of docs/theory.md §5.2 at every step `t = 0 .. T`.

    ``lhs`` = `x_t(λ) − x*` (``run_path`` with estimator "kd"); ``rhs`` =
    `P_t(x_0 − x_λ) + (1 − λ) z_t + λ(θ − x*)`, built from its parts ``homogeneous``
    (`P_t(x_0 − x_λ)`) and ``z`` (`z_t`); ``max_abs_diff[t]`` = `max |lhs_t − rhs_t|`.
    ``x_lambda`` = `(1 − λ)x* + λθ`, and ``fixed_point_residual`` = `‖∇f(x_λ) − λ∇f(θ)‖`
    (≈ 0, with or without a ridge: x_λ is KD's fixed point).
    """

    lhs: np.ndarray
    rhs: np.ndarray
    max_abs_diff: np.ndarray
    homogeneous: np.ndarray
    z: np.ndarray
    x_lambda: np.ndarray
    fixed_point_residual: float


def path_identity(problem, theta, lam, step, batches, x0=None, momentum=0.0):
    """Check `x_t(λ) − x* = P_t(x_0 − x_λ) + (1 − λ) z_t + λ(θ − x*)` on one path (docs/theory.md §5.2).

    The left side runs KD (estimator "kd") with ``run_path``. The right side is assembled
    independently from `H_B` and `g_B = ∇f_B(x*)`: `P_t(x_0 − x_λ)` by the homogeneous
    recursion `w ← μw + H_B e`, `e ← e − γw` from `e_0 = x_0 − x_λ`, `w_0 = 0`, and `z_t` by
    `w ← μw + H_B z + g_B`, `z ← z − γw` from `z_0 = 0` (SGD, or momentum SGD, started at x*).
    Parameters are those of ``run_path``.

    Returns
    -------
    PathIdentity
        Left and right sides, their parts and the per-step maximum absolute difference.
    """
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    lam = V.finite_float("lam", lam)
    step = V.positive_float("step", step)
    mu = _momentum(momentum)
    batches = _batches(batches, p.n)
    x0 = _x0(p, x0)
    xs = p.solution()
    lhs = run_path(p, theta, lam, step, batches, x0=x0, momentum=mu, estimator="kd") - xs
    x_lam = (1.0 - lam) * xs + lam * theta
    resid = float(np.linalg.norm(p.grad(x_lam) - lam * p.grad(theta)))
    T, d = len(batches), p.dim
    hom = np.empty((T + 1, d))
    z = np.empty((T + 1, d))
    e, we = x0 - x_lam, np.zeros(d)
    zz, wz = np.zeros(d), np.zeros(d)
    hom[0], z[0] = e, zz
    for t, B in enumerate(batches):
        H_B = p.hessian(xs, B)
        g_B = p.grad(xs, B)
        we = mu * we + H_B @ e
        e = e - step * we
        wz = mu * wz + H_B @ zz + g_B
        zz = zz - step * wz
        hom[t + 1], z[t + 1] = e, zz
    rhs = hom + (1.0 - lam) * z + lam * (theta - xs)
    return PathIdentity(lhs=lhs, rhs=rhs, max_abs_diff=np.abs(lhs - rhs).max(axis=1), homogeneous=hom, z=z,
                        x_lambda=x_lam, fixed_point_residual=resid)


# ------------------------------------------------------------------ optimal weight
def lambda_opt_epoch(M, c, D2):
    """The epoch-end optimal KD weight `λ_opt = (M − c) / (M + D² − 2c)` (docs/theory.md §5.2).

    It minimises `λ² D² + (1 − λ)² M + 2λ(1 − λ) c`, the error `E‖x_t − x*‖²` of "kd" once
    the transient `P_t(x_0 − x_λ)` has decayed, with `M = E‖z_t‖²`, `c = ⟨θ − x*, E z_t⟩`,
    `D² = ‖θ − x*‖²`. The denominator is `E‖z_t − (θ − x*)‖² >= 0`; where it is 0 the result
    is NaN. Under i.i.d. sampling c = 0 and this is §5's `M / (M + D²)`. Accepts scalars or
    arrays (broadcast); returns a float for scalar input. Unconstrained: it can be negative
    (c > M) — clip to [0, 1] where λ must be a convex weight.
    """
    M_ = V.as_float_array("M", M)
    c_ = V.as_float_array("c", c)
    D2_ = V.as_float_array("D2", D2)
    if np.any(M_ < 0):
        raise ValueError(f"M must be >= 0 (a second moment E‖z‖²); got min {float(M_.min())!r}")
    if np.any(D2_ < 0):
        raise ValueError(f"D2 must be >= 0 (a squared distance ‖θ − x*‖²); got min {float(D2_.min())!r}")
    num = M_ - c_
    den = M_ + D2_ - 2.0 * c_
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


# ------------------------------------------------------------------ exact moments
@dataclass(frozen=True, eq=False)
class EpochMoments:
    """Exact moments at the epoch ends `t = e·K`, `e = 0 .. epochs` (docs/theory.md §5.2).

    Per epoch end (arrays of length `epochs + 1`; ``mean_iterate`` and ``z_mean`` are
    `(epochs + 1, d)`, the ``quad_*`` arrays `(epochs + 1, 3)`):

    * ``dist2_opt`` = `E‖x_t − x*‖²`, ``subopt`` = `E[f(x_t) − f*]`, ``dist2_teacher`` =
      `E‖x_t − θ‖²` and ``mean_iterate`` = `E x_t` at the weight ``lam``;
    * ``quad_dist2_opt``, ``quad_subopt``, ``quad_dist2_teacher``: coefficients `(q0, q1, q2)`
      of the same expectations as quadratics `q0 + q1 λ + q2 λ²` in the weight (the start,
      the batches and the momentum fixed); ``lambda_opt_exact`` = `−q1 / (2 q2)`, the exact
      argmin of `E‖x_t(λ) − x*‖²` at step t, transient included (NaN when `q2 = 0`, e.g.
      estimator "sgd");
    * ``M`` = `E‖z_t‖²`, ``c`` = `⟨θ − x*, E z_t⟩`, ``z_mean`` = `E z_t` (z: SGD's — or momentum
      SGD's — deviation from x* started at x*, on the same batches) and ``lambda_opt`` =
      `(M − c)/(M + D² − 2c)` (``lambda_opt_epoch``), the §5.2 weight for estimator "kd"
      once `P_t(x_0 − x_λ)` is negligible; ``D2`` = `‖θ − x*‖²` (a float).

    ``epochs`` are the epoch numbers, ``steps`` the step counts `e·K`, ``steps_per_epoch`` K,
    ``n_orders`` the number of distinct batch sequences averaged over (subsets per step for
    "iid").
    """

    epochs: np.ndarray
    steps: np.ndarray
    dist2_opt: np.ndarray
    subopt: np.ndarray
    dist2_teacher: np.ndarray
    mean_iterate: np.ndarray
    quad_dist2_opt: np.ndarray
    quad_subopt: np.ndarray
    quad_dist2_teacher: np.ndarray
    lambda_opt_exact: np.ndarray
    M: np.ndarray
    c: np.ndarray
    z_mean: np.ndarray
    D2: float
    lambda_opt: np.ndarray
    sampling: str
    estimator: str
    lam: float
    step: float
    momentum: float
    batch_size: int
    drop_last: bool
    steps_per_epoch: int
    n_orders: int

    def at(self, lam, name="dist2_opt"):
        """An expectation at another weight λ from its quadratic: ``name`` is 'dist2_opt', 'subopt' or
        'dist2_teacher'; returns an array over the epoch ends."""
        V.choice("name", name, ("dist2_opt", "subopt", "dist2_teacher"))
        lam = V.finite_float("lam", lam)
        q = getattr(self, "quad_" + name)
        return q[:, 0] + lam * q[:, 1] + lam * lam * q[:, 2]


class _Maps:
    """Affine step maps G_B of the stacked state (e, w_e, v, w_v, z, w_z, 1) for one problem."""

    def __init__(self, p, theta, step, mu, est):
        self.p, self.d, self.step, self.mu = p, p.dim, step, mu
        self.k = 2 * p.dim if mu else p.dim                      # one block: (error, buffer) or error
        self.D = 3 * self.k + 1
        xs = p.solution()
        self.G = p.sample_grads(xs)                               # g_i = ∇f_i(x*), ridge included
        a1, c1 = est.coefficients(1.0)                            # slopes of (a, c) in λ
        if est.uses_teacher:
            T = p.sample_grads(theta)
            if est.teacher_term == "data":
                T = T - p.ridge_term(p.l2, theta)
        else:
            T = np.zeros((p.n, p.dim))
        self.Tv = -a1 * T + c1 * T.mean(axis=0)                   # per-sample rows of the λ-slope's noise
        self.cache = {}

    def block(self, H_B, xi):
        """(linear part, affine column) of one block."""
        d, g, mu = self.d, self.step, self.mu
        eye = np.eye(d)
        if not mu:
            return eye - g * H_B, -g * xi
        L = np.block([[eye - g * H_B, -g * mu * eye], [H_B, mu * eye]])
        return L, np.concatenate([-g * xi, xi])

    def G_of(self, B):
        """The (D, D) map of batch B (a tuple of indices), cached."""
        if B in self.cache:
            return self.cache[B]
        p, k = self.p, self.k
        idx = np.asarray(B, dtype=np.int64)
        Ab = p.A[idx]
        H_B = Ab.T @ Ab / len(idx) + p.ridge_hessian()
        g_B = self.G[idx].mean(axis=0)
        v_B = self.Tv[idx].mean(axis=0)
        out = np.zeros((self.D, self.D))
        out[-1, -1] = 1.0
        for j, xi in enumerate((g_B, v_B, g_B)):
            L, col = self.block(H_B, xi)
            out[j * k:(j + 1) * k, j * k:(j + 1) * k] = L
            out[j * k:(j + 1) * k, -1] = col
        self.cache[B] = out
        return out

    def start(self, x0):
        s = np.zeros(self.D)
        s[:self.d] = x0 - self.p.solution()
        s[-1] = 1.0
        return s


def _epoch_orders(n, b, drop_last):
    """Distinct sequences of batch sets of one epoch (each from the same number of permutations)."""
    K = steps_per_epoch(n, b, drop_last)
    seen = {}
    for perm in itertools.permutations(range(n)):
        key = tuple(tuple(sorted(perm[k * b:min((k + 1) * b, n)])) for k in range(K))
        seen.setdefault(key, None)
    return list(seen)


def _epoch_maps(maps, orders):
    """Stacked epoch maps A_π = G_{B_{K−1}} ⋯ G_{B_0}, shape (len(orders), D, D)."""
    batches = sorted({B for order in orders for B in order})
    pos = {B: i for i, B in enumerate(batches)}
    Gs = np.stack([maps.G_of(B) for B in batches])
    A = np.broadcast_to(np.eye(maps.D), (len(orders), maps.D, maps.D)).copy()
    K = len(orders[0])
    for k in range(K):
        A = Gs[[pos[order[k]] for order in orders]] @ A
    return A


def _mean_sandwich(A, S):
    """mean_p A_p S A_pᵀ, symmetrised."""
    out = np.einsum("pij,pkj->ik", A @ S, A, optimize=True) / A.shape[0]
    return 0.5 * (out + out.T)


def _sandwich_operator(A, applications):
    """S ↦ mean_p A_p S A_pᵀ for stacked maps A (P, D, D), to be applied ``applications`` times.

    Applied often enough (more than D times, D ≤ ``KRON_MAX_DIM``), the D² × D² matrix
    `mean_p A_p ⊗ A_p` is formed once (`O(P·D⁴)`, one BLAS product) and each application costs
    `O(D⁴)` instead of `O(P·D³)`.
    """
    P, D, _ = A.shape
    if D > KRON_MAX_DIM or applications <= D:
        return lambda S: _mean_sandwich(A, S)
    X = A.reshape(P, D * D)
    Kmat = (X.T @ X / P).reshape(D, D, D, D).transpose(0, 2, 1, 3).reshape(D * D, D * D)

    def apply(S):
        out = (Kmat @ S.ravel()).reshape(D, D)
        return 0.5 * (out + out.T)
    return apply


def exact_epoch_moments(problem, theta, lam, step, epochs, batch_size=1, sampling="reshuffle", drop_last=False,
                        momentum=0.0, estimator="kd", x0=None):
    """Exact epoch-end moments of SGD / KD / corrected KD on least squares under any sampling scheme.

    Enumerates every index sequence the scheme can draw (module docstring; docs/theory.md
    §5.2): "reshuffle" propagates `S = E[s sᵀ]` through `mean_π A_π S A_πᵀ` once per epoch,
    "shuffle_once" follows each permutation's whole path and averages, "iid" propagates S
    through `mean_B G_B S G_Bᵀ` every step (this equals ``kdsim.theory.exact_ls.exact_moments``
    at μ = 0). The momentum μ, the estimator and the partial last batch are handled exactly.

    Cost, with D = 3d + 1 (μ = 0) or 6d + 1 (μ > 0) and N ≤ n! the number of distinct
    sequences of batch sets of an epoch (`n! / (Π_k b_k! · (n − Kb)!)`; 5040 for n = 7, b = 1):
    "reshuffle" `O(n!·n + N·K·D³)` once, then `O(N·D³)` per epoch — or, when there are more
    epochs than D (and D ≤ 40), `O(N·D⁴)` once to form the averaged map `mean_π A_π ⊗ A_π` and
    `O(D⁴)` per epoch; "shuffle_once" the same set-up, then `O(N·D²)` per epoch; "iid"
    `O(C(n, b)·D³)` per step (or the `O(D⁴)` form). Memory `O(N·D² + D⁴)`. n > 7 is refused
    (n = 7, d = 2, μ > 0, 100 epochs of "reshuffle": well under a second).

    Parameters
    ----------
    problem : kdsim.LeastSquares
        With n ≤ 7 (``MAX_ENUM_N``).
    theta : array_like
        Teacher θ.
    lam : float
        KD weight at which ``dist2_opt``, ``subopt``, ``dist2_teacher`` and ``mean_iterate``
        are reported (the ``quad_*`` coefficients give any other weight).
    step : float
        γ > 0.
    epochs : int
        Number of epochs E >= 0; records at `t = e·K`, `e = 0 .. E`.
    batch_size : int
        b, `1 <= b <= n`.
    sampling : str
        "reshuffle", "shuffle_once" or "iid" (``kdsim.rng.SAMPLINGS``).
    drop_last : bool
        K = ⌊n/b⌋ steps per epoch instead of ⌈n/b⌉ (also defines the epoch under "iid").
    momentum : float
        μ ∈ [0, 1).
    estimator : str
        "sgd", "kd", "kd_loss" or "corrected".
    x0 : array_like, optional
        Start (default: the origin).

    Returns
    -------
    EpochMoments
    """
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    lam = V.finite_float("lam", lam)
    step = V.positive_float("step", step)
    epochs = V.int_in_range("epochs", epochs, 0)
    sampling = V.choice("sampling", sampling, SAMPLINGS)
    mu = _momentum(momentum)
    est = _estimator(estimator)
    n = _enum_n(p)
    b = V.int_in_range("batch_size", batch_size, 1, n)
    drop_last = bool(drop_last)
    K = steps_per_epoch(n, b, drop_last)
    x0 = _x0(p, x0)
    maps = _Maps(p, theta, step, mu, est)
    s0 = maps.start(x0)
    D = maps.D

    Ss = np.empty((epochs + 1, D, D))
    Ss[0] = np.outer(s0, s0)
    if sampling == "iid":
        Gs = np.stack([maps.G_of(B) for B in itertools.combinations(range(n), b)])
        n_orders = Gs.shape[0]
        step_map = _sandwich_operator(Gs, epochs * K)
        S = Ss[0]
        for e in range(1, epochs + 1):
            for _ in range(K):
                S = step_map(S)
            Ss[e] = S
    else:
        orders = _epoch_orders(n, b, drop_last)
        n_orders = len(orders)
        A = _epoch_maps(maps, orders)
        if sampling == "reshuffle":
            epoch_map = _sandwich_operator(A, epochs)
            S = Ss[0]
            for e in range(1, epochs + 1):
                S = epoch_map(S)
                Ss[e] = S
        else:
            s = np.broadcast_to(s0, (n_orders, D)).copy()
            for e in range(1, epochs + 1):
                s = np.einsum("pij,pj->pi", A, s)
                Ss[e] = s.T @ s / n_orders
    return _epoch_quantities(p, theta, lam, step, mu, est, maps, Ss, epochs, K, b, sampling, drop_last, n_orders)


def _epoch_quantities(p, theta, lam, step, mu, est, maps, Ss, epochs, K, b, sampling, drop_last, n_orders):
    d, k = p.dim, maps.k
    xs = p.solution()
    delta = theta - xs
    H = p.A.T @ p.A / p.n + p.ridge_hessian()
    ue, ve, ze = slice(0, d), slice(k, k + d), slice(2 * k, 2 * k + d)
    Suu, Suv, Svv = Ss[:, ue, ue], Ss[:, ue, ve], Ss[:, ve, ve]
    m_u, m_v, m_z = Ss[:, ue, -1], Ss[:, ve, -1], Ss[:, ze, -1]
    tr = lambda X: np.trace(X, axis1=1, axis2=2)  # noqa: E731
    trH = lambda X: np.einsum("ij,tji->t", H, X)  # noqa: E731
    q_opt = np.stack([tr(Suu), 2.0 * tr(Suv), tr(Svv)], axis=1)
    q_sub = 0.5 * np.stack([trH(Suu), 2.0 * trH(Suv), trH(Svv)], axis=1)
    q_th = np.stack([tr(Suu) - 2.0 * m_u @ delta + delta @ delta, 2.0 * (tr(Suv) - m_v @ delta), tr(Svv)], axis=1)

    def at(q):
        return q[:, 0] + lam * q[:, 1] + lam * lam * q[:, 2]

    with np.errstate(divide="ignore", invalid="ignore"):
        lam_exact = np.where(q_opt[:, 2] > 0, -q_opt[:, 1] / (2.0 * np.where(q_opt[:, 2] > 0, q_opt[:, 2], 1.0)),
                             np.nan)
    M = tr(Ss[:, ze, ze])
    c = m_z @ delta
    D2 = float(delta @ delta)
    e_idx = np.arange(epochs + 1)
    return EpochMoments(epochs=e_idx, steps=e_idx * K, dist2_opt=at(q_opt), subopt=at(q_sub), dist2_teacher=at(q_th),
                        mean_iterate=xs + m_u + lam * m_v, quad_dist2_opt=q_opt, quad_subopt=q_sub,
                        quad_dist2_teacher=q_th, lambda_opt_exact=lam_exact, M=M, c=c, z_mean=m_z.copy(), D2=D2,
                        lambda_opt=np.atleast_1d(lambda_opt_epoch(np.maximum(M, 0.0), c, D2)),
                        sampling=sampling, estimator=est.name, lam=lam, step=step, momentum=mu, batch_size=b,
                        drop_last=drop_last, steps_per_epoch=K, n_orders=n_orders)
