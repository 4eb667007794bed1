"""Canonical-link generalised linear models: ℓ_i(x) = ψ(a_iᵀx) − y_i a_iᵀx (+ α/2 ‖x‖²).

With z = a_iᵀx: ∇ℓ_i = (ψ'(z) − y_i) a_i and ∇²ℓ_i = ψ''(z) a_i a_iᵀ. The teacher's label
is its mean prediction ψ'(a_iᵀθ); KD is then the same GLM on the mixed labels
(1−λ)y_i + λψ'(a_iᵀθ), so ∇ℓ_i(x | θ, λ) = ∇ℓ_i(x) − λ∇ℓ_i(θ) exactly (docs/theory.md §2).
There is no temperature: only τ = 1 is accepted.

* ``LogisticRegression``: y ∈ {0, 1}, ψ(z) = log(1 + e^z) (stable softplus).
* ``PoissonRegression``: y ≥ 0 counts, ψ(z) = e^z (non-integer y ≥ 0 are accepted: the
  loss is the Poisson quasi-likelihood, as KD's mixed labels need anyway).
"""
from __future__ import annotations

from abc import abstractmethod
from functools import cached_property

import numpy as np
import scipy.special

from .. import _validate as V
from .. import kernelspec as KS
from .base import Problem
from .softmax import (
    NO_OPTIMUM, NewtonFailure, _flag, _improving_direction, _newton, _psd_solve, _with_bias,
)


class GLM(Problem):
    """Canonical-link GLM on data A (n, d) and labels y (n,), optional bias column and ridge.

    Subclasses supply ψ, ψ', ψ'' (``psi``, ``dpsi``, ``d2psi``), the label check, ψ' in
    extended precision and the Bregman divergence of ψ without cancellation.
    """

    name = "glm"
    #: the open range (lo, hi) of the mean function ψ' (used to detect an optimum at infinity)
    mean_range = (-np.inf, np.inf)

    def __init__(self, A, y, l2=0.0, bias=False, l2_bias=True):
        A = V.as_float_array("A", A, ndim=2)
        bias = _flag("bias", bias)
        y = V.as_float_array("y", y, ndim=1)
        if y.shape[0] != A.shape[0]:
            raise ValueError(f"y must have one entry per row of A ({A.shape[0]}); got {y.shape[0]}")
        self._check_labels(y)
        A = _with_bias(A, bias)
        super().__init__(A.shape[0], A.shape[1], l2, l2_bias)
        self.A, self.y, self.bias = A, y, bias
        self._all = np.arange(self.n)
        self._exclude_bias_from_ridge()

    def __repr__(self):
        return (f"{type(self).__name__}(n={self.n}, d'={self.dim}, bias={self.bias}, l2={self.l2:g}"
                f"{self._l2_bias_text()})")

    # family -------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def psi(z):
        """Log-partition ψ(z)."""

    @staticmethod
    @abstractmethod
    def dpsi(z):
        """Mean function ψ'(z)."""

    @staticmethod
    @abstractmethod
    def d2psi(z):
        """Variance function ψ''(z) > 0."""

    @staticmethod
    @abstractmethod
    def _dpsi_extended(z):
        """ψ'(z) on np.longdouble input."""

    @staticmethod
    @abstractmethod
    def _link_refs(z_star):
        """Constants of the family's Bregman divergence at z* (``kdsim.kernelspec``)."""

    @abstractmethod
    def _check_labels(self, y):
        """Raise ValueError (naming ``y``) unless the labels suit the family."""

    def _check_tau(self, temperature):
        if temperature != 1.0:
            raise ValueError(f"temperature must be 1 for {self.name} (a canonical GLM's teacher label "
                             f"ψ'(aᵀθ) has no temperature); got {temperature!r}")

    # data loss and gradients -------------------------------------------------
    def _losses(self, x, idx):
        z = self.A[idx] @ x
        return self.psi(z) - self.y[idx] * z

    def _sample_grads(self, x, idx):
        Ai = self.A[idx]
        return Ai * (self.dpsi(Ai @ x) - self.y[idx])[:, None]

    def _kd_losses(self, x, theta, lam, idx, temperature):
        """(1−λ)·[ψ(z) − y z] + λ·[ψ(z) − ψ'(z_θ) z]: the loss on the true and on the teacher's label."""
        self._check_tau(temperature)
        Ai = self.A[idx]
        z = Ai @ x
        teacher = self.dpsi(Ai @ theta)
        psi = self.psi(z)
        return (1.0 - lam) * (psi - self.y[idx] * z) + lam * (psi - teacher * z)

    def _kd_grad(self, x, theta, lam, idx, temperature):
        """(ψ'(z) − ỹ) a averaged over idx, ỹ = (1−λ)y + λψ'(a ᵀθ) (mixed labels)."""
        self._check_tau(temperature)
        Ai = self.A[idx]
        mixed = (1.0 - lam) * self.y[idx] + lam * self.dpsi(Ai @ theta)
        return Ai.T @ (self.dpsi(Ai @ x) - mixed) / len(idx)

    def _hessian(self, x, idx):
        """Aᵀ diag(ψ''(Ax)) A / b over the rows in idx."""
        Ai = self.A[idx]
        return (Ai * self.d2psi(Ai @ x)[:, None]).T @ Ai / len(idx)

    # batched primitives ------------------------------------------------------
    def _batch_grad(self, X, idx):
        Ab = self.A[idx]                                        # (T, b, d)
        r = self.dpsi(np.einsum("tbd,td->tb", Ab, X)) - self.y[idx]
        return np.einsum("tbd,tb->td", Ab, r) / idx.shape[1]

    def _batch_full_grad(self, X):
        return (self.dpsi(X @ self.A.T) - self.y) @ self.A / self.n

    def _batch_loss(self, X):
        Z = X @ self.A.T
        return np.mean(self.psi(Z) - self.y * Z, axis=1)

    # constants ---------------------------------------------------------------
    def local_sample_smoothness(self, x):
        """λ_max(∇²f_i(x)) = ψ''(a_iᵀx)‖a_i‖² + α (exact: the data Hessian has rank one; with
        ``l2_bias=False`` the eigenvalue of each dense per-sample Hessian)."""
        x = self._x(x)
        if self.l2_mask is not None and self.l2 > 0:
            return super().local_sample_smoothness(x)
        return self.d2psi(self.A @ x) * np.einsum("ij,ij->i", self.A, self.A) + self.l2

    # optimum -----------------------------------------------------------------
    def _solve(self):
        """Damped Newton's method from 0 to ‖∇f‖ ≤ 1e-10 (then a few polishing steps).

        Convergence also requires a negligible next Newton step (‖∇f‖ → 0 at infinity on
        separable data proves nothing). When Newton's method fails with α = 0, its last
        iterate (if it separates strictly) or else a linear program certifies a direction w
        along which the loss decreases for ever (logistic: separable or quasi-separable
        labels; Poisson: a direction that lowers the zero counts' rates without changing the
        others); the ValueError then says that no finite optimum exists and to pass l2 > 0.
        A rank-deficient A without a ridge gives the minimum-norm minimiser.
        """
        full, a2 = self._all, self.l2
        ridge = self.ridge_hessian()

        def loss(x):
            return float(self._losses(x, full).mean() + self._ridge_value(x))

        def grad(x):
            return self._batch_full_grad(x[None])[0] + self.ridge_term(a2, x)

        def solve(x, g):
            return _psd_solve(self._hessian(x, full) + ridge, g)

        try:
            return _newton(loss, grad, solve, np.zeros(self.dim), what=self.name)
        except NewtonFailure as exc:
            if a2 == 0.0 and (self._separates(exc.x) or self._unbounded()):   # certify the cause
                raise ValueError(f"{self.name}: {NO_OPTIMUM}") from None
            raise

    def _free_rows(self):
        """Rows whose logit may move up (y ≥ sup ψ') or down (y ≤ inf ψ') without raising ℓ_i."""
        lo, hi = self.mean_range
        up, down = self.y >= hi, self.y <= lo
        return up, up | down

    def _separates(self, x):
        """Strict certificate from an iterate: every row free and moving its way, s_i a_iᵀx > 0."""
        up, free = self._free_rows()
        if not free.all():
            return False
        m = np.where(up, 1.0, -1.0) * (self.A @ x)
        return bool(np.all(m > 1e-8 * max(1.0, np.abs(m).max())))

    def _unbounded(self):
        """A w with ψ(a_iᵀx + t a_iᵀw) − y_i t a_iᵀw non-increasing in t for every i, some strictly.

        Sample i may move its logit up only if y_i ≥ sup ψ', down only if y_i ≤ inf ψ', and
        must keep it fixed otherwise.
        """
        up, free = self._free_rows()
        M = self.A[free] * np.where(up[free], 1.0, -1.0)[:, None]
        return _improving_direction(M, self.A[~free])

    # cancellation-free suboptimality -----------------------------------------
    def _data_grad_extended(self, x):
        """∇ℓ(x) + αx in extended precision (np.longdouble)."""
        ld = np.longdouble
        A = self.A.astype(ld)
        r = self._dpsi_extended(A @ x.astype(ld)) - self.y
        w = ld(self.l2) if self.l2_mask is None else ld(self.l2) * self.l2_mask.astype(ld)
        return (A.T @ r / ld(self.n) + w * x.astype(ld)).astype(np.float64)

    @cached_property
    def _at_optimum(self):
        """(z* = A x*, ∇f(x*)), cached once."""
        x = self._solution
        return self.A @ x, self._data_grad_extended(x)

    def suboptimality(self, X):
        """f(x) − f* per row of X without cancellation (x* as reference, e = x − x*):

            f(x) − f* = mean_i B_ψ(z*_i + δ_i, z*_i) + ∇f(x*)ᵀe + ½α‖e‖²,   δ = A e,

        with the Bregman divergence B_ψ = ψ(z) − ψ(z*) − ψ'(z*)δ ≥ 0 computed from δ (not
        as a difference of logits); the first-order terms (ψ'(z*) − y)δ and the ridge's αx*ᵀe
        add up to ∇f(x*)ᵀe, evaluated in extended precision.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim not in (1, 2) or X.shape[-1] != self.dim:
            raise ValueError(f"X must have shape ({self.dim},) or (T, {self.dim}); got {X.shape}")
        X = np.atleast_2d(X)
        zs, g = self._at_optimum
        refs = self._link_refs(zs)
        return KS.in_row_blocks(lambda Eb: KS.glm_subopt(np, Eb, self.A, self.link, g, self.l2_weights, refs),
                                X - self._solution, self.record_row_bytes())

    def record_row_bytes(self):
        return 10 * self.n * 8

    # kernel spec -------------------------------------------------------------
    def _spec_structure(self):
        return self.link, self.y[:, None], ((1, self.dim),)

    def _teacher_residuals(self, theta):
        return (self.dpsi(self.A @ theta) - self.y)[:, None]

    def _spec_refs(self):
        zs, g = self._at_optimum
        return {"g_star": g, "x_star_raw": self._solution, **self._link_refs(zs)}


class LogisticRegression(GLM):
    """Logistic regression, y ∈ {0, 1}: ℓ_i = log(1 + e^z) − y z, teacher label σ(a_iᵀθ)."""

    name = "logistic"
    spec_family = "logistic"
    link = "logistic"
    _link_refs = staticmethod(KS.logistic_refs)
    mean_range = (0.0, 1.0)
    smoothness_kind = "bound"

    @staticmethod
    def psi(z):
        return np.logaddexp(0.0, z)

    @staticmethod
    def dpsi(z):
        return scipy.special.expit(z)

    @staticmethod
    def d2psi(z):
        return scipy.special.expit(z) * scipy.special.expit(-z)

    @staticmethod
    def _dpsi_extended(z):
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def _check_labels(self, y):
        if not np.all((y == 0.0) | (y == 1.0)):
            bad = np.unique(y[(y != 0.0) & (y != 1.0)])[:5]
            raise ValueError(f"y must hold binary labels in {{0, 1}} for logistic regression; "
                             f"found {bad.tolist()}")

    def sample_smoothness(self):
        """L_i = ¼‖a_i‖² + α: a bound (also with ``l2_bias=False``), from ψ'' = σ(1 − σ) ≤ ¼ (attained at a_iᵀx = 0)."""
        return 0.25 * np.einsum("ij,ij->i", self.A, self.A) + self.l2


class PoissonRegression(GLM):
    """Poisson regression, counts y ≥ 0: ℓ_i = e^z − y z, teacher label e^{a_iᵀθ}.

    ψ'' = e^z is unbounded, so there is no global smoothness constant
    (``sample_smoothness`` raises); ``local_sample_smoothness(x)`` gives e^{a_iᵀx}‖a_i‖² + α.
    """

    name = "poisson"
    spec_family = "poisson"
    link = "exp"
    _link_refs = staticmethod(KS.poisson_refs)
    mean_range = (0.0, np.inf)

    @staticmethod
    def psi(z):
        return np.exp(z)

    @staticmethod
    def dpsi(z):
        return np.exp(z)

    @staticmethod
    def d2psi(z):
        return np.exp(z)

    @staticmethod
    def _dpsi_extended(z):
        return np.exp(z)

    def _check_labels(self, y):
        if y.min() < 0:
            raise ValueError(f"y must hold counts >= 0 for Poisson regression; got minimum {y.min():g}")
