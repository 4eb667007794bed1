"""Seeded synthetic instances with controlled constants, used by checks, tests and benchmarks."""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from .least_squares import LeastSquares


def least_squares(n=200, d=10, cond=10.0, noise=0.5, seed=0, l2=0.0):
    """Least squares whose H = AᵀA/n has eigenvalues spread log-uniformly on [1/cond, 1].

    μ = 1/cond and L = 1 exactly (before a ridge); b = A x_true + noise·N(0, 1).
    """
    n = V.int_in_range("n", n, 1)
    d = V.int_in_range("d", d, 1, n)
    cond = V.positive_float("cond", cond)
    if cond < 1:
        raise ValueError(f"cond must be >= 1; got {cond}")
    noise = V.nonnegative_float("noise", noise)
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    Q, _ = np.linalg.qr(rng.standard_normal((n, d)))
    W, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = np.logspace(0.0, -np.log10(cond), d)
    A = np.sqrt(n) * (Q * np.sqrt(eig)) @ W.T
    b = A @ rng.standard_normal(d) + noise * rng.standard_normal(n)
    return LeastSquares(A, b, l2=l2)


def classification_data(n=200, d=5, n_classes=3, separation=1.0, seed=0):
    """Gaussian class clusters: features (n, d) and labels (n,), seeded."""
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    centres = separation * rng.standard_normal((n_classes, d))
    y = rng.integers(0, n_classes, size=n)
    A = centres[y] + rng.standard_normal((n, d))
    return A, y


def softmax(n=200, d=5, n_classes=3, l2=0.1, bias=True, separation=1.0, seed=0, l2_bias=True):
    """Softmax regression on Gaussian clusters (overlapping, so the optimum is finite);
    ``l2_bias=False`` leaves the bias out of the ridge."""
    from .softmax import SoftmaxRegression
    A, y = classification_data(n, d, n_classes, separation, seed)
    return SoftmaxRegression(A, y, n_classes, bias=bias, l2=l2, l2_bias=l2_bias)


def logistic(n=200, d=5, l2=0.0, seed=0):
    """Logistic regression with labels drawn from a logistic model (not separable)."""
    from .glm import LogisticRegression
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    A = rng.standard_normal((n, d))
    p = 1.0 / (1.0 + np.exp(-(A @ rng.standard_normal(d))))
    return LogisticRegression(A, (rng.random(n) < p).astype(float), l2=l2)


def poisson(n=200, d=5, l2=0.0, seed=0):
    """Poisson regression with counts drawn from a log-linear model."""
    from .glm import PoissonRegression
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    A = 0.3 * rng.standard_normal((n, d))
    return PoissonRegression(A, rng.poisson(np.exp(A @ rng.standard_normal(d))).astype(float), l2=l2)


def deep_linear(n=200, d_in=4, d_out=3, hidden=(4,), loss="squared", noise=0.1, seed=0, whiten=False):
    """Deep linear regression (or classification) with a random linear target map."""
    from .deep_linear import DeepLinear
    rng = np.random.default_rng(V.int_in_range("seed", seed, 0))
    A = rng.standard_normal((n, d_in))
    if whiten:  # E a aᵀ = I exactly on the sample
        A = A @ np.linalg.inv(np.linalg.cholesky(A.T @ A / n)).T
    M = rng.standard_normal((d_out, d_in))
    if loss == "squared":
        Y = A @ M.T + noise * rng.standard_normal((n, d_out))
    else:
        Y = np.argmax(A @ M.T + rng.gumbel(size=(n, d_out)), axis=1)
    return DeepLinear(A, Y, hidden=hidden, loss=loss)
