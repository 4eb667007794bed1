"""Claim 2 (THEORY.md §8): the optimal teacher gives full variance reduction.

With θ = x*, λ = 1 and a constant step γ the KD estimator ∇f_B(x) − ∇f_B(x*) has no
noise at x*: x_λ = x* and σ²_λ = 0 in T1′, so for γ ≤ 1/(2L_max)

    E‖x_t − x*‖² ≤ (1 − γμ)^t ‖x_0 − x*‖²     (T1′; every record, upper 99% CI),

the fitted per-step factor ρ ≤ 1 − γμ, and E‖x_T − x*‖² reaches machine precision (≤ 1e-20).
SGD (λ = 0) with the same γ stalls at a plateau E‖x_∞ − x*‖² > 0; for least squares it
equals MSE_SGD(γ, b) of the exact recursion (THEORY §5) within its 99% interval.
"""
from __future__ import annotations

import numpy as np

from .. import stats, theory
from ..problems import LeastSquares, synthetic
from .base import CheckResult, Timer, check_seeds, make_row, simulate

CLAIM, NAME = 2, "optimal_teacher"
TARGET = 1e-20


def instances():
    """(label, problem, batch size) of the instances this check runs."""
    return [
        ("least squares n=200 d=5 κ=4", synthetic.least_squares(200, 5, cond=4.0, seed=0), 1),
        ("least squares n=200 d=5 κ=4, b=10", synthetic.least_squares(200, 5, cond=4.0, seed=0), 10),
        ("softmax n=200 d=2+1 K=3 α=0.3", synthetic.softmax(200, 2, 3, l2=0.3, seed=0), 1),
    ]


def steps_to_target(c, gamma, dist0):
    """Steps after which the T1′ bound (1 − γμ)^t ‖x_0 − x*‖² falls below TARGET / 10."""
    return int(np.ceil(np.log(max(dist0, TARGET) / (TARGET / 10)) / -np.log1p(-gamma * c.mu)))


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 2
MIN_SEEDS_REASON = "Student-t intervals across seeds need two"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 2; returns a CheckResult (see the module docstring for the claim)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    seeds = seeds or (16 if quick else 128)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    with Timer(res):
        for label, p, b in instances():
            xs, x0 = p.solution(), p.default_x0()
            c = theory.constants(p, xs, batch_size=b)
            gamma = 1.0 / (2.0 * c.L_max)                       # the largest step T1′ allows
            bound = theory.t1_prime(c, gamma, 1.0, x0)
            dist0 = float(np.sum((p.canonical(x0) - p.canonical(xs)) ** 2))
            steps = steps_to_target(c, gamma, dist0)
            run = simulate(p, xs, [0.0, 1.0], gamma, steps, seeds, batch_size=b, estimator="kd",
                           record_every=max(1, steps // 80), backend=backend)
            tag = f"{label}, γ = 1/(2L_max), μ {c.provenance['mu']}"
            kd = run.dist2_opt[1]
            mean, lo, hi, _ = stats.mean_ci(kd[:, -1], level=level)
            res.rows.append(make_row(CLAIM, tag, "E‖x_T − x*‖² (KD, θ = x*, λ = 1)", mean, TARGET, "≤",
                                     ci_low=lo, ci_high=hi))
            m, _, upper, _ = stats.mean_ci(kd, axis=0, level=level)
            later = run.steps > 0                                  # at t = 0 both equal ‖x_0 − x*‖²
            ratio = np.max(upper[later] / bound.curve(run.steps[later]))
            res.rows.append(make_row(CLAIM, tag, "max_{t>0} upper CI of E‖x_t − x*‖² / T1′ bound", ratio, 1.0, "≤"))
            fit = stats.fit_rate(run.steps, kd, level=level, plateau_level=0.0, rel_floor=1e-18)
            res.rows.append(make_row(CLAIM, tag, f"fitted per-step factor ρ (steps {fit.window[0]}–{fit.window[1]}) "
                                     "vs T1′ rate 1 − γμ", fit.rate, bound.rate, "≤",
                                     ci_low=fit.ci_low, ci_high=fit.ci_high))
            sgd = stats.plateau(run.steps, run.dist2_opt[0], level=level)
            if isinstance(p, LeastSquares):
                exact = theory.mse_sgd(p, gamma, b)
                res.rows.append(make_row(CLAIM, tag, "SGD plateau E‖x_∞ − x*‖² vs exact MSE_SGD (§5)",
                                         sgd.mean, exact, "≈", tolerance=max(sgd.ci_high - sgd.mean, sgd.mean - sgd.ci_low),
                                         ci_low=sgd.ci_low, ci_high=sgd.ci_high))
            res.rows.append(make_row(CLAIM, tag, "SGD plateau E‖x_∞ − x*‖² ≥ 1e6 · KD's final upper CI",
                                     sgd.mean, 1e6 * max(hi, 1e-300), "≥", ci_low=sgd.ci_low, ci_high=sgd.ci_high))
            res.curves.append(_curves(run, label, bound, b, gamma, p.canonical(xs)))
    return res


#: the figure's title
TITLE = ("Claim 2: with the optimal teacher (θ = x*, λ = 1) KD converges linearly to x*, down to float64 "
         "round-off, while SGD stalls at its plateau")


def roundoff_floor(point):
    """Σ_j ulp(point_j)²: the squared distance to ``point`` of an iterate one float64 spacing away in
    every coordinate, the level at which a curve converging to ``point`` meets round-off."""
    point = np.asarray(point, dtype=np.float64)
    return float(np.sum(np.spacing(np.maximum(np.abs(point), np.finfo(np.float64).tiny)) ** 2))


def floor_attrs(point, what="x*"):
    """The ``floor`` a curve frame carries for ``report.plots``: the round-off level of ``point``."""
    return {"value": roundoff_floor(point), "short": "float64 round-off",
            "label": f"float64 round-off: one ulp from {what} in every coordinate"}


def _curves(run, label, bound, b, gamma, xs):
    import pandas as pd
    inst = f"{label.split(', b=')[0]}, b={b}, γ = 1/(2L_max) = {gamma:.3g}"
    frames = []
    for k, series in ((0, "SGD (λ = 0)"), (1, "KD, θ = x*, λ = 1")):
        mean, lo, hi, _ = stats.mean_ci(run.dist2_opt[k], axis=0)
        frames.append(pd.DataFrame({"instance": inst, "series": series, "method": "Monte Carlo", "kind": "mc",
                                    "step": run.steps, "quantity": "‖x_t − x*‖²", "mean": mean, "ci_low": lo,
                                    "ci_high": hi}))
    curve = bound.curve(run.steps)
    frames.append(pd.DataFrame({"instance": inst, "series": "KD, θ = x*, λ = 1", "method": r"T1′ bound $(1-\gamma\mu)^t\,\|x_0-x^*\|^2$",
                                "kind": "bound", "step": run.steps, "quantity": "‖x_t − x*‖²", "mean": curve,
                                "ci_low": curve, "ci_high": curve}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(title=TITLE, floor=floor_attrs(xs))
    return out
