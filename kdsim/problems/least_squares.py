"""Least squares: f_i(x) = ½ (a_iᵀx − b_i)² (+ α/2 ‖x‖²)."""
from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.linalg

from .. import _validate as V
from .. import kernelspec as KS
from .base import Problem


class LeastSquares(Problem):
    """Least squares on data A (n, d) and targets b (n,), optional ridge ``l2``.

    KD with teacher θ is regression on the mixed labels (1−λ)b_i + λ a_iᵀθ, so
    ∇f_i(x | θ, λ) = ∇f_i(x) − λ∇ℓ_i(θ) exactly (docs/theory.md §2).
    """

    name = "least_squares"
    spec_family = "least_squares"
    smoothness_kind = "exact"

    def __init__(self, A, b, l2=0.0, l2_bias=True):
        A = V.as_float_array("A", A, ndim=2)
        b = V.as_float_array("b", b, ndim=1)
        with np.errstate(over="ignore"):
            gram_ok = np.isfinite(np.einsum("ij,ij->", A, A)) and np.isfinite(b @ b)
        if not gram_ok:
            raise ValueError(f"A and b must be small enough for AᵀA and ‖b‖² to be finite in float64 "
                             f"(largest |A| = {np.abs(A).max():.3g}, |b| = {np.abs(b).max():.3g}); rescale the data")
        if b.shape[0] != A.shape[0]:
            raise ValueError(f"b must have one entry per row of A ({A.shape[0]}); got {b.shape[0]}")
        super().__init__(A.shape[0], A.shape[1], l2, l2_bias)
        self.A, self.b = A, b
        self._exclude_bias_from_ridge()

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, d={self.dim}, l2={self.l2:g}{self._l2_bias_text()})"

    # data loss and gradients -------------------------------------------------
    def _losses(self, x, idx):
        r = self.A[idx] @ x - self.b[idx]
        return 0.5 * r * r

    def _sample_grads(self, x, idx):
        Ai = self.A[idx]
        return Ai * (Ai @ x - self.b[idx])[:, None]

    def _kd_losses(self, x, theta, lam, idx, temperature):
        if temperature != 1.0:
            raise ValueError("temperature must be 1 for least squares (no softmax to temper); "
                             f"got {temperature}")
        Ai = self.A[idx]
        z = Ai @ x
        return 0.5 * (1 - lam) * (z - self.b[idx]) ** 2 + 0.5 * lam * (z - Ai @ theta) ** 2

    def _kd_grad(self, x, theta, lam, idx, temperature):
        if temperature != 1.0:
            raise ValueError("temperature must be 1 for least squares; got " f"{temperature}")
        Ai = self.A[idx]
        mixed = (1 - lam) * self.b[idx] + lam * (Ai @ theta)
        return Ai.T @ (Ai @ x - mixed) / len(idx)

    def _hessian(self, x, idx):
        Ai = self.A[idx]
        return Ai.T @ Ai / len(idx)

    def _solve(self):
        if self.l2 == 0.0:
            x, *_ = scipy.linalg.lstsq(self.A, self.b)  # minimum-norm when rank-deficient
        else:
            H = self.A.T @ self.A / self.n + self.ridge_hessian()
            x = scipy.linalg.solve(H, self.A.T @ self.b / self.n, assume_a="pos")
        # one step of iterative refinement on the normal equations
        H = self.A.T @ self.A / self.n + self.ridge_hessian()
        r = self.A.T @ (self.A @ x - self.b) / self.n + self.ridge_term(self.l2, x)
        dx, *_ = scipy.linalg.lstsq(H, r)
        return x - dx

    def gram_factor(self):
        """Upper-triangular F (min(n, d) × d) with FᵀF = AᵀA/n, from a QR of A; computed once.

        f(x) − f* = ½(‖F(x − x*)‖² + α‖x − x*‖²) without cancellation: the engines'
        suboptimality records. Read-only; cached like x*, so the engines do not refactor
        A on every call (and, like x*, it assumes A is not changed in place afterwards).
        """
        return self._gram_factor

    @cached_property
    def _gram_factor(self):
        F = np.linalg.qr(self.A, mode="r") / np.sqrt(self.n)
        F.setflags(write=False)
        return F

    # constants -------------------------------------------------------------
    def sample_smoothness(self):
        """L_i = ‖a_i‖² + α (exact); with ``l2_bias=False`` λ_max(a_i a_iᵀ + α·diag(mask)) (exact)."""
        if self.l2_mask is not None and self.l2 > 0:
            return np.linalg.eigvalsh(np.einsum("ij,ik->ijk", self.A, self.A) + self.ridge_hessian())[:, -1]
        return np.einsum("ij,ij->i", self.A, self.A) + self.l2

    def local_sample_smoothness(self, x):
        self._x(x)
        return self.sample_smoothness()

    # batched primitives ------------------------------------------------------
    def _batch_grad(self, X, idx):
        Ab = self.A[idx]                                    # (T, b, d)
        r = np.einsum("tbd,td->tb", Ab, X) - self.b[idx]    # residuals
        return np.einsum("tbd,tb->td", Ab, r) / idx.shape[1]

    def _batch_full_grad(self, X):
        return (X @ self.A.T - self.b) @ self.A / self.n

    def _batch_loss(self, X):
        R = X @ self.A.T - self.b
        return 0.5 * np.mean(R * R, axis=1)

    def suboptimality(self, X):
        """f(x) − f* = ½ eᵀ(H + αI)e = ½(‖F e‖² + α‖e‖²), e = x − x* (exact; no cancellation)."""
        E = np.atleast_2d(np.asarray(X, dtype=np.float64)) - self._solution
        return KS.least_squares_subopt(np, E, self._gram_factor, self.l2_weights)

    # kernel spec -------------------------------------------------------------
    def _spec_structure(self):
        return "identity", self.b[:, None], ((1, self.dim),)

    def _teacher_residuals(self, theta):
        return (self.A @ theta - self.b)[:, None]

    def _spec_refs(self):
        return {"F": self._gram_factor, "x_star_raw": self._solution}
