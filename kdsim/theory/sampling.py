"""Exact minibatch expectations for sampling without replacement (docs/theory.md §1).

A minibatch B of size b is a uniformly random b-subset of {0, …, n−1}. Every
expectation kdsim needs is a finite sum over samples weighted by the inclusion
probabilities

    P(i ∈ B) = b/n,      P(i, j ∈ B) = b(b−1)/(n(n−1))   (i ≠ j),

so nothing here is Monte Carlo. For per-sample vectors v_i with mean v̄ and the
minibatch mean v_B = (1/b) Σ_{i∈B} v_i the polarised ω(b) identity reads

    E⟨u_B, w_B⟩ = ⟨ū, w̄⟩ + ω(b) · (1/n) Σ_i ⟨u_i − ū, w_i − w̄⟩,
    ω(b) = (n − b) / (b (n − 1))        (ω(1) = 1, ω(n) = 0),

and the same weights give the matrix forms E[u_B w_Bᵀ]. Tests compare every
function with brute-force enumeration of all b-subsets.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V


def _nb(n, b):
    n = V.int_in_range("n", n, 1)
    b = V.int_in_range("batch_size", b, 1, n)
    return n, b


def omega(n, b):
    """ω(b) = (n − b) / (b (n − 1)); 0 when n = 1 (the only minibatch is the full set)."""
    n, b = _nb(n, b)
    if n == 1:
        return 0.0
    return (n - b) / (b * (n - 1))


def inclusion_probabilities(n, b):
    """(P(i ∈ B), P(i, j ∈ B) for i ≠ j) for a uniform b-subset without replacement."""
    n, b = _nb(n, b)
    p2 = b * (b - 1) / (n * (n - 1)) if n > 1 else 0.0
    return b / n, p2


def pair_weights(n, b):
    """(w_diag, w_all) with E[X_B ⊗ Y_B]-type sums = w_diag Σ_i X_i·Y_i + w_all (Σ_i X_i)·(Σ_j Y_j).

    For minibatch means X_B = (1/b) Σ_{i∈B} X_i of any per-sample objects and any
    bilinear product ·, E[X_B · Y_B] = (1/b²)[p1 Σ_i X_i·Y_i + p2 Σ_{i≠j} X_i·Y_j]
    = w_diag Σ_i X_i·Y_i + w_all (Σ_i X_i)·(Σ_j Y_j) with w_diag = (p1 − p2)/b²,
    w_all = p2/b².
    """
    p1, p2 = inclusion_probabilities(n, b)
    b = float(b)
    return (p1 - p2) / (b * b), p2 / (b * b)


def _rows(name, V_):
    arr = V.as_float_array(name, V_)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (n, dim) array of per-sample vectors; got shape {arr.shape}")
    return arr


def batch_inner(U, W, batch_size):
    """E⟨u_B, w_B⟩ for per-sample rows U, W (n, dim): the polarised ω(b) identity."""
    U = _rows("U", U)
    W = _rows("W", W)
    if U.shape != W.shape:
        raise ValueError(f"U and W must have the same shape; got {U.shape} and {W.shape}")
    n = U.shape[0]
    om = omega(n, batch_size)
    ubar, wbar = U.mean(axis=0), W.mean(axis=0)
    centred = np.einsum("ij,ij->", U - ubar, W - wbar) / n
    return float(ubar @ wbar + om * centred)


def batch_sq_norm(U, batch_size):
    """E‖u_B‖² = ‖ū‖² + ω(b) (1/n) Σ ‖u_i − ū‖²."""
    return batch_inner(U, U, batch_size)


def batch_outer(U, W, batch_size):
    """E[u_B w_Bᵀ] (dim_u, dim_w) = ū w̄ᵀ + ω(b) (1/n) Σ (u_i − ū)(w_i − w̄)ᵀ."""
    U = _rows("U", U)
    W = _rows("W", W)
    if U.shape[0] != W.shape[0]:
        raise ValueError(f"U and W must have one row per sample; got {U.shape[0]} and {W.shape[0]} rows")
    n = U.shape[0]
    om = omega(n, batch_size)
    ubar, wbar = U.mean(axis=0), W.mean(axis=0)
    return np.outer(ubar, wbar) + om * ((U - ubar).T @ (W - wbar)) / n
