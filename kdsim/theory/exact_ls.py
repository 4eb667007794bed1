"""Exact first and second moments of SGD / KD / corrected KD on least squares (docs/theory.md §5).

No Monte Carlo: the expectations over minibatches (uniform b-subsets without
replacement, P(i ∈ B) = b/n, P(i, j ∈ B) = b(b−1)/(n(n−1))) are finite sums.

One recursion covers every estimator
------------------------------------
Write Ã_i = a_i a_iᵀ + αI (so H_B = (1/b) Σ_{i∈B} Ã_i, H = (1/n) Σ_i Ã_i includes
the ridge), g_i = ∇f_i(x*) and t_i the teacher rows (∇f_i(θ) for "kd" and
"corrected"; ∇ℓ_i(θ) = ∇f_i(θ) − αθ for "kd_loss"). The estimator
g = ∇f_B(x) − a·t_B + c·t̄ (kdsim.estimators) is affine in x, and for any fixed
centre z, e = x − z obeys

    e_{t+1} = (I − γ H_B) e_t − γ ξ_B,    ξ_B = (1/b) Σ_{i∈B} ξ_i,
    ξ_i = Ã_i (z − x*) + g_i − a t_i + c t̄.

The centre is the mean fixed point: x* for "sgd" and "corrected", x_λ = (1−λ)x* + λθ
for "kd" (then ξ_i = (1 − λ) g_i: §5's form), and x* + H⁻¹(λ t̄_data) for "kd_loss"
(= x_λ without ridge; with a ridge α > 0 this is x̃ solving ∇f(x̃) = λ∇ℓ(θ), the
extra bias of docs/theory.md §2, handled exactly). For "corrected",
ξ_i = (1 − λ) g_i − λ (Ã_i − H)(θ − x*) + λ ḡ: the noise is correlated with H_B,
and the cross term below carries that correlation exactly.

With m_t = E e_t and M_t = E e_t e_tᵀ (B independent of e_t), ξ̄ = (1/n) Σ ξ_i:

    m_{t+1} = (I − γH) m_t − γ ξ̄,
    M_{t+1} = 𝒯(M_t) − γ (m_t ξ̄ᵀ + ξ̄ m_tᵀ) + γ² (C_t + C_tᵀ) + γ² Q,
    𝒯(M)    = M − γ(HM + MH) + γ² E[H_B M H_B],
    C_t     = E[H_B m_t ξ_Bᵀ],   Q = E[ξ_B ξ_Bᵀ].

Every E[X_B · Y_B] of minibatch means equals w_d Σ_i X_i·Y_i + w_a (Σ_i X_i)·(Σ_j Y_j)
with w_d = (p1 − p2)/b², w_a = p2/b² (``kdsim.theory.sampling.pair_weights``), and
Σ_i Ã_i M Ã_i = Aᵀ diag(q) A + αn(H_d M + M H_d) + nα² M, q_i = a_iᵀ M a_i, H_d = AᵀA/n:
O(n d²) per step with BLAS, no loop over samples. ξ̄ = ḡ = ∇f(x*) ≈ 0 is kept (not
assumed zero) so that the recursion is the exact expectation of the finite-precision
problem.

Stationary values: m_∞ = −H⁻¹ξ̄ and M_∞ solving (I − 𝒯)M = N(m_∞), in vec
(Kronecker) form for d ≤ 40 (DENSE_MAX_DIM) and by conjugate gradients on a LinearOperator above
(I − 𝒯 is symmetric positive definite when stable). Mean-square stability is
ρ(𝒯) < 1; 𝒯 is self-adjoint and maps PSD matrices to PSD matrices, so ρ(𝒯) is its
largest eigenvalue.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from .. import _validate as V
from ..estimators import get_estimator
from ..plan import record_times
from ..problems.least_squares import LeastSquares
from .constants import expected_smoothness
from .sampling import pair_weights

#: largest d for which the d² × d² Kronecker form is built (stationary solve)
DENSE_MAX_DIM = 40
#: largest d for which ρ(𝒯) comes from a dense eigensolver (Lanczos above)
DENSE_EIG_MAX_DIM = 12
SUPPORTED_ESTIMATORS = ("sgd", "kd", "kd_loss", "corrected")


def _require_ls(problem):
    if not isinstance(problem, LeastSquares):
        raise TypeError("exact moments exist in closed form for least squares only "
                        f"(kdsim.LeastSquares); got {type(problem).__name__}. For other problems use "
                        "Monte Carlo (kdsim.simulate) and kdsim.theory.constants/bounds.")
    return problem


class _LSOperators:
    """Minibatch expectations for one least-squares problem and batch size."""

    def __init__(self, problem, batch_size):
        self.p = _require_ls(problem)
        self.n, self.d = problem.n, problem.dim
        self.b = V.int_in_range("batch_size", batch_size, 1, self.n)
        self.A = problem.A
        self.alpha = problem.l2
        self.r = np.broadcast_to(np.asarray(problem.l2_weights, dtype=np.float64), (self.d,))   # ridge per coordinate
        self.Hd = self.A.T @ self.A / self.n
        self.H = self.Hd + problem.ridge_hessian()
        self.wd, self.wa = pair_weights(self.n, self.b)

    # Σ_i Ã_i M Ã_i
    def S(self, M):
        A, n, al = self.A, self.n, self.alpha
        AM = A @ M
        q = np.einsum("ij,ij->i", AM, A)
        out = A.T @ (q[:, None] * A)
        if al and self.p.l2_mask is None:
            out = out + al * n * (self.Hd @ M + M @ self.Hd) + n * al * al * M
        elif al:      # Ã_i = a_i a_iᵀ + R, R = diag(r) the ridge without the bias
            r = self.r
            out = out + n * ((self.Hd @ M) * r[None, :] + r[:, None] * (M @ self.Hd)) + n * (r[:, None] * M * r[None, :])
        return out

    def EHMH(self, M):
        """E[H_B M H_B]."""
        return self.wd * self.S(M) + self.wa * self.n ** 2 * (self.H @ M @ self.H)

    def T(self, M, step):
        """𝒯(M) = E[(I − γH_B) M (I − γH_B)]."""
        HM = self.H @ M
        return M - step * (HM + M @ self.H) + step * step * self.EHMH(M)

    def C(self, m, Xi):
        """E[H_B m ξ_Bᵀ] for per-sample rows Xi (n, d)."""
        Am = self.A @ m
        diag = self.A.T @ (Am[:, None] * Xi)
        xs = Xi.sum(axis=0)
        if self.alpha:
            diag = diag + (self.alpha * np.outer(m, xs) if self.p.l2_mask is None else np.outer(self.r * m, xs))
        return self.wd * diag + self.wa * self.n * np.outer(self.H @ m, xs)

    def Q(self, Xi):
        """E[ξ_B ξ_Bᵀ]."""
        xs = Xi.sum(axis=0)
        return self.wd * (Xi.T @ Xi) + self.wa * np.outer(xs, xs)

    def T_matrix(self, step):
        """𝒯 as a d² × d² matrix (row-major vec: entry [(i,j),(k,l)] multiplies M_kl; symmetric).

        𝒯 = I − γ(H⊗I + I⊗H) + γ²[w_d Σ_i Ã_i⊗Ã_i + w_a n² H⊗H], assembled in place (one d² × d²
        array plus O(d³) temporaries) with Σ_i A_i⊗A_i = KᵀK, K's rows vec(a_i a_iᵀ).
        """
        d, n, al, g = self.d, self.n, self.alpha, step
        K = (self.A[:, :, None] * self.A[:, None, :]).reshape(n, d * d)
        Tm = K.T @ K
        Tm *= g * g * self.wd
        T4 = Tm.reshape(d, d, d, d)
        # H⊗I and I⊗H parts: −γ(H_ik δ_jl + δ_ik H_jl), plus the ridge part of Σ_i Ã_i⊗Ã_i
        r = self.r
        for j in range(d):
            side = -g * self.H + (g * g * self.wd * r[j] * n) * self.Hd
            T4[:, j, :, j] += side
            T4[j, :, j, :] += side
        cH = g * g * self.wa * n * n
        for i in range(d):
            T4[i] += cH * self.H[i][None, :, None] * self.H[:, None, :]
        Tm[np.diag_indices(d * d)] += 1.0 + np.outer(g * g * self.wd * n * r, r).ravel()
        return Tm

    def spectral_radius(self, step):
        """ρ(𝒯) = largest eigenvalue of the (self-adjoint, PSD-preserving) second-moment operator."""
        d = self.d
        if d <= DENSE_EIG_MAX_DIM:
            Tm = self.T_matrix(step)
            return float(np.linalg.eigvalsh(0.5 * (Tm + Tm.T))[-1])
        op = spla.LinearOperator((d * d, d * d), dtype=np.float64,
                                 matvec=lambda v: self.T(v.reshape(d, d), step).ravel())
        v0 = np.eye(d).ravel() / np.sqrt(d)
        w = spla.eigsh(op, k=1, which="LA", tol=1e-13, v0=v0, return_eigenvectors=False,
                       maxiter=100 * d * d)
        return float(w[0])

    def stationary(self, step, Xi):
        """(m_∞, M_∞) of the recursion with per-sample noise rows Xi; requires ρ(𝒯) < 1."""
        d = self.d
        xbar = Xi.mean(axis=0)
        m = -scipy.linalg.solve(self.H, xbar, assume_a="pos")
        N = (-step * (np.outer(m, xbar) + np.outer(xbar, m))
             + step * step * (self.C(m, Xi) + self.C(m, Xi).T) + step * step * self.Q(Xi))
        if d <= DENSE_MAX_DIM:
            K = self.T_matrix(step)
            K *= -1.0
            K[np.diag_indices(d * d)] += 1.0
            M = np.linalg.solve(K, N.ravel()).reshape(d, d)
        else:
            op = spla.LinearOperator((d * d, d * d), dtype=np.float64,
                                     matvec=lambda v: v - self.T(v.reshape(d, d), step).ravel())
            sol, info = spla.cg(op, N.ravel(), rtol=1e-13, atol=0.0, maxiter=50 * d * d)
            if info != 0:
                raise RuntimeError(f"conjugate gradients did not converge for the stationary second moment (info={info})")
            M = sol.reshape(d, d)
        return m, 0.5 * (M + M.T)


def _check_stable(ops, step):
    w = np.linalg.eigvalsh(ops.H)
    lam_min = float(w[0])
    if lam_min <= 1e-14 * max(1.0, float(w[-1])):
        return float("nan"), ("not stable: H is singular (λ_min(H) = %.3g); the null-space component of "
                              "x_0 − x* never contracts and no stationary distribution exists" % lam_min)
    rho = ops.spectral_radius(step)
    if rho >= 1.0:
        return rho, f"unstable: spectral radius of the second-moment operator ρ = {rho:.6g} ≥ 1 at γ = {step:.6g}"
    return rho, "stable"


def _noise_rows(problem, theta, lam, estimator):
    """(centre z, per-sample noise rows ξ_i (n, d)) for an estimator (module docstring)."""
    est = get_estimator(estimator)
    a, c = est.coefficients(lam)
    x_star = problem.solution()
    G = problem.sample_grads(x_star)                      # g_i (ridge included)
    al = problem.l2
    if not est.uses_teacher:
        return x_star.copy(), G
    T = problem.sample_grads(theta)                       # ∇f_i(θ)
    if est.teacher_term == "data":
        T = T - problem.ridge_term(al, theta)             # ∇ℓ_i(θ)
    tbar = T.mean(axis=0)
    if est.corrected:
        z = x_star.copy()
    elif est.teacher_term == "f" or al == 0.0:
        z = (1.0 - lam) * x_star + lam * theta            # x_λ (ridge included in H)
    else:
        H = problem.A.T @ problem.A / problem.n + problem.ridge_hessian()
        shift = (al * scipy.linalg.solve(H, theta, assume_a="pos") if problem.l2_mask is None
                 else scipy.linalg.solve(H, problem.ridge_term(al, theta), assume_a="pos"))
        z = x_star + lam * (theta - x_star) - lam * shift
    v = z - x_star
    Xi = problem.A * (problem.A @ v)[:, None] + problem.ridge_term(al, v) + G - a * T + c * tbar
    return z, Xi


@dataclass(frozen=True, eq=False)
class ExactMoments:
    """Exact moments at the record steps (docs/theory.md §5) and the stationary values.

    Arrays ``dist2_opt`` = E‖x_t − x*‖², ``subopt`` = E[f(x_t) − f*],
    ``dist2_teacher`` = E‖x_t − θ‖², ``dist2_centre`` = E‖x_t − z‖² (z the mean fixed
    point ``centre``: x_λ for "kd") have one entry per record in ``steps``;
    ``mean_iterate`` is (records, d). ``stationary_*`` are the limits from a direct
    solve (NaN when the recursion is not mean-square stable; see ``status``).
    """

    steps: np.ndarray
    dist2_opt: np.ndarray
    subopt: np.ndarray
    dist2_teacher: np.ndarray
    dist2_centre: np.ndarray          # E‖x_t − z‖², z = ``centre`` (x_λ for "kd": the quantity of T1')
    mean_iterate: np.ndarray
    stationary_dist2_opt: float
    stationary_subopt: float
    stationary_dist2_teacher: float
    stationary_dist2_centre: float
    stationary_mean: np.ndarray
    spectral_radius: float
    stable: bool
    status: str
    estimator: str
    lam: float
    step: float
    batch_size: int
    centre: np.ndarray
    final_second_moment: np.ndarray   # E[(x_T − z)(x_T − z)ᵀ] about ``centre`` at the last step

    def record(self, name):
        """One of 'dist2_opt', 'subopt', 'dist2_teacher' (the names SimResult uses) or 'dist2_centre'."""
        V.choice("name", name, ("dist2_opt", "subopt", "dist2_teacher", "dist2_centre"))
        return getattr(self, name)


def _quantities(ops, m, M, v_opt, v_teacher):
    """(E‖x − x*‖², E[f − f*], E‖x − θ‖²) from moments about the centre z; v_* = z − x*, z − θ."""
    Hm = ops.H @ m
    d_opt = np.trace(M) + 2.0 * v_opt @ m + v_opt @ v_opt
    sub = 0.5 * (np.einsum("ij,ji->", ops.H, M) + 2.0 * v_opt @ Hm + v_opt @ ops.H @ v_opt)
    d_th = np.trace(M) + 2.0 * v_teacher @ m + v_teacher @ v_teacher
    return float(d_opt), float(sub), float(d_th)


class MomentMap:
    """One step of the exact recursion (docs/theory.md §5) as an affine map of the moments about the
    mean fixed point z: m = E x_t − z and M = E[(x_t − z)(x_t − z)ᵀ] for one least-squares problem,
    teacher, λ, step γ, batch size and estimator:

        m' = m − γHm − γ·ξ̄,   M' = 𝒯(M) − γ(m ξ̄ᵀ + ξ̄ mᵀ) + γ²(C(m) + C(m)ᵀ) + γ²Q,

    with ξ_i the per-sample noise rows, C(m) = E[H_B m ξ_Bᵀ] and Q = E[ξ_B ξ_Bᵀ]. ``apply`` takes one step
    (``one`` scales the affine part, so ``one = 0`` gives the linear part); ``matrix`` is the same map as
    a (d² + d + 1)-square matrix on s = (vec M, m, 1), for recursions over many steps by its powers.
    """

    def __init__(self, problem, theta, lam, step, batch_size=1, estimator="kd"):
        p = _require_ls(problem)
        self.ops = _LSOperators(p, batch_size)
        self.step = V.positive_float("step", step)
        V.choice("estimator", estimator, SUPPORTED_ESTIMATORS)
        self.z, self.Xi = _noise_rows(p, theta, 0.0 if estimator == "sgd" else lam, estimator)
        self.xbar = self.Xi.mean(axis=0)
        self.Q = self.ops.Q(self.Xi)
        self.v_opt, self.v_teacher = self.z - p.solution(), self.z - theta
        self.d = p.dim

    def apply(self, m, M, one=1.0):
        """(m', M') after one step from (m, M)."""
        g, ops, xbar = self.step, self.ops, self.xbar
        C = ops.C(m, self.Xi)
        M_new = ops.T(M, g) - g * one * (np.outer(m, xbar) + np.outer(xbar, m)) + g * g * (C + C.T) + g * g * one * self.Q
        return m - g * (ops.H @ m) - g * one * xbar, M_new

    def matrix(self):
        """G with s' = G s for s = (vec M (row-major), m, 1); the M block is ``_LSOperators.T_matrix``."""
        d, g, ops = self.d, self.step, self.ops
        N = d * d
        G = np.zeros((N + d + 1, N + d + 1))
        G[:N, :N] = ops.T_matrix(g)
        eye = np.eye(d)
        for i in range(d):
            C = ops.C(eye[i], self.Xi)
            G[:N, N + i] = (g * g * (C + C.T) - g * (np.outer(eye[i], self.xbar) + np.outer(self.xbar, eye[i]))).ravel()
        G[:N, -1] = g * g * self.Q.ravel()
        G[N:N + d, N:N + d] = eye - g * ops.H
        G[N:N + d, -1] = -g * self.xbar
        G[-1, -1] = 1.0
        return G

    def state(self, x0):
        """s_0 = (vec M_0, m_0, 1) of the deterministic start x0."""
        m0 = np.asarray(x0, dtype=np.float64) - self.z
        return np.concatenate([np.outer(m0, m0).ravel(), m0, [1.0]])

    def moments(self, s):
        """(m, M) of a state s (M symmetrised)."""
        N = self.d * self.d
        M = s[:N].reshape(self.d, self.d)
        return s[N:N + self.d], 0.5 * (M + M.T)

    def quantities(self, m, M):
        """(E‖x − x*‖², E[f − f*], E‖x − θ‖², E‖x − z‖²) at the moments (m, M)."""
        return _quantities(self.ops, m, M, self.v_opt, self.v_teacher) + (float(np.trace(M)),)

    def stationary(self):
        """(m_∞, M_∞), the fixed point of the map; requires ρ(𝒯) < 1."""
        return self.ops.stationary(self.step, self.Xi)


def exact_moments(problem, theta, lam, step, steps, batch_size=1, record_every=1, estimator="kd", x0=None):
    """Exact E‖x_t − x*‖², E[f(x_t) − f*], E‖x_t − θ‖² and E x_t for least squares.

    Parameters mirror ``kdsim.simulate`` (one λ). ``estimator`` is "sgd", "kd",
    "kd_loss" or "corrected" ("svrg" is not covered: its snapshot makes the state
    non-Markov in (m, M)). With a ridge, "kd_loss" (literal KD loss, ridge on the
    student only) is handled exactly: its mean fixed point x̃ solves ∇f(x̃) = λ∇ℓ(θ).
    Instability (ρ(𝒯) ≥ 1) is reported in ``status``; the moments are then the true
    growing expectations (inf once they overflow) and the stationary values are NaN.
    """
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    lam = V.finite_float("lam", lam)
    step = V.positive_float("step", step)
    steps = V.int_in_range("steps", steps, 1)
    record_every = V.int_in_range("record_every", record_every, 1, steps)
    V.choice("estimator", estimator, SUPPORTED_ESTIMATORS + ("svrg",))
    if estimator == "svrg":
        raise ValueError("exact_moments does not cover 'svrg': its snapshot refresh makes the state "
                         "non-Markov in (mean, second moment); valid estimators: "
                         + ", ".join(map(repr, SUPPORTED_ESTIMATORS)))
    mm = MomentMap(p, theta, lam, step, batch_size, estimator)
    ops, z = mm.ops, mm.z
    x0 = p.default_x0() if x0 is None else V.as_vector("x0", x0, p.dim)

    rec = record_times(steps, record_every)
    R = len(rec)
    d_opt, sub, d_th, d_c = np.empty(R), np.empty(R), np.empty(R), np.empty(R)
    mean = np.empty((R, p.dim))
    m = x0 - z
    M = np.outer(m, m)
    k = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            if rec[k] == t:
                d_opt[k], sub[k], d_th[k], d_c[k] = mm.quantities(m, M)
                mean[k] = z + m
                k += 1
                if k == R:
                    break
            m, M_new = mm.apply(m, M)
            M = 0.5 * (M_new + M_new.T)

    rho, status = _check_stable(ops, step)
    if status == "stable":
        m_inf, M_inf = mm.stationary()
        s_opt, s_sub, s_th, s_c = mm.quantities(m_inf, M_inf)
        s_mean = z + m_inf
    else:
        s_opt = s_sub = s_th = s_c = float("nan")
        s_mean = np.full(p.dim, np.nan)
    return ExactMoments(steps=rec, dist2_opt=d_opt, subopt=sub, dist2_teacher=d_th, dist2_centre=d_c,
                        mean_iterate=mean,
                        stationary_dist2_opt=s_opt, stationary_subopt=s_sub, stationary_dist2_teacher=s_th,
                        stationary_dist2_centre=s_c,
                        stationary_mean=s_mean, spectral_radius=rho, stable=status == "stable",
                        status=status, estimator=estimator, lam=lam, step=step, batch_size=ops.b,
                        centre=z, final_second_moment=M)


def spectral_radius(problem, step, batch_size=1):
    """ρ(𝒯) of the second-moment operator 𝒯(M) = E[(I − γH_B) M (I − γH_B)] (stable iff < 1)."""
    ops = _LSOperators(problem, batch_size)
    return ops.spectral_radius(V.positive_float("step", step))


def largest_stable_step(problem, batch_size=1, rtol=1e-10):
    """Largest γ with ρ(𝒯(γ)) < 1, by bisection on (0, 2/λ_max(H)].

    Each Rayleigh quotient of 𝒯(γ) is a convex quadratic in γ, so ρ(𝒯(γ)) is convex,
    equals 1 at γ = 0 and is ≥ 1 at γ = 2/λ_max(H): the stable set is one interval
    (0, γ_c). Raises when H is singular (no step is stable).
    """
    ops = _LSOperators(problem, batch_size)
    rtol = V.positive_float("rtol", rtol, upper=1e-2)
    w = np.linalg.eigvalsh(ops.H)
    if w[0] <= 1e-14 * max(1.0, w[-1]):
        raise ValueError(f"H is singular (λ_min = {w[0]:.3g}): no step size is mean-square stable")
    lo, hi = 0.0, 2.0 / w[-1]
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if ops.spectral_radius(mid) < 1.0:
            lo = mid
        else:
            hi = mid
    return lo


#: largest dimension for which ``step_stability`` evaluates the d²-dimensional operator before a run
STABILITY_MAX_DIM = 128
#: estimators whose linear part is SGD's, x ← (I − γ(H_B + αI))x + noise: they share SGD's stability limit
SGD_LINEAR_ESTIMATORS = ("sgd", "kd", "kd_loss", "corrected")


def step_stability(problem, step, batch_size=1, estimator="kd"):
    """Mean-square stability of a constant step on least squares, for the driver's warning and summaries.

    Returns {} when no limit is known (other problems, SVRG, a singular H, or d > ``STABILITY_MAX_DIM``,
    where the operator is too large to bisect before every run), else ``{"limit": γ_c, "ratio": γ/γ_c,
    "batch_size": b}`` with γ_c = ``largest_stable_step``, or ``limit`` None when the step is stable:
    below the sufficient bound 2/𝓛(b) (E[H_B²] ⪯ 𝓛(b)H, so 𝒯(γ) contracts), or ρ(𝒯(γ)) < 1 at the
    step itself. The bisection runs only for an unstable step; γ_c is cached on the problem per b.
    """
    if not isinstance(problem, LeastSquares) or get_estimator(estimator).name not in SGD_LINEAR_ESTIMATORS:
        return {}
    step = V.positive_float("step", step)
    b = V.int_in_range("batch_size", batch_size, 1, problem.n)
    stable = {"limit": None, "ratio": None, "batch_size": b}
    L = float(np.linalg.eigvalsh(problem.A.T @ problem.A / problem.n)[-1]) + problem.l2
    if step < 2.0 / expected_smoothness(problem.n, b, L, float(problem.sample_smoothness().max())):
        return stable
    if problem.dim > STABILITY_MAX_DIM:
        return {}
    cache = problem.__dict__.setdefault("_stable_step_cache", {})
    if b not in cache:
        if spectral_radius(problem, step, b) < 1.0:
            return stable
        try:
            cache[b] = largest_stable_step(problem, b)
        except ValueError:                        # H singular: γ_c is not defined
            cache[b] = None
    limit = cache[b]
    if limit is None:
        return {}
    return {"limit": float(limit), "ratio": float(step / limit), "batch_size": b}


def mse_sgd(problem, step, batch_size=1):
    """MSE_SGD(γ, b) = tr M_∞ of plain SGD: lim E‖x_t − x*‖² (independent of x_0).

    Raises ValueError when γ is not mean-square stable.
    """
    ops = _LSOperators(problem, batch_size)
    step = V.positive_float("step", step)
    rho, status = _check_stable(ops, step)
    if status != "stable":
        raise ValueError(f"mse_sgd: {status}; use largest_stable_step(problem, batch_size) for the limit")
    G = problem.sample_grads(problem.solution())
    _, M = ops.stationary(step, G)
    return float(np.trace(M))


def stationary_error(problem, theta, lam, step, batch_size=1):
    """lim E‖x_t − x*‖² of KD (distillation gradient of f) = λ² D² + (1 − λ)² MSE_SGD, D = ‖θ − x*‖."""
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    lam = V.finite_float("lam", lam)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    return stationary_error_from(lam, D2, mse_sgd(p, step, batch_size))


def stationary_error_from(lam, teacher_distance2, mse):
    """λ² D² + (1 − λ)² MSE_SGD from D² = ‖θ − x*‖² and MSE_SGD (docs/theory.md §5)."""
    return lam * lam * teacher_distance2 + (1.0 - lam) ** 2 * mse
