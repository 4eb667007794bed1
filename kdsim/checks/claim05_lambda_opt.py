"""Claim 5 (THEORY.md §8): the exact optimal KD weight λ_opt scales like γ and tends to 1 as θ → x*.

On least squares the stationary error λ²D² + (1 − λ)²MSE_SGD(γ, b) (§5) is minimised by
λ_opt = MSE_SGD / (MSE_SGD + D²), D = ‖θ − x*‖. Rows:

* λ_opt ∝ γ (fixed imperfect teacher). To first order in γ the stationary covariance of SGD is
  γΣ with HΣ + ΣH = E[g_B g_Bᵀ], g_B = ∇f_B(x*) (Lyapunov equation, solved independently of
  ``theory``), so λ_opt/γ → K = tr Σ / D². At the three smallest γ of a grid, λ_opt(γ)/γ ≈ K with
  the Richardson tolerance 1.5·|λ_opt(γ)/γ − λ_opt(2γ)/(2γ)|: a deviation cγ^p from K passes
  when |1 − 2^p|·1.5 ≥ 1, i.e. p ≥ 0.74 (p = 1 for the analytic first-order correction), and
  fails for a constant offset (p = 0) or one that grows as γ → 0 (p < 0, e.g. a floor in
  MSE_SGD).
* λ_opt → 1 as θ → x*: teachers at r = 1, 0.3, 0.1, 0.03, 0.01 in one direction; each step
  towards x* raises λ_opt (one row per comparison, difference ≥ 0); at r = 0.01,
  1 − λ_opt ≈ D²/MSE_SGD within (D²/MSE_SGD)² (the next term of x/(1 + x)); θ = x* gives
  λ_opt = 1 (to 1e-12).
* λ_opt equals the argmin over λ of the stationary solve of the λ-recursion (§5, through
  three λ: the error is a quadratic in λ), relative 1e-8.
* Empirical optimum: with common random numbers the least-squares iterates are affine in λ
  (§5.1), so per-seed plateau values (average over the last half of the records) at
  λ ∈ {0, 0.5, 1} give each seed's exact quadratic; its seed-mean's argmin has a bootstrap
  interval (``stats.lambda_opt_from_quadratics``, Bonferroni level over the rows), joined with a
  delta-method Student-t interval (the percentile bootstrap undercovers with few seeds). Row: exact
  λ_opt inside it, tolerance = the half-width on the side of λ_opt + |λ_T − λ_∞| (the argmins
  of the exact recursion's finite-horizon plateau at the same records and of its stationary
  solve: the remaining transient). Paired rows: the mean plateau at λ_opt over the mean plateau
  at λ = 0 and at λ = 1 (paired seed bootstrap) has upper limit ≤ 1 (the optimum beats both
  ends), and the plateau at λ_opt matches the exact minimum MSE_SGD·D²/(MSE_SGD + D²) (tolerance:
  half-width + the recursion's finite-horizon minus stationary value at λ_opt).
* The exact λ_opt over a (γ, D) grid rises with γ and falls with D: number of violating
  neighbours ≤ 0.

Figures: the λ sweep (exact stationary error, the Monte Carlo quadratic with its band, λ̂,
λ*_T1, λ*_T2, λ*_published, λ_opt and the empirical optimum's interval) and a heatmap of λ_opt
over (γ, ‖θ − x*‖). Steps are non-expansive (claim 4's rule).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg

from .. import stats, teachers, theory
from ..problems import synthetic
from .base import CheckResult, Timer, check_seeds, make_row, simulate
from .claim04_ls_dynamics import (diabetes_problem, mean_half_width, mu_of, nonexpansive_step,
                                  record_every, t_quantile, tail_mask)

CLAIM, NAME = 5, "lambda_opt"
MC_LAMS = (0.0, 0.5, 1.0)
R_SEQUENCE = (1.0, 0.3, 0.1, 0.03, 0.01)
GAMMA_FRACTIONS = (1.0, 1 / 4, 1 / 16, 1 / 64, 1 / 256)
HEAT_GAMMAS = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)
HEAT_DISTANCES = (0.03, 0.1, 0.2, 0.3, 0.5, 1.0)
RICHARDSON = 1.5


def lyapunov_trace(problem, batch_size, rows):
    """tr Σ, HΣ + ΣH = E[ξ_B ξ_Bᵀ] for per-sample noise rows ξ_i (ω(b) identity, §1)."""
    n = problem.n
    H = problem.hessian(problem.solution())
    mean = rows.mean(axis=0)
    centred = rows - mean
    Q = np.outer(mean, mean) + theory.omega(n, batch_size) * (centred.T @ centred) / n
    return float(np.trace(scipy.linalg.solve_continuous_lyapunov(H, Q)))


def exact_argmin(problem, theta, step, batch_size):
    """argmin over λ of the stationary E‖x_∞ − x*‖² of the λ-recursion (quadratic through MC_LAMS)."""
    vals = [theory.exact_moments(problem, theta, lam, step, 1, batch_size).stationary_dist2_opt
            for lam in MC_LAMS]
    c = np.linalg.solve(np.vander(MC_LAMS, 3, increasing=True), vals)
    return float(-c[1] / (2 * c[2]))


def mc_instances(quick):
    """(label, problem, teacher, batch size, steps, seeds, x0) of the Monte Carlo runs."""
    syn = synthetic.least_squares(200, 5, cond=10.0, seed=0)
    th = teachers.at_distance(syn, 0.25, seed=1)
    dia = diabetes_problem()
    dth = teachers.top_k(dia, dia.solution(), 5)
    out = []
    for b, s_full, s_quick in ((1, 2000, 150), (10, 1000, 60)):
        steps = int(np.ceil(10.0 / (nonexpansive_step(syn, b) * mu_of(syn)) / 50.0)) * 50
        out.append(("least squares n=200 d=5 κ=10, θ at r=0.25, x0=0", syn, th, b, steps,
                    s_quick if quick else s_full, None))
    out.append(("diabetes 442×10 standardised, top-5 θ, x0=x*", dia, dth, 1, 1500 if quick else 8000,
                60 if quick else 300, dia.solution()))
    return out


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 8
MIN_SEEDS_REASON = "its seed-bootstrap interval undercovers with fewer"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 5; returns a CheckResult (see the module docstring for the claim)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    with Timer(res):
        syn = synthetic.least_squares(200, 5, cond=10.0, seed=0)
        dia = diabetes_problem()
        exact_sets = [("least squares n=200 d=5 κ=10", syn, 1), ("least squares n=200 d=5 κ=10", syn, 10),
                      ("diabetes 442×10 standardised", dia, 1)]
        if quick:
            exact_sets = exact_sets[:1]
        for label, p, b in exact_sets:
            _gamma_rows(res, label, p, b)
            _distance_rows(res, label, p, b)
        _heatmap(res, syn, 1)
        specs = mc_instances(quick)
        for spec in specs:
            _empirical_rows(res, spec, len(specs), seeds, backend, level)
    return res


def _gamma_rows(res, label, p, b):
    theta = teachers.at_distance(p, 0.25, seed=1).theta
    D2 = float(np.sum((theta - p.solution()) ** 2))
    g_ne = nonexpansive_step(p, b)
    K = lyapunov_trace(p, b, p.sample_grads(p.solution())) / D2
    tag = f"{label}, b={b}, θ at r=0.25"
    for frac in GAMMA_FRACTIONS[-3:]:
        g = g_ne * frac
        r1 = theory.lambda_opt(p, theta, g, b) / g
        r2 = theory.lambda_opt(p, theta, 2 * g, b) / (2 * g)
        res.rows.append(make_row(CLAIM, tag, f"λ_opt/γ at γ = {g:.3g} vs γ→0 limit tr Σ/D² (Lyapunov)",
                                 r1, K, "≈", tolerance=RICHARDSON * abs(r1 - r2)))
    ratios = [theory.lambda_opt(p, theta, g_ne * f, b) / (g_ne * f) for f in GAMMA_FRACTIONS]
    res.notes.append(f"{tag}: λ_opt/γ over γ = γ_ne × {[round(f, 5) for f in GAMMA_FRACTIONS]} "
                     f"(γ_ne = {g_ne:.4g}): {np.round(ratios, 5).tolist()}, limit {K:.5g}")


def _distance_rows(res, label, p, b):
    g = nonexpansive_step(p, b)
    mse = theory.mse_sgd(p, g, b)
    tag = f"{label}, b={b}, γ={g:.3g}"
    lam = [theory.lambda_opt(p, teachers.at_distance(p, r, seed=1).theta, g, b) for r in R_SEQUENCE]
    for k in range(len(R_SEQUENCE) - 1):
        res.rows.append(make_row(CLAIM, tag, f"λ_opt(r={R_SEQUENCE[k + 1]:g}) − λ_opt(r={R_SEQUENCE[k]:g}) "
                                 "(teacher closer to x*)", lam[k + 1] - lam[k], 0.0, "≥"))
    x = R_SEQUENCE[-1] ** 2 / mse
    res.rows.append(make_row(CLAIM, tag, f"1 − λ_opt at r={R_SEQUENCE[-1]:g} vs D²/MSE_SGD (first order)",
                             1.0 - lam[-1], x, "≈", tolerance=x * x))
    res.rows.append(make_row(CLAIM, tag, "λ_opt for θ = x*", theory.lambda_opt(p, p.solution(), g, b), 1.0, "≈",
                             tolerance=1e-12))
    theta = teachers.at_distance(p, 0.25, seed=1).theta
    lo = theory.lambda_opt(p, theta, g, b)
    res.rows.append(make_row(CLAIM, f"{tag}, θ at r=0.25", "λ_opt vs argmin of the λ-recursion's stationary error",
                             lo, exact_argmin(p, theta, g, b), "≈", tolerance=1e-8 * max(abs(lo), 1e-300)))


def _heatmap(res, p, b):
    g_ne = nonexpansive_step(p, b)
    cells = []
    for f in HEAT_GAMMAS:
        for r in HEAT_DISTANCES:
            cells.append({"γ": g_ne * f, "‖θ − x*‖": r,
                          "λ_opt": theory.lambda_opt(p, teachers.at_distance(p, r, seed=1).theta, g_ne * f, b)})
    frame = pd.DataFrame(cells)
    table = frame.pivot(index="‖θ − x*‖", columns="γ", values="λ_opt").sort_index().sort_index(axis=1).to_numpy()
    bad = int(np.sum(np.diff(table, axis=1) <= 0) + np.sum(np.diff(table, axis=0) >= 0))
    res.rows.append(make_row(CLAIM, f"least squares n=200 d=5 κ=10, b={b}, {table.size}-cell (γ, D) grid",
                             "cells where λ_opt does not rise with γ or fall with D", bad, 0.0, "≤"))
    res.figures.append({"kind": "heatmap", "name": "claim05_lambda_opt_heatmap", "data": frame,
                        "title": f"Claim 5: the exact optimal weight λ_opt rises with the step γ and falls with the "
                                 f"teacher's distance (least squares n=200, d=5, κ=10, b={b})",
                        "x": "γ", "y": "‖θ − x*‖", "value": "λ_opt", "xlabel": "step size γ",
                        "ylabel": "teacher distance ‖θ − x*‖", "value_label": r"exact $\lambda_{\mathrm{opt}}$"})


def _empirical_rows(res, spec, n_specs, seeds, backend, level):
    label, p, teacher, b, steps, n_seeds, x0 = spec
    n_seeds = seeds or n_seeds
    theta = teacher.theta
    g = nonexpansive_step(p, b)
    every = record_every(steps)
    tag = f"{label}, b={b}, γ={g:.3g}"
    run = simulate(p, theta, MC_LAMS, g, steps, n_seeds, batch_size=b, estimator="kd", record_every=every,
                   backend=backend, x0=x0)
    for line in run.divergence_summary():
        res.notes.append(f"{tag}: {line}")
    alive = ~np.any(run.diverged, axis=0)                  # paired over λ: a seed enters for all or none
    tail = tail_mask(run.steps)
    per_seed = run.dist2_opt[:, alive][:, :, tail].mean(axis=2)            # (λ, seeds)
    coefs = stats.quadratic_in_lambda(MC_LAMS, per_seed)                   # (seeds, 3)
    row_level = 1.0 - (1.0 - level) / n_specs
    opt = _widen(stats.lambda_opt_from_quadratics(coefs, level=row_level), coefs, row_level)
    lam_opt = theory.lambda_opt(p, theta, g, b)
    exact = [theory.exact_moments(p, theta, lam, g, steps, b, record_every=every, x0=x0) for lam in MC_LAMS]
    V3 = np.vander(MC_LAMS, 3, increasing=True)
    ce = np.linalg.solve(V3, [np.mean(ex.dist2_opt[tail]) for ex in exact])       # finite horizon
    cs = np.linalg.solve(V3, [ex.stationary_dist2_opt for ex in exact])           # the recursion's limit
    lam_T, lam_stat = float(-ce[1] / (2 * ce[2])), float(-cs[1] / (2 * cs[2]))
    side = (opt.ci_high - opt.lam) if lam_opt >= opt.lam else (opt.lam - opt.ci_low)
    res.rows.append(make_row(CLAIM, tag, "empirical argmin_λ of the plateau (CRN quadratic) vs exact λ_opt",
                             opt.lam, lam_opt, "≈", tolerance=side + abs(lam_T - lam_stat),
                             ci_low=opt.ci_low, ci_high=opt.ci_high))
    at_opt = coefs @ np.array([1.0, lam_opt, lam_opt ** 2])
    q = t_quantile(level, n_specs, at_opt.size)
    for k, end in ((0, "λ = 0 (SGD)"), (2, "λ = 1")):
        pair = np.stack([at_opt, per_seed[k]], axis=1)
        est, lo, hi = stats.bootstrap_ci(pair, lambda v: v[:, 0].mean() / v[:, 1].mean(), level=row_level)
        res.rows.append(make_row(CLAIM, tag, f"plateau at λ_opt / plateau at {end} (paired)", est, 1.0, "≤",
                                 ci_low=lo, ci_high=hi))
    mse = theory.mse_sgd(p, g, b)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    best = mse * D2 / (mse + D2)
    powers = np.array([1.0, lam_opt, lam_opt ** 2])
    m, h, _ = mean_half_width(at_opt, q)
    res.rows.append(make_row(CLAIM, tag, "plateau at λ_opt vs MSE_SGD·D²/(MSE_SGD + D²)", m, best, "≈",
                             tolerance=h + abs(float((ce - cs) @ powers)), ci_low=m - h, ci_high=m + h))
    res.notes.append(f"{tag}: {steps} steps, {int(alive.sum())} seeds; D = {np.sqrt(D2):.4g}, MSE_SGD = {mse:.4g}; "
                     f"exact argmin of the finite-horizon plateau λ_T = {lam_T:.5g}, of the stationary error {lam_stat:.5g}, "
                     f"theory.lambda_opt = {lam_opt:.5g}")
    _sweep_figure(res, p, theta, g, b, coefs, lam_opt, opt, mse, D2, label, level)


def _widen(opt, coefs, level):
    """The bootstrap interval joined with a delta-method Student-t interval of −c̄1/(2c̄2).

    The percentile bootstrap undercovers with few seeds (``--seeds 8``); the t interval with
    S − 1 degrees of freedom does not, and with many seeds the two agree.
    """
    S = coefs.shape[0]
    m = coefs.mean(axis=0)
    grad = np.array([-1.0 / (2 * m[2]), m[1] / (2 * m[2] ** 2)])
    cov = np.cov(coefs[:, 1:].T) / S
    half = t_quantile(level, 1, S) * float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    lam = -m[1] / (2 * m[2])
    return stats.LambdaOptimum(opt.lam, min(opt.ci_low, lam - half), max(opt.ci_high, lam + half),
                               opt.method + " ∪ delta-method t interval")


def _sweep_figure(res, p, theta, g, b, coefs, lam_opt, opt, mse, D2, label, level):
    c = theory.constants(p, theta, batch_size=b)
    names = {"lambda_hat": "λ̂", "lambda_star_t1": "λ*_T1", "lambda_star_t2": "λ*_T2",
             "lambda_star_published": "λ*_published"}
    markers = {names.get(name, name): val for name, (val, _) in theory.all_lambdas(c, g).items()
               if np.isfinite(val)}
    markers["exact λ_opt"] = lam_opt
    shown = {k: v for k, v in markers.items() if -0.5 <= v <= 1.5}
    hidden = {k: round(v, 4) for k, v in markers.items() if k not in shown}
    if hidden:
        res.notes.append(f"{label}, b={b}: λ sweep leaves out markers outside [−0.5, 1.5]: {hidden}")
    lo = min([0.0] + list(shown.values()))
    hi = max([1.0] + list(shown.values()))
    grid = np.linspace(lo, hi, 81)
    vals = coefs @ np.vstack([np.ones_like(grid), grid, grid ** 2])           # (seeds, grid)
    mean, ci_lo, ci_hi, _ = stats.mean_ci(vals, axis=0, level=level)
    exact = grid ** 2 * D2 + (1 - grid) ** 2 * mse
    frame = pd.concat([
        pd.DataFrame({"instance": label, "method": "Monte Carlo plateau (quadratic in λ)", "lam": grid,
                      "mean": mean, "ci_low": ci_lo, "ci_high": ci_hi}),
        pd.DataFrame({"instance": label, "method": "exact", "lam": grid, "mean": exact, "ci_low": exact,
                      "ci_high": exact}),
    ], ignore_index=True)
    slug = "synthetic" if label.startswith("least squares") else "diabetes"
    res.figures.append({"kind": "lambda_sweep", "name": f"claim05_lambda_sweep_{slug}_b{b}", "data": frame,
                        "title": f"Claim 5: stationary error against the KD weight λ; {label}, b={b}, γ={g:.3g}",
                        "markers": {MARKER_TEXT.get(k, k): v for k, v in shown.items()},
                        "optimum": (opt.lam, opt.ci_low, opt.ci_high), "ylabel": "plateau E‖x_∞ − x*‖²"})


#: how the figures write the optimal weights (mathtext)
MARKER_TEXT = {"λ̂": r"$\hat\lambda$", "λ*_T1": r"$\lambda^*_{\mathrm{T1}}$", "λ*_T2": r"$\lambda^*_{\mathrm{T2}}$",
               "λ*_published": r"$\lambda^*_{\mathrm{published}}$", "λ_opt": r"$\lambda_{\mathrm{opt}}$",
               "exact λ_opt": r"exact $\lambda_{\mathrm{opt}}$"}
