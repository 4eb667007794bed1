"""Softmax (multinomial logistic) regression with closed-form derivatives.

Parameters are a weight matrix X ∈ R^{K×d'} flattened row-major into a vector of
length K·d' (row k holds class k's weights; d' = d + 1 with ``bias=True``, the
last feature being a column of ones). With logits z_i = X a_i and p_i = softmax(z_i),

    ℓ_i(X) = −log p_{i, y_i} = lse(z_i) − z_{i, y_i},    ∇ℓ_i(X) = (p_i − e_{y_i}) a_iᵀ,
    ∇²ℓ_i(X) = (diag p_i − p_i p_iᵀ) ⊗ a_i a_iᵀ          (row-major flattening),

and f_i = ℓ_i + (α/2)‖X‖² with α = ``l2`` (added by the base class).

The logits do not change when one vector is added to every row of X, so with
α = 0 the loss is flat along those d' directions and the optimum is a family.
kdsim measures distances in the *class-centred* coordinates (``canonical``:
subtract the mean over classes from each column), the unique representative of
each family with Σ_k X_k = 0. With α > 0 the optimum is unique and already
centred (centring keeps the logits and shrinks the ridge).

The module also holds the numerical helpers shared with ``glm``: the
cancellation-free ``expm1(t) − t``, the damped Newton solver and the linear
program that certifies that no finite optimum exists (separable data).
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.sparse

from .. import _validate as V
from .. import kernelspec as KS
from .base import Problem

#: ‖∇f(x*)‖ that ``_solve`` must reach
GRAD_TOL = 1e-10
#: Newton iterations before ``_solve`` gives up (with a clear error)
MAX_NEWTON = 200


# ----------------------------------------------------------------------------
# shared numerical helpers (also used by kdsim.problems.glm)

def _flag(name, value):
    """A True/False argument."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _with_bias(A, bias):
    """Append a column of ones to A when ``bias`` is set."""
    if bias:
        return np.hstack([A, np.ones((A.shape[0], 1))])
    return A


def _lse(Z):
    """Stable log-sum-exp over the last axis."""
    m = Z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _softmax(Z):
    """Stable softmax over the last axis."""
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def _log_softmax(Z):
    """Stable log-softmax over the last axis."""
    return Z - _lse(Z)[..., None]


#: Taylor coefficients 1/(j+2)! of (e^t − 1 − t)/t², j = 0..18
class NewtonFailure(ValueError):
    """Newton's method did not find a finite optimum; ``x`` is its last iterate."""

    def __init__(self, message, x):
        super().__init__(message)
        self.x = x


def _psd_solve(H, g):
    """Solve H p = g for a symmetric positive semi-definite H.

    Cholesky when H is positive definite; otherwise the minimum-norm least-squares
    solution (SVD with a relative cut-off of 1e-13), which stays in range(H).
    """
    try:
        c = scipy.linalg.cho_factor(H, check_finite=False)
        p = scipy.linalg.cho_solve(c, g, check_finite=False)
        if np.all(np.isfinite(p)):
            return p
    except np.linalg.LinAlgError:
        pass
    p, *_ = scipy.linalg.lstsq(H, g, cond=1e-13, check_finite=False)
    return p


def _newton(loss, grad, solve, x, *, what, project=None, gtol=GRAD_TOL, max_iter=MAX_NEWTON,
            polish=3):
    """Damped Newton's method to ‖∇f‖ ≤ gtol, then up to ``polish`` more full steps.

    ``solve(x, g)`` returns the Newton direction H⁻¹g; ``project`` maps an iterate to an
    equivalent one with no larger loss (softmax: class centring). Backtracking uses the
    Armijo condition; near the optimum, where f differences are below rounding, a step
    is also accepted when f does not rise beyond rounding and ‖∇f‖ falls. Raises
    ValueError (never loops forever) when the tolerance is not reached within
    ``max_iter`` iterations, or when it is reached but the next Newton step is not
    negligible (≤ 1e-6·max(1, ‖x‖)) — the signature of an optimum at infinity.
    """
    project = project or (lambda v: v)
    eps = np.finfo(np.float64).eps
    with np.errstate(over="ignore", invalid="ignore"):   # trial points may overflow: rejected below
        x = project(np.array(x, dtype=np.float64))
        f, g = loss(x), grad(x)
        gn = float(np.linalg.norm(g))
        it = 0
        while gn > gtol and it < max_iter:
            it += 1
            p = solve(x, g)
            slope = float(g @ p)
            if not (np.isfinite(slope) and slope > 0):
                p, slope = g, float(g @ g)          # safeguard: steepest descent
            t = 1.0
            for _ in range(80):
                xn = project(x - t * p)
                fn = loss(xn)
                if np.isfinite(fn):
                    if fn <= f - 1e-4 * t * slope:
                        gnew = grad(xn)
                        break
                    if fn <= f + 64 * eps * max(1.0, abs(f)):
                        gnew = grad(xn)
                        if np.linalg.norm(gnew) < gn:
                            break
                t *= 0.5
            else:
                raise NewtonFailure(f"{what}: Newton's line search made no progress at ‖∇f‖ = {gn:.3e} "
                                 f"(tolerance {gtol:g}); the problem is too badly conditioned for "
                                 "float64 — rescale the data or pass a larger l2", x)
            x, f, g = xn, fn, gnew
            gn = float(np.linalg.norm(g))
        if not (gn <= gtol):
            raise NewtonFailure(f"{what}: Newton's method did not reach ‖∇f‖ <= {gtol:g} in {max_iter} "
                             f"iterations (‖∇f‖ = {gn:.3e}, ‖x‖ = {np.linalg.norm(x):.3e}); the optimum "
                             "may lie at infinity (separable data) — pass l2 > 0", x)
        for _ in range(polish):                     # full steps while they still help
            xn = project(x - solve(x, g))
            gnew = grad(xn)
            gnn = float(np.linalg.norm(gnew))
            if not (gnn < gn):
                break
            x, g, gn = xn, gnew, gnn
        # A small gradient alone proves nothing: on separable data ‖∇f‖ → 0 as ‖x‖ → ∞.
        # At a genuine optimum the next Newton step is ‖H⁻¹∇f‖ ≈ ‖∇f‖/μ, tiny; along a
        # direction of vanishing curvature it stays O(1).
        step = float(np.linalg.norm(solve(x, g)))
        if not step <= 1e-6 * max(1.0, float(np.linalg.norm(x))):
            raise NewtonFailure(f"{what}: Newton's method reached ‖∇f‖ = {gn:.1e}, but its next step "
                             f"still has length {step:.1e} (‖x‖ = {np.linalg.norm(x):.1e}): the loss keeps "
                             "decreasing along a direction of vanishing curvature, so no finite optimum "
                             "exists (or it is numerically degenerate) — pass l2 > 0", x)
    return x


def _improving_direction(M, M_eq=None):
    """Is there a w with M w ≥ 0, M_eq w = 0 and some (M w)_r > 0?  Linear program.

    Each row of M is a "margin" whose growth never increases any per-sample loss and
    strictly decreases one; such a w means the loss decreases for ever along w, so no
    finite minimiser exists. Solved with HiGHS in the box −1 ≤ w ≤ 1, maximising Σ M w.
    Returns True only for a verified certificate (largest margin > 1e-6 of the largest
    possible, every margin ≥ −1e-9 of it, equalities within the same tolerance).
    """
    from scipy.optimize import linprog

    if M.shape[0] == 0:
        return False
    scale = float(abs(M).sum(axis=1).max())
    if scale == 0.0:
        return False
    c = -np.asarray(M.sum(axis=0)).ravel()
    kw = {}
    if M_eq is not None and M_eq.shape[0]:
        kw = {"A_eq": M_eq, "b_eq": np.zeros(M_eq.shape[0])}
    res = linprog(c, A_ub=-M, b_ub=np.zeros(M.shape[0]), bounds=(-1.0, 1.0), method="highs", **kw)
    if res.status != 0:
        return False
    m = np.asarray(M @ res.x).ravel()
    ok = m.max() > 1e-6 * scale and m.min() >= -1e-9 * scale
    if ok and "A_eq" in kw:
        ok = float(abs(np.asarray(M_eq @ res.x)).max()) <= 1e-9 * scale
    return bool(ok)


NO_OPTIMUM = ("no finite optimum exists with l2 = 0: the data are (quasi-)separable, so the loss "
              "keeps decreasing along a direction that increases no sample's loss (a certified "
              "direction was found). Pass l2 > 0 (a ridge) for a unique finite optimum")


def _class_labels(name, y, n, n_classes):
    """Integer class labels in [0, n_classes), one per row of the data."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of class labels; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one label per row of A ({n}); got {arr.shape[0]}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold integer class labels in [0, {n_classes}); got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite integer class labels in [0, {n_classes}); found NaN or inf")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels in [0, {n_classes}); found non-integer values")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{name} labels must lie in [0, {n_classes}) (n_classes = {n_classes}); "
                         f"got range [{lo:g}, {hi:g}]")
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------

class SoftmaxRegression(Problem):
    """Softmax regression on data A (n, d), labels y ∈ {0, …, K−1}, optional bias and ridge.

    KD at temperature τ (Hinton's weighting):
        ℓ_i(X | Θ, λ) = (1−λ)·CE(e_{y_i}, softmax(X a_i)) + λ τ²·CE(softmax(Θ a_i/τ), softmax(X a_i/τ)),
    whose gradient is [(1−λ)(p_i − e_{y_i}) + λτ(p_i^τ − q_i^τ)] a_iᵀ, p^τ = softmax(X a/τ),
    q^τ = softmax(Θ a/τ). At τ = 1 it equals ∇ℓ_i(X) − λ∇ℓ_i(Θ) exactly (docs/theory.md §2);
    at τ ≠ 1 it does not.

    Distances use the class-centred weights (``canonical``). ``solution()`` is the
    centred minimiser; with l2 = 0 it exists only for non-separable data.
    """

    name = "softmax"
    smoothness_kind = "bound"
    spec_family = "softmax"

    def __init__(self, A, y, n_classes, bias=False, l2=0.0, l2_bias=True):
        A = V.as_float_array("A", A, ndim=2)
        K = V.int_in_range("n_classes", n_classes, 2)
        bias = _flag("bias", bias)
        y = _class_labels("y", y, A.shape[0], K)
        A = _with_bias(A, bias)
        super().__init__(A.shape[0], K * A.shape[1], l2, l2_bias)
        self.A = A                      # (n, d'), with the ones column when bias=True
        self.y = y
        self.n_classes = K
        self.n_features = A.shape[1]    # d'
        self.bias = bias
        self._onehot = np.eye(K)[y]
        self._all = np.arange(self.n)
        self._exclude_bias_from_ridge()

    def __repr__(self):
        return (f"{type(self).__name__}(n={self.n}, d'={self.n_features}, classes={self.n_classes}, "
                f"bias={self.bias}, l2={self.l2:g}{self._l2_bias_text()})")

    # layout ----------------------------------------------------------------
    def weights(self, x):
        """The K×d' weight matrix of a flat parameter vector (a view)."""
        return np.asarray(x, dtype=np.float64).reshape(self.n_classes, self.n_features)

    def _W(self, x):
        return x.reshape(self.n_classes, self.n_features)

    def _Ws(self, X):
        return X.reshape(X.shape[0], self.n_classes, self.n_features)

    # data loss and gradients -------------------------------------------------
    def _losses(self, x, idx):
        Z = self.A[idx] @ self._W(x).T
        return _lse(Z) - Z[np.arange(len(idx)), self.y[idx]]

    def _sample_grads(self, x, idx):
        Ai = self.A[idx]
        R = _softmax(Ai @ self._W(x).T) - self._onehot[idx]
        return (R[:, :, None] * Ai[:, None, :]).reshape(len(idx), self.dim)

    def _kd_losses(self, x, theta, lam, idx, temperature):
        tau = temperature
        Ai = self.A[idx]
        Z = Ai @ self._W(x).T
        q = _softmax((Ai @ self._W(theta).T) / tau)              # teacher's soft labels
        ce_true = _lse(Z) - Z[np.arange(len(idx)), self.y[idx]]   # CE(one-hot y, softmax(z))
        ce_soft = -np.sum(q * _log_softmax(Z / tau), axis=1)     # CE(q, softmax(z/τ))
        return (1.0 - lam) * ce_true + lam * tau * tau * ce_soft

    def _kd_grad(self, x, theta, lam, idx, temperature):
        tau = temperature
        Ai = self.A[idx]
        Z = Ai @ self._W(x).T
        q = _softmax((Ai @ self._W(theta).T) / tau)
        R = (1.0 - lam) * (_softmax(Z) - self._onehot[idx]) + lam * tau * (_softmax(Z / tau) - q)
        return (R.T @ Ai).ravel() / len(idx)

    def _hessian(self, x, idx):
        """Mean over idx of (diag p − ppᵀ) ⊗ a aᵀ (row-major layout: entry ((k, j), (l, m)) is
        mean_i S_i[k, l] a_ij a_im, S_i = diag p_i − p_i p_iᵀ).

        Computed as one BLAS product Aᵀ [S ⊙ A] per chunk of samples (temporaries ≤ 2²¹ floats).
        """
        Ai = self.A[idx]
        K, d, b = self.n_classes, self.n_features, len(idx)
        P = _softmax(Ai @ self._W(x).T)
        S = (P[:, :, None] * np.eye(K) - P[:, :, None] * P[:, None, :]).reshape(b, K * K)
        C = np.zeros((d, K * K * d))
        chunk = max(1, (1 << 21) // (K * K * d))
        for s0 in range(0, b, chunk):            # chunks of samples bound the memory
            As, Ss = Ai[s0:s0 + chunk], S[s0:s0 + chunk]
            C += As.T @ (Ss[:, :, None] * As[:, None, :]).reshape(len(As), K * K * d)
        H = C.reshape(d, K, K, d).transpose(1, 0, 2, 3).reshape(self.dim, self.dim) / b
        return 0.5 * (H + H.T)                   # exact symmetry

    # batched primitives ------------------------------------------------------
    def _full_logits(self, X):
        """Logits of every sample for each row of X, (T, n, K), as one 2-d BLAS product."""
        T = X.shape[0]
        Z = self.A @ X.reshape(T * self.n_classes, self.n_features).T           # (n, T·K)
        return Z.reshape(self.n, T, self.n_classes).transpose(1, 0, 2)

    def _batch_grad(self, X, idx):
        Ab = self.A[idx]                                         # (T, b, d')
        R = _softmax(Ab @ self._Ws(X).transpose(0, 2, 1)) - self._onehot[idx]   # (T, b, K)
        return np.einsum("tbk,tbd->tkd", R, Ab).reshape(X.shape[0], self.dim) / idx.shape[1]

    def _batch_full_grad(self, X):
        R = _softmax(self._full_logits(X)) - self._onehot                       # (T, n, K)
        return np.tensordot(R, self.A, axes=([1], [0])).reshape(X.shape[0], self.dim) / self.n

    def _batch_loss(self, X):
        Z = self._full_logits(X)                                                 # (T, n, K)
        zy = np.take_along_axis(Z, self.y[None, :, None], axis=2)[..., 0]
        return np.mean(_lse(Z) - zy, axis=1)

    # constants ---------------------------------------------------------------
    def sample_smoothness(self):
        """L_i = ½‖a_i‖² + α: a bound (also with ``l2_bias=False``), from λ_max(diag p − ppᵀ) ≤ ½ for every p (docs/theory.md §3).

        The bound is attained only when p puts mass ½ on two classes; see
        ``local_sample_smoothness`` for the value at a given x.
        """
        return 0.5 * np.einsum("ij,ij->i", self.A, self.A) + self.l2

    def local_sample_smoothness(self, x):
        """λ_max(∇²f_i(x)) = λ_max(diag p_i − p_i p_iᵀ)·‖a_i‖² + α (exact; Kronecker spectrum)."""
        x = self._x(x)
        P = _softmax(self.A @ self._W(x).T)
        S = np.einsum("ik,kl->ikl", P, np.eye(self.n_classes)) - P[:, :, None] * P[:, None, :]
        top = np.maximum(np.linalg.eigvalsh(S)[:, -1], 0.0)
        return top * np.einsum("ij,ij->i", self.A, self.A) + self.l2

    # invariance --------------------------------------------------------------
    def canonical(self, x):
        """Class-centred weights: subtract from each column of X its mean over the K classes.

        The logits X a change by a common shift under X → X + 1vᵀ, so softmax and the data
        loss do not change; centring picks the unique representative with Σ_k X_k = 0 (the
        orthogonal projection onto the complement of the flat directions). Accepts (dim,)
        or (T, dim).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape ({self.dim},) or (T, {self.dim}); got {x.shape}")
        W = x.reshape(x.shape[:-1] + (self.n_classes, self.n_features))
        return (W - W.mean(axis=-2, keepdims=True)).reshape(x.shape)

    # optimum -----------------------------------------------------------------
    def _solve(self):
        """Newton's method on the class-centred subspace, to ‖∇f‖ ≤ 1e-10.

        Every iterate is centred (centring keeps the logits and does not increase the
        ridge). With α > 0 the Newton system is ∇²f p = ∇f (positive definite). With
        α = 0 the Hessian vanishes on the flat directions 1vᵀ; the system is solved with
        ∇²ℓ + J, J = (1/K)11ᵀ ⊗ I the projector onto them, which equals the pseudo-inverse
        step on centred gradients (minimum-norm if A is rank-deficient). On separable data
        ‖∇f‖ → 0 at infinity, so convergence also requires a negligible next Newton step
        (see ``_newton``); when Newton's method fails with α = 0, its last iterate (strict
        separation) or else a linear program certifies (quasi-)separability, and the
        ValueError says that no finite optimum exists.
        """
        full, a2 = self._all, self.l2
        K, d = self.n_classes, self.n_features
        if a2 > 0 and self.l2_mask is None:
            shift = a2 * np.eye(self.dim)
        else:       # the flat directions 1vᵀ the ridge leaves free (all of them, or v on the bias)
            free = np.ones(d) if a2 == 0 else 1.0 - self.l2_mask[:d]
            shift = self.ridge_hessian() + np.kron(np.full((K, K), 1.0 / K), np.diag(free))

        def loss(x):
            return float(self._losses(x, full).mean() + self._ridge_value(x))

        def grad(x):
            return self._batch_full_grad(x[None])[0] + self.ridge_term(a2, x)

        def solve(x, g):
            return _psd_solve(self._hessian(x, full) + shift, g)

        try:
            return _newton(loss, grad, solve, np.zeros(self.dim), what=self.name, project=self.canonical)
        except NewtonFailure as exc:
            if a2 == 0.0 and (self._separates(exc.x) or self._separable()):   # certify the cause
                raise ValueError(f"{self.name}: {NO_OPTIMUM}") from None
            raise

    def _separates(self, x):
        """Does x separate the classes strictly: z_{i,y_i} > z_{i,k} for every i and k ≠ y_i?

        Newton's iterates on strictly separable data end up there (every ℓ_i < log 2 forces
        it), so this cheap check usually certifies separability without the linear program.
        """
        Z = self.A @ self._W(x).T
        zy = Z[np.arange(self.n), self.y]
        other = np.where(self._onehot > 0, -np.inf, Z).max(axis=1)
        return bool(np.all(zy - other > 1e-8 * max(1.0, np.abs(Z).max())))

    def _separable(self):
        """Certify (quasi-)separability: W with (w_{y_i} − w_k)ᵀa_i ≥ 0 for all i, k, some > 0."""
        n, K, d = self.n, self.n_classes, self.n_features
        ks = np.tile(np.arange(K), (n, 1))
        ks = ks[ks != self.y[:, None]]                     # the other classes, row r ↔ (r // (K−1))
        owner = np.repeat(np.arange(n), K - 1)             # sample of each margin row
        R = n * (K - 1)
        rows = np.repeat(np.arange(R), d)
        feat = np.tile(np.arange(d), R)
        vals = self.A[owner].ravel()
        col_pos = np.repeat(self.y[owner] * d, d) + feat   # +a_i in block y_i
        col_neg = np.repeat(ks * d, d) + feat              # −a_i in block k
        M = scipy.sparse.coo_matrix(
            (np.concatenate([vals, -vals]), (np.concatenate([rows, rows]), np.concatenate([col_pos, col_neg]))),
            shape=(R, self.dim)).tocsr()
        return _improving_direction(M)

    # cancellation-free suboptimality -----------------------------------------
    def _data_grad_extended(self, x):
        """∇ℓ(x) + αx in extended precision (np.longdouble; float64 where that is all there is)."""
        ld = np.longdouble
        A = self.A.astype(ld)
        Z = A @ self._W(x).astype(ld).T
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        R = E / E.sum(axis=1, keepdims=True) - self._onehot
        w = ld(self.l2) if self.l2_mask is None else ld(self.l2) * self.l2_mask.astype(ld)
        G = (R.T @ A).ravel() / ld(self.n) + w * x.astype(ld)
        return G.astype(np.float64)

    @cached_property
    def _at_optimum(self):
        """(p*, log p*, ∇f(x*)) on the full data, cached once."""
        x = self._solution
        Z = self.A @ self._W(x).T
        logp = _log_softmax(Z)
        return np.exp(logp), logp, self._data_grad_extended(x)

    def suboptimality(self, X):
        """f(x) − f* for each row of X, without catastrophic cancellation (x* as reference).

        With e = x − x* (exact in float64 near x*), δ_i = E a_i (the logit change, computed
        from e, not as a difference of logits) and c_i = p*_iᵀδ_i:

            lse(z*+δ) − lse(z*) − δ_y = D_i + (p* − e_y)ᵀδ,
            D_i = log Σ_k p*_k e^{δ_k − c_i} = log1p(Σ_k p*_k h(δ_k − c_i)) ≥ 0,

        h(t) = expm1(t) − t computed without cancellation, so every term of D_i is ≥ 0 (the
        log1p(Σ p* expm1(δ)) form, recentred by c_i). Where max|δ − c| > 1, D_i is a stable
        log-sum-exp of log p* + δ − c instead. The first-order terms sum with the ridge to
        ∇f(x*)ᵀe (∇f(x*) evaluated in extended precision), and the rest of the ridge
        difference α(x*ᵀe + ½‖e‖²) is ½α‖e‖²:

            f(x) − f* = mean_i D_i + ∇f(x*)ᵀe + ½α‖e‖².
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim not in (1, 2) or X.shape[-1] != self.dim:
            raise ValueError(f"X must have shape ({self.dim},) or (T, {self.dim}); got {X.shape}")
        p, logp, g = self._at_optimum
        E = np.atleast_2d(X) - self._solution
        return KS.in_row_blocks(lambda Eb: KS.softmax_subopt(np, Eb, self.A, self.n_classes, p, logp, g,
                                                                  self.l2_weights),
                                E, self.record_row_bytes())

    def record_row_bytes(self):
        return 10 * self.n * self.n_classes * 8

    # kernel spec -------------------------------------------------------------
    def _spec_structure(self):
        return "softmax", self._onehot, ((self.n_classes, self.n_features),)

    def supports_temperature(self):
        return True

    def tempered_teacher_probs(self, theta, temperature):
        theta = self._teacher(theta)
        return _softmax((self.A @ self._W(theta).T) / self._temperature(temperature))

    def _teacher_residuals(self, theta):
        return _softmax(self.A @ self._W(theta).T) - self._onehot

    def _spec_refs(self):
        p, logp, g = self._at_optimum
        return {"p_star": p, "logp_star": logp, "g_star": g, "x_star_raw": self._solution}
