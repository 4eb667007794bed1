"""Gradient-flow closed form of a two-layer linear network (docs/theory.md §7).

Setting: whitened inputs ((1/n) Σ a_i a_iᵀ = I), squared loss
f(W_1, W_2) = (1/n) Σ ½‖W_2W_1 a_i − y_i‖², so ∇_W f = W − Σ_yx for the end-to-end
map W = W_2W_1 and Σ_yx = (1/n) Σ y_i a_iᵀ = U diag(s) Vᵀ. Gradient descent with step γ
is the flow at time t = γ · steps in the small-step limit. From a small *balanced*
initialisation *aligned* with the SVD (W_1 = R diag(√u_0) Vᵀ, W_2 = U diag(√u_0) Rᵀ,
RᵀR = I), the modes decouple and stay balanced: W(t) = U diag(u(t)) Vᵀ with

    du/dt = 2u(s − u),   u(t) = s e^{2st} / (e^{2st} − 1 + s/u_0)

(s = 0: u(t) = u_0 / (1 + 2u_0 t); u_0 = 0 stays 0).

KD with weight λ and an end-to-end teacher Θ̄ replaces Σ_yx by (1 − λ)Σ_yx + λΘ̄; when Θ̄
shares the singular vectors, Θ̄ = U diag(s_teacher) Vᵀ, mode k's target is
s_k(λ) = (1 − λ)s_k + λ s_k(teacher).

Helpers build such an instance (``whitened_instance``), its aligned balanced
initialisation in the ``kdsim.problems.deep_linear.DeepLinear`` parameter layout
(``balanced_aligned_init``) and the predicted end-to-end map over time
(``predicted_map``, ``predicted_trajectory``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _validate as V

#: tolerance on (1/n)AᵀA = I for "whitened" inputs
WHITENING_ATOL = 1e-10


def mode_strength(t, s, u0):
    """u(t) = s e^{2st} / (e^{2st} − 1 + s/u_0), evaluated without overflow; broadcasts.

    For s > 0 computed as s / (1 + (s/u_0 − 1) e^{−2st}); for s < 0 as written
    (e^{2st} ≤ 1); s = 0 gives u_0/(1 + 2u_0 t); u_0 = 0 gives 0. Requires t ≥ 0, u_0 ≥ 0.
    """
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    u0 = np.asarray(u0, dtype=np.float64)
    for name, arr in (("t", t), ("s", s), ("u0", u0)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
    if np.any(t < 0):
        raise ValueError("t must be >= 0 (time = step size × number of steps)")
    if np.any(u0 < 0):
        raise ValueError("u0 must be >= 0 (the mode strength of a balanced initialisation)")
    t, s, u0 = np.broadcast_arrays(t, s, u0)
    out = np.zeros(t.shape)
    live = u0 > 0
    pos = live & (s > 0)
    neg = live & (s < 0)
    zero = live & (s == 0)
    if pos.any():
        sp, up, tp = s[pos], u0[pos], t[pos]
        out[pos] = sp / (1.0 + (sp / up - 1.0) * np.exp(-2.0 * sp * tp))
    if neg.any():
        sn, un, tn = s[neg], u0[neg], t[neg]
        e = np.exp(2.0 * sn * tn)
        out[neg] = sn * e / (e - 1.0 + sn / un)
    if zero.any():
        out[zero] = u0[zero] / (1.0 + 2.0 * u0[zero] * t[zero])
    return float(out) if out.ndim == 0 else out


def kd_mode_targets(s, s_teacher, lam):
    """s_k(λ) = (1 − λ) s_k + λ s_k(teacher)."""
    lam = V.finite_float("lam", lam)
    s = V.as_float_array("s", s)
    s_teacher = V.as_float_array("s_teacher", s_teacher, shape=s.shape)
    return (1.0 - lam) * s + lam * s_teacher


def _check_whitened(A):
    n, d = A.shape
    err = float(np.abs(A.T @ A / n - np.eye(d)).max())
    if err > WHITENING_ATOL:
        raise ValueError(f"inputs must be whitened, (1/n)AᵀA = I (max deviation {err:.3g} > {WHITENING_ATOL:g}); "
                         "the §7 closed form assumes it")


def aligned_modes(target_map, teacher_map=None, lam=0.0, atol=1e-9):
    """(U, s(λ), Vt) of the KD target (1 − λ)Σ_yx + λΘ̄ in Σ_yx's singular basis.

    ``target_map`` is Σ_yx (d_out, d_in); U (d_out, r), Vt (r, d_in), r = min(d_out, d_in).
    With a teacher, s(λ) = (1 − λ)s + λ s_teacher, s_teacher = diag(Uᵀ Θ̄ V); raises unless
    Θ̄ shares the singular vectors (off-diagonal part of UᵀΘ̄V and the part of Θ̄ outside
    span(U)⊗span(V) below ``atol``·max(1, ‖Θ̄‖)).
    """
    S = V.as_float_array("target_map", target_map, ndim=2)
    U, s, Vt = np.linalg.svd(S, full_matrices=False)
    if teacher_map is None:
        return U, s, Vt
    T = V.as_float_array("teacher_map", teacher_map, shape=S.shape)
    C = U.T @ T @ Vt.T
    st = np.diag(C).copy()
    resid = T - U @ np.diag(st) @ Vt
    if np.abs(resid).max() > atol * max(1.0, float(np.abs(T).max())):
        raise ValueError("teacher_map must share the singular vectors of Σ_yx (Θ̄ = U diag(s_teacher) Vᵀ) "
                         f"for the §7 mode form; residual {np.abs(resid).max():.3g}")
    return U, kd_mode_targets(s, st, lam), Vt


def predicted_map(U, s, Vt, u0, times):
    """Predicted end-to-end map W(t) = U diag(u(t)) Vᵀ at each time, shape (len(times), d_out, d_in)."""
    U = V.as_float_array("U", U, ndim=2)
    Vt = V.as_float_array("Vt", Vt, ndim=2)
    s = V.as_float_array("s", s, ndim=1)
    r = s.shape[0]
    if U.shape[1] != r or Vt.shape[0] != r:
        raise ValueError(f"U (d_out, r), s (r,), Vt (r, d_in) must agree on r; got {U.shape}, {s.shape}, {Vt.shape}")
    u0 = np.broadcast_to(np.asarray(u0, dtype=np.float64), (r,))
    times = np.atleast_1d(V.as_float_array("times", times))
    u = mode_strength(times[:, None], s[None, :], u0[None, :])       # (T, r)
    return np.einsum("ik,tk,kj->tij", U, u, Vt)


def balanced_aligned_init(U, Vt, u0, hidden, seed=None):
    """Flat parameters (W_1, W_2 row-major, the DeepLinear layout) of a balanced aligned start.

    W_1 = R diag(√u_0) Vᵀ (hidden × d_in), W_2 = U diag(√u_0) Rᵀ (d_out × hidden), R (hidden × r)
    with orthonormal columns (identity columns, or random with ``seed``); the end-to-end map is
    U diag(u_0) Vᵀ and W_2ᵀW_2 = W_1W_1ᵀ. Needs hidden ≥ r (modes beyond the width: set u_0 = 0
    and pass only the first ``hidden`` columns).
    """
    U = V.as_float_array("U", U, ndim=2)
    Vt = V.as_float_array("Vt", Vt, ndim=2)
    r = U.shape[1]
    hidden = V.int_in_range("hidden", hidden, r)
    u0 = np.broadcast_to(np.asarray(u0, dtype=np.float64), (r,))
    if np.any(u0 < 0) or not np.all(np.isfinite(u0)):
        raise ValueError("u0 must be finite and >= 0")
    if seed is None:
        R = np.eye(hidden, r)
    else:
        G = np.random.default_rng(V.int_in_range("seed", seed, 0)).standard_normal((hidden, r))
        R, _ = np.linalg.qr(G)
    root = np.sqrt(u0)
    W1 = (R * root) @ Vt
    W2 = (U * root) @ R.T
    return np.concatenate([W1.ravel(), W2.ravel()])


@dataclass(frozen=True, eq=False)
class WhitenedInstance:
    """Data with (1/n)AᵀA = I and Σ_yx = U diag(s) Vᵀ; ``teacher_map`` = U diag(s_teacher) Vᵀ."""

    A: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    teacher_map: np.ndarray | None

    def problem(self, hidden, l2=0.0):
        """A two-layer ``DeepLinear`` (squared loss) on this data with one hidden layer."""
        from ..problems.deep_linear import DeepLinear
        return DeepLinear(self.A, self.Y, hidden=(V.int_in_range("hidden", hidden, 1),), loss="squared", l2=l2)


def whitened_instance(n, d_in, d_out, s, s_teacher=None, noise=0.5, seed=0):
    """Build whitened inputs and targets with prescribed singular values of Σ_yx.

    A = √n·Q (QᵀQ = I) so (1/n)AᵀA = I exactly (to rounding); Y = A Σ_yxᵀ + N with the
    noise N orthogonal to the columns of A (it changes the loss, not Σ_yx); U, V random
    orthonormal. ``s`` has r = min(d_in, d_out) entries; ``s_teacher`` (same length) gives a
    teacher map with the same singular vectors.
    """
    n = V.int_in_range("n", n, 2)
    d_in = V.int_in_range("d_in", d_in, 1, n - 1)
    d_out = V.int_in_range("d_out", d_out, 1)
    r = min(d_in, d_out)
    s = V.as_float_array("s", s, shape=(r,))
    noise = V.nonnegative_float("noise", noise)
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    Q, _ = np.linalg.qr(rng.standard_normal((n, d_in + d_out)))
    A = np.sqrt(n) * Q[:, :d_in]
    U, _ = np.linalg.qr(rng.standard_normal((d_out, r)))
    Vm, _ = np.linalg.qr(rng.standard_normal((d_in, r)))
    S = U @ np.diag(s) @ Vm.T
    N = rng.standard_normal((n, d_out))
    N = N - Q[:, :d_in] @ (Q[:, :d_in].T @ N)
    Y = A @ S.T + noise * N
    T = None
    if s_teacher is not None:
        s_teacher = V.as_float_array("s_teacher", s_teacher, shape=(r,))
        T = U @ np.diag(s_teacher) @ Vm.T
    _check_whitened(A)
    return WhitenedInstance(A=A, Y=Y, U=U, s=s, Vt=Vm.T, teacher_map=T)


def predicted_trajectory(A, Y, u0, times, teacher_map=None, lam=0.0):
    """Predicted end-to-end maps (len(times), d_out, d_in) of full-batch small-step GD (KD weight λ).

    ``A`` (n, d_in) must be whitened; Σ_yx = YᵀA/n; ``u0`` the initial mode strengths
    (scalar or r values) of a balanced start aligned with Σ_yx's SVD; times t = γ · steps.
    """
    A = V.as_float_array("A", A, ndim=2)
    Y = V.as_float_array("Y", Y, ndim=2)
    if Y.shape[0] != A.shape[0]:
        raise ValueError(f"Y must have one row per row of A ({A.shape[0]}); got {Y.shape}")
    _check_whitened(A)
    S = Y.T @ A / A.shape[0]
    U, s_lam, Vt = aligned_modes(S, teacher_map, lam)
    return predicted_map(U, s_lam, Vt, u0, times)
