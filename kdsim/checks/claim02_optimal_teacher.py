"""Claim 2 (THEORY.md §8): the optimal teacher gives full variance reduction.

With θ = x*, λ = 1 and a constant step γ the KD estimator ∇f_B(x) − ∇f_B(x*) has no
noise at x*, so

    E‖x_t − x*‖² → 0 linearly, down to machine precision  (E‖x_T − x*‖² ≤ 1e-20),
    with fitted per-step factor ρ ≤ 1 − γμ   (T1′ with x_λ = x*, σ²_λ = 0),

while SGD (λ = 0) with the same γ stalls at a plateau E‖x_∞ − x*‖² > 0.
"""
from __future__ import annotations

import numpy as np

from .. import stats
from ..problems import synthetic
from ..simulate import simulate
from .base import CheckResult, Timer, make_row

CLAIM, NAME = 2, "optimal_teacher"


def _local_mu(problem):
    """Smallest Hessian eigenvalue at x* (ridge problems: no invariant direction left)."""
    return float(np.linalg.eigvalsh(problem.hessian(problem.solution()))[0])


def instances(quick):
    """(label, problem, step, steps) of the instances this check runs."""
    return [
        ("least squares n=200 d=10 κ=10", synthetic.least_squares(200, 10, cond=10.0, seed=0), 0.1,
         3000 if quick else 6000),
        ("softmax n=200 d=5+1 K=3 α=0.1", synthetic.softmax(200, 5, 3, l2=0.1, seed=0), 0.5,
         3000 if quick else 6000),
    ]


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 2; returns a CheckResult (see the module docstring for the claim)."""
    seeds = seeds or (16 if quick else 64)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    with Timer(res):
        for label, p, step, steps in instances(quick):
            xs = p.solution()
            run = simulate(p, xs, [0.0, 1.0], step, steps, seeds, estimator="kd",
                           record_every=max(1, steps // 60), backend=backend)
            kd = run.dist2_opt[1]
            mean, lo, hi, _ = stats.mean_ci(kd[:, -1], level=level)
            res.rows.append(make_row(CLAIM, label, "E‖x_T − x*‖² (KD, θ = x*, λ = 1)", mean, 1e-20, "≤",
                                     ci_low=lo, ci_high=hi))
            m = run.mean("dist2_opt")
            rate = stats.log_linear_rate(run.steps, m[1], floor=1e-24 * max(1.0, m[1][0]))
            mu = _local_mu(p)
            res.rows.append(make_row(CLAIM, label, "fitted per-step factor ρ of E‖x_t − x*‖² vs 1 − γμ",
                                     rate, 1.0 - step * mu, "≤"))
            tail = kd.shape[1] // 2
            sgd_tail = run.dist2_opt[0][:, tail:].mean(axis=1)
            s_mean, s_lo, s_hi, _ = stats.mean_ci(sgd_tail, level=level)
            res.rows.append(make_row(CLAIM, label, "SGD plateau E‖x_t − x*‖² (tail mean) ≥ 1e6 · KD final",
                                     s_mean, 1e6 * max(hi, 1e-300), "≥", ci_low=s_lo, ci_high=s_hi))
            res.curves.append(_curves(run, label))
    return res


def _curves(run, label):
    import pandas as pd
    frames = []
    for k, name in ((0, "SGD (λ = 0)"), (1, "KD θ = x*, λ = 1")):
        mean, lo, hi, _ = stats.mean_ci(run.dist2_opt[k], axis=0)
        frames.append(pd.DataFrame({"instance": label, "method": name, "step": run.steps,
                                    "quantity": "‖x_t − x*‖²", "mean": mean, "ci_low": lo, "ci_high": hi}))
    return pd.concat(frames, ignore_index=True)
