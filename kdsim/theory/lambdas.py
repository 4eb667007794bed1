"""Optimal KD weights (docs/theory.md §6), each tagged with its source.

With c0 = σ²_*, c1 = E⟨∇f_B(x*), ∇f_B(θ)⟩, c2 = E‖∇f_B(θ)‖² and B = ‖∇f(θ)‖ from a
``Constants`` (σ²_*(λ,θ) = c0 − 2λc1 + λ²c2):

| function | value | source |
|---|---|---|
| ``lambda_hat`` | c1 / c2 (minimises σ²_*(λ,θ) alone) | derived |
| ``lambda_star_t1(γ)`` | γ c1 / (γ c2 + B²/μ) (minimises T1's neighbourhood (4γ/μ)σ²_*(λ,θ) + (4λ²/μ²)B²) | derived |
| ``lambda_star_t2(γ)`` | 2Lγ c1 / (2Lγ c2 + B²) (minimises T2's neighbourhood (2Lγ/μ)σ²_*(λ,θ) + (λ²/μ)B²) | derived |
| ``lambda_star_published`` | c1 / (c2 + B²/γ) | as published |
| ``lambda_opt`` | MSE_SGD / (MSE_SGD + D²), least squares, exact | derived |

Each function carries a ``source`` attribute ("derived" or "as published").
``all_lambdas(constants, γ)`` collects the first four; ``all_lambdas(constants, γ, problem)``
adds ``lambda_opt`` when ``problem`` is least squares.
A ratio whose denominator vanishes (e.g. c2 = 0: a teacher with no gradient noise
and no bias) is NaN.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from ..problems.least_squares import LeastSquares
from .constants import Constants
from .exact_ls import _require_ls, mse_sgd

DERIVED = "derived"
AS_PUBLISHED = "as published"


def _source(tag):
    def deco(fn):
        fn.source = tag
        return fn
    return deco


def _ratio(num, den):
    return float(num / den) if den != 0 else float("nan")


def _c(constants):
    if not isinstance(constants, Constants):
        raise TypeError(f"constants must be a kdsim.theory Constants; got {type(constants).__name__}")
    return constants


@_source(DERIVED)
def lambda_hat(constants):
    """λ̂ = E⟨∇f_B(x*), ∇f_B(θ)⟩ / E‖∇f_B(θ)‖²: the argmin of the KD noise σ²_*(λ, θ) alone.

    At λ̂ the noise is (1 − ρ²)σ²_* (variance reduction factor 1 − ρ²).
    """
    c = _c(constants)
    return _ratio(c.cross_star_teacher, c.teacher_second_moment)


@_source(DERIVED)
def lambda_star_t1(constants, gamma):
    """λ*_T1(γ) = γ c1 / (γ c2 + ‖∇f(θ)‖²/μ): minimises the T1 neighbourhood; → 0 like γ."""
    c = _c(constants)
    gamma = V.positive_float("gamma", gamma)
    if not c.mu > 0:
        raise ValueError(f"lambda_star_t1 needs μ > 0; got μ = {c.mu}")
    return _ratio(gamma * c.cross_star_teacher, gamma * c.teacher_second_moment + c.teacher_bias ** 2 / c.mu)


@_source(DERIVED)
def lambda_star_t2(constants, gamma):
    """λ*_T2(γ) = 2Lγ c1 / (2Lγ c2 + ‖∇f(θ)‖²): minimises the T2 neighbourhood (μ cancels)."""
    c = _c(constants)
    gamma = V.positive_float("gamma", gamma)
    k = 2.0 * c.L * gamma
    return _ratio(k * c.cross_star_teacher, k * c.teacher_second_moment + c.teacher_bias ** 2)


@_source(AS_PUBLISHED)
def lambda_star_published(constants, gamma):
    """λ*_published(γ) = E⟨∇f_ξ(x*), ∇f_ξ(θ)⟩ / (E‖∇f_ξ(θ)‖² + (1/γ)‖∇f(θ)‖²), as quoted.

    The expectations over a single sample ξ are taken over the Constants' minibatch
    (ξ ↔ B; b = 1 is the quoted form). Scale dependence: γ has units of 1/L, so
    (1/γ)‖∇f(θ)‖² carries one more power of the data scale than E‖∇f_ξ(θ)‖².
    Rescaling the data a_i → s·a_i, b_i → s·b_i multiplies every gradient by s² and
    L by s²; the step with the same γL (same dynamics) is γ/s², so the numerator and
    the first denominator term scale as s⁴ while (1/γ)‖∇f(θ)‖² scales as s⁶: the
    formula's value changes under a rescaling that leaves the optimisation problem
    unchanged. λ*_T1 (γ c2 vs ‖∇f(θ)‖²/μ, both ∝ s⁴·s⁻²) and λ*_T2 are invariant.
    """
    c = _c(constants)
    gamma = V.positive_float("gamma", gamma)
    return _ratio(c.cross_star_teacher, c.teacher_second_moment + c.teacher_bias ** 2 / gamma)


@_source(DERIVED)
def lambda_opt(problem, theta, step, batch_size=1):
    """Exact optimal KD weight on least squares: λ_opt = MSE_SGD / (MSE_SGD + D²), D = ‖θ − x*‖.

    It minimises the exact stationary error λ²D² + (1 − λ)² MSE_SGD(γ, b) (docs/theory.md §5);
    its error MSE_SGD·D²/(MSE_SGD + D²) beats both λ = 0 and λ = 1.
    """
    p = _require_ls(problem)
    theta = p.check_teacher(theta)
    mse = mse_sgd(p, step, batch_size)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    return lambda_opt_from(D2, mse)


def lambda_opt_from(teacher_distance2, mse):
    """λ_opt = MSE_SGD / (MSE_SGD + D²) from D² = ‖θ − x*‖² and MSE_SGD (NaN when both are 0)."""
    return _ratio(mse, mse + teacher_distance2)


def all_lambdas(constants, gamma, problem=None, theta=None, batch_size=None):
    """Every theoretical KD weight at step γ: {name: (value, source)}.

    Parameters
    ----------
    constants : Constants
        From ``kdsim.theory.constants`` (problem, teacher, batch size).
    gamma : float
        Step size γ > 0.
    problem : LeastSquares, optional
        With a least-squares problem the exact ``lambda_opt`` (§5) is added; with any other
        problem, or none, it is left out (the exact optimum has a closed form on least
        squares only), so ``all_lambdas(constants, gamma)`` keeps its four entries.
    theta : array_like, optional
        The teacher for ``lambda_opt`` (default: the one ``constants`` was computed for).
    batch_size : int, optional
        b for ``lambda_opt`` (default: ``constants.batch_size``, so that every entry refers
        to the same minibatch size).

    Returns
    -------
    dict
        ``lambda_hat``, ``lambda_star_t1``, ``lambda_star_t2``, ``lambda_star_published`` and,
        on least squares, ``lambda_opt``; each ``(value, source)`` with source "derived" or
        "as published". ``lambda_opt`` is for the distillation gradient of f (estimator "kd")
        and raises ValueError, like ``lambda_opt``, for a step that is not mean-square stable.
    """
    out = {}
    for fn, args in ((lambda_hat, ()), (lambda_star_t1, (gamma,)), (lambda_star_t2, (gamma,)),
                     (lambda_star_published, (gamma,))):
        out[fn.__name__] = (fn(constants, *args), fn.source)
    if problem is not None and isinstance(problem, LeastSquares):
        theta = _c(constants).theta if theta is None else theta
        b = constants.batch_size if batch_size is None else batch_size
        out["lambda_opt"] = (lambda_opt(problem, theta, gamma, b), lambda_opt.source)
    return out
