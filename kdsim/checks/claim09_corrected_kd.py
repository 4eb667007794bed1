"""Claim 9 (THEORY.md §8): corrected KD is unbiased: no λ²D² floor, stationary error O(γ).

Corrected KD, g = ∇f_B(x) − λ(∇f_B(θ) − ∇f(θ)), has E g = ∇f(x): its mean fixed point is x*,
and on least squares its stationary error is the trace of the fixed point of the §5 recursion
with noise rows ξ_i = ∇f_i(x*) − λ(∇f_i(θ) − ∇f(θ)) (``exact_moments(..., estimator="corrected")``).
To first order in γ that fixed point is γΣ with HΣ + ΣH = E[ξ_Bξ_Bᵀ] (Lyapunov), so the
stationary error is γ tr Σ + O(γ²) whatever the teacher — unlike KD's λ²D² + (1 − λ)²MSE_SGD,
which keeps λ²D² as γ → 0. Rows:

* Plateau (per-seed average over the last half of the records, started at x0 = x*, the mean
  fixed point) vs the exact stationary value, two-sided, tolerance = t half-width (Bonferroni
  over the Monte Carlo rows, family-wise level ``level``) + |exact tail average − stationary|
  (the remaining transient, from the exact recursion at the same records).
* No floor: the plateau's upper confidence limit ≤ λ²D², KD's bias floor (ratio column: how far
  below it is), for a poor teacher (D² ≫ MSE_SGD).
* O(γ), Monte Carlo: the log-log slope of the plateau against γ over a grid γ_ne·{1, ½, ¼, ⅛},
  with a seed-bootstrap interval joined with a delta-method Student-t one (Bonferroni over the
  slope rows), ≈ the slope of the exact
  stationary values over the same grid (tolerance = the interval's half-width on that side), and
  ≈ 1 with tolerance = half-width + |exact slope − 1| (the O(γ²) curvature over the grid).
* O(γ), exact: stationary error / γ at the three smallest γ of γ_ne·{1/16, 1/64, 1/256} vs the
  Lyapunov limit tr Σ (solved independently), Richardson tolerance 1.5·|e(γ)/γ − e(2γ)/(2γ)|
  (claim 5's rule: passes for a deviation ∝ γ^p with p ≥ 0.74, fails for a floor).

Instances: least squares n = 200, d = 5, κ = 10 with θ at r = 2 (D² = 4), λ ∈ {0.5, 1}, b = 1 (γ
grid) and b = 10; the diabetes data (standardised) with an early-stopped teacher (50 SGD steps,
D² ≈ 0.52), λ = 1, b = 1 in Monte Carlo and b = 1, 10 exactly. Steps are non-expansive
(γ_ne = 1/mean of the b largest L_i, claim 4's rule).

SVRG is corrected KD with λ = 1 whose teacher is the snapshot y, refreshed to the iterate every m
steps (docs/theory.md §2). On least squares, with e = x − x*, d = y − x*, g_i = ∇f_i(x*) and
c = 1 with the full-gradient correction (c = 0 without: the authors' SVRG without
``--teacher_full_grad``), one step is affine in s = (e, d, 1):

    e' = (I − γH_B)e + γλ(H_B − cH)d − γ(1 − λ)g_B − γcλḡ,   d' = d,

and the refresh maps (e, d) to (e, e). So E[s sᵀ] propagates exactly through m steps of
mean_B G_B ⊗ G_B = Ḡ ⊗ Ḡ + ω(b)(1/n) Σ_i Δ_i ⊗ Δ_i (Δ_i the deviation of sample i) and the
refresh (``svrg_exact``; tested against enumerating every index sequence). With the correction
and λ = 1 the map is homogeneous: its spectral radius ρ < 1 gives linear convergence to x* and a
stationary error of exactly 0 — the O(γ) floor of corrected KD with a fixed teacher is removed by
the refresh. Without the correction and λ = 1 the step is H_B(x − y), zero at x = y: SVRG never
leaves its first snapshot (a bias of ‖x_0 − x*‖²); with λ < 1 both versions settle at a floor (the
noise (1 − λ)∇f_B(x*) stays), the uncorrected one higher (0.0111 against 0.0079 ≈ (1 − λ)²MSE_SGD
at λ = 0.5) and slower (ρ 0.48 against 0.14). Rows
(least squares n = 200, d = 5, κ = 10, b = 1, γ = γ_ne/2, m = n, from x_0 = 0):

* identity: over the first period SVRG's records equal corrected KD's with λ = 1 and the fixed
  teacher θ = x_0 (same seeds) to rounding (1e-10 relative);
* SVRG with the correction, λ = 1: E‖x_t − x*‖² at epoch ends 1, 2, 4, 8 and the last vs the
  exact value, tolerance = t half-width (Bonferroni with the other Monte Carlo rows) + 1e-9 of
  the value; ρ (exact) < 1; the last epoch's upper limit ≤ corrected KD's stationary error with
  the teacher held at x_0 (§5, exact; the ratio column says how far below);
* corrected KD, λ = 1, θ = x*: the exact stationary error is 0 (rounding, 1e-25);
* without the correction, λ = 1: every record equals ‖x_0 − x*‖² (relative 1e-12), as the exact
  map says; λ = 0.5: the plateau (last half of 40 epochs) vs the exact stationary value of the
  period map, tolerance = half-width + the exact remaining transient, and its lower limit ≥ the
  exact floor of SVRG with the correction at the same λ (the bias of the missing full gradient).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats, teachers, theory
from ..problems import synthetic
from .base import CheckResult, Timer, check_seeds, make_row, simulate
from .claim04_ls_dynamics import (diabetes_problem, exact_curve, mean_half_width, mu_of,
                                  nonexpansive_step, record_every, t_quantile, tail_mask)
from .claim05_lambda_opt import RICHARDSON, lyapunov_trace

CLAIM, NAME = 9, "corrected_kd"
GAMMA_GRID = (1.0, 1 / 2, 1 / 4, 1 / 8)
EXACT_FRACTIONS = (1 / 16, 1 / 64, 1 / 256)
#: SVRG: step γ_ne·SVRG_STEP, epochs with the correction and (λ = 0.5) without, seeds (full, quick)
SVRG_STEP = 0.5
SVRG_EPOCHS = 12
SVRG_FLOOR_EPOCHS = 40
SVRG_SEEDS = (500, 100)
#: epoch ends at which SVRG's Monte Carlo mean is compared with the exact value (and the last)
SVRG_CHECK_EPOCHS = (1, 2, 4, 8)
#: statistical SVRG rows (epoch ends + the last, final ≤ floor, the λ = 0.5 plateau and its lower limit)
SVRG_MC_ROWS = len(SVRG_CHECK_EPOCHS) + 4


def problems():
    """(label, problem, teacher, λ values, Monte Carlo plan) per instance.

    The plan lists (b, γ fractions of γ_ne, seeds full, seeds quick, c full, c quick): each γ runs
    c / (γ μ) steps (the quick size keeps the entries with quick seeds, and their first γ).
    """
    syn = synthetic.least_squares(200, 5, cond=10.0, seed=0)
    dia = diabetes_problem()
    return [
        ("least squares n=200 d=5 κ=10, θ at r=2", syn, teachers.at_distance(syn, 2.0, seed=3), (0.5, 1.0),
         [(1, GAMMA_GRID, 500, 100, 4.0, 4.0), (10, (1.0,), 500, None, 4.0, None)]),
        ("diabetes 442×10 standardised, early-stopped θ", dia, teachers.early_stopped(dia, 50, 0.02, seed=2),
         (1.0,), [(1, (1.0,), 200, 40, 2.5, 1.2)]),
    ]


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 8
MIN_SEEDS_REASON = "its seed-bootstrap interval undercovers with fewer"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 9; returns a CheckResult (see the module docstring for the claim)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    with Timer(res):
        insts = problems()
        runs = []
        for label, p, teacher, lams, plan in insts:
            for b, fracs, s_full, s_quick, c_full, c_quick in plan:
                if quick and s_quick is None:
                    continue
                use = fracs[:1] if quick else fracs
                runs.append((label, p, teacher, lams, b, use, seeds or (s_quick if quick else s_full),
                             c_quick if quick else c_full))
        n_mc = sum(len(r[3]) * len(r[5]) for r in runs) + SVRG_MC_ROWS
        n_slope = 2 * sum(len(r[3]) for r in runs if len(r[5]) > 1)
        for label, p, teacher, lams, b, fracs, n_seeds, c in runs:
            _mc_rows(res, label, p, teacher, lams, b, fracs, n_seeds, c, backend, level, n_mc, n_slope)
        _svrg_rows(res, insts[0][1], seeds or (SVRG_SEEDS[1] if quick else SVRG_SEEDS[0]), backend, level, n_mc)
        for label, p, teacher, lams, plan in insts:
            for b in (1, 10):
                if quick and b != 1:
                    continue
                _lyapunov_rows(res, label, p, teacher, lams, b)
    return res


def _mc_rows(res, label, p, teacher, lams, b, fracs, n_seeds, c, backend, level, n_mc, n_slope):
    theta, xs = teacher.theta, p.solution()
    D2 = float(np.sum((theta - xs) ** 2))
    g_ne = nonexpansive_step(p, b)
    mu = mu_of(p)
    q = t_quantile(level, n_mc, n_seeds)
    plateaus = {lam: [] for lam in lams}        # per γ: per-seed plateau values
    exact_stat = {lam: [] for lam in lams}
    frames = []
    for frac in fracs:
        g = g_ne * frac
        steps = int(np.ceil(c / (g * mu) / 50.0)) * 50
        every = record_every(steps)
        run = simulate(p, theta, lams, g, steps, n_seeds, batch_size=b, estimator="corrected",
                       record_every=every, backend=backend, x0=xs)
        for line in run.divergence_summary():
            res.notes.append(f"{label}, b={b}, γ={g:.3g}: {line}")
        tail = tail_mask(run.steps)
        for k, lam in enumerate(lams):
            tag = f"{label}, b={b}, γ={g:.3g}, λ={lam:g}"
            ex = theory.exact_moments(p, theta, lam, g, steps, b, record_every=every, estimator="corrected", x0=xs)
            alive = ~run.diverged[k]
            per_seed = np.full(n_seeds, np.nan)
            per_seed[alive] = run.dist2_opt[k][alive][:, tail].mean(axis=1)
            plateaus[lam].append(per_seed)
            exact_stat[lam].append(ex.stationary_dist2_opt)
            m, h, _ = mean_half_width(per_seed[alive], q)
            transient = float(np.mean(ex.dist2_opt[tail]) - ex.stationary_dist2_opt)
            res.rows.append(make_row(CLAIM, tag, "corrected-KD plateau E‖x_∞ − x*‖² vs exact stationary value (§5)",
                                     m, ex.stationary_dist2_opt, "≈", tolerance=h + abs(transient),
                                     ci_low=m - h, ci_high=m + h))
            res.rows.append(make_row(CLAIM, tag, "corrected-KD plateau ≤ λ²D² (KD's bias floor)", m, lam * lam * D2,
                                     "≤", ci_low=m - h, ci_high=m + h))
            kd = theory.stationary_error(p, theta, lam, g, b)
            res.notes.append(f"{tag}: {steps} steps from x*, {int(alive.sum())} seeds; corrected plateau {m:.4g} "
                             f"(exact {ex.stationary_dist2_opt:.4g}, transient {transient:.2g}); KD's stationary "
                             f"error λ²D² + (1 − λ)²MSE_SGD = {kd:.4g}")
            mean, lo, hi, _ = stats.mean_ci(run.dist2_opt[k][alive], axis=0, level=level)
            common = {"instance": f"{label}, D²={D2:.3g}, b={b}, λ={lam:g}", "series": f"γ = {g:.3g}",
                      "series_value": g, "quantity": "‖x_t − x*‖²"}
            frames.append(pd.DataFrame({**common, "method": "Monte Carlo, corrected KD", "kind": "mc",
                                        "step": run.steps, "mean": mean, "ci_low": lo, "ci_high": hi}))
            exact = exact_curve(ex.dist2_opt)
            frames.append(pd.DataFrame({**common, "method": "exact recursion (§5)", "kind": "theory", "step": ex.steps,
                                        "mean": exact, "ci_low": exact, "ci_high": exact}))
    curves = pd.concat(frames, ignore_index=True)
    curves.attrs.update(title=TITLE, series_name="step size γ")
    res.curves.append(curves)
    if len(fracs) < 2:
        return
    logg = np.log(g_ne * np.asarray(fracs))
    slope_level = 1.0 - (1.0 - level) / n_slope
    for lam in lams:
        per = np.stack(plateaus[lam], axis=1)                    # (seeds, γ)
        per = per[np.all(np.isfinite(per), axis=1)]
        est, lo, hi = stats.bootstrap_ci(per, lambda v: np.polyfit(logg, np.log(v.mean(axis=0)), 1)[0],
                                         level=slope_level)
        # joined with a delta-method Student-t interval (the percentile bootstrap undercovers with few seeds)
        w = (logg - logg.mean()) / np.sum((logg - logg.mean()) ** 2)     # slope = Σ w_k log m̄_k
        m = per.mean(axis=0)
        var = float((w / m) @ (np.cov(per.T) / per.shape[0]) @ (w / m))
        half = t_quantile(slope_level, 1, per.shape[0]) * np.sqrt(max(var, 0.0))
        lo, hi = min(lo, est - half), max(hi, est + half)
        exact_slope = float(np.polyfit(logg, np.log(exact_stat[lam]), 1)[0])
        tag = f"{label}, b={b}, λ={lam:g}, γ = {np.exp(logg[-1]):.3g}…{np.exp(logg[0]):.3g}"
        side = (hi - est) if est <= exact_slope else (est - lo)
        res.rows.append(make_row(CLAIM, tag, "log-log slope of the corrected-KD plateau in γ vs the exact "
                                 "stationary values' slope", est, exact_slope, "≈", tolerance=float(side),
                                 ci_low=lo, ci_high=hi))
        side = (hi - est) if est <= 1.0 else (est - lo)
        res.rows.append(make_row(CLAIM, tag, "log-log slope of the corrected-KD plateau in γ vs 1 (O(γ); allowance "
                                 "|exact slope − 1|)", est, 1.0, "≈",
                                 tolerance=float(side) + abs(exact_slope - 1.0), ci_low=lo, ci_high=hi))


TITLE = ("Claim 9: corrected KD from x* settles at the exact stationary error of §5, with no λ²D² floor "
         "(one colour per step size γ)")


def _lyapunov_rows(res, label, p, teacher, lams, b):
    theta, xs = teacher.theta, p.solution()
    g_ne = nonexpansive_step(p, b)
    for lam in lams:
        rows = p.sample_grads(xs) - lam * (p.sample_grads(theta) - p.grad(theta))
        K = lyapunov_trace(p, b, rows)
        tag = f"{label}, b={b}, λ={lam:g}"
        for frac in EXACT_FRACTIONS:
            g = g_ne * frac
            e1 = theory.exact_moments(p, theta, lam, g, 1, b, estimator="corrected").stationary_dist2_opt / g
            e2 = theory.exact_moments(p, theta, lam, 2 * g, 1, b, estimator="corrected").stationary_dist2_opt / (2 * g)
            res.rows.append(make_row(CLAIM, tag, f"exact stationary error / γ at γ = {g:.3g} vs γ→0 limit tr Σ "
                                     "(Lyapunov)", e1, K, "≈", tolerance=RICHARDSON * abs(e1 - e2)))


# ------------------------------------------------------------------ SVRG
def svrg_exact(problem, lam, step, period, periods, batch_size=1, correction=True, x0=None, refresh=True):
    """Exact E‖x_t − x*‖² of SVRG on least squares at the refreshes t = k·m, k = 0 .. ``periods``.

    SVRG (``kdsim.estimators``, warm-up 0, exact full gradient) takes its snapshot y at t = 0 and
    every ``period`` = m steps; in between it is corrected KD (``correction``; plain KD without)
    with weight λ and teacher y. The state s = (e, d, 1), e = x − x*, d = y − x*, moves by an affine
    map G_B per step (module docstring); E[s sᵀ] moves by mean_B G_B ⊗ G_B = Ḡ ⊗ Ḡ + ω(b)·(1/n)Σ Δ_i ⊗ Δ_i
    (uniform b-subsets without replacement), and the refresh sets d = e. ``refresh=False`` keeps
    the first snapshot (corrected KD with the fixed teacher θ = x_0: for perturbation tests).

    Returns
    -------
    (values, rho) : (ndarray (periods + 1,), float)
        E‖x_{k·m} − x*‖², and the spectral radius of the period map's homogeneous part (the
        per-period contraction: < 1 means linear convergence).
    """
    p = problem
    n, d = p.n, p.dim
    xs = p.solution()
    x0 = p.default_x0() if x0 is None else np.asarray(x0, dtype=np.float64)
    G = p.sample_grads(xs)
    gbar = G.mean(axis=0)
    H = p.hessian(xs)
    Ai = p.A[:, :, None] * p.A[:, None, :]            # a_i a_iᵀ: the ridge cancels in the deviations
    Ad = Ai.mean(axis=0)
    c = 1.0 if correction else 0.0
    N = 2 * d + 1
    Gbar = np.eye(N)
    Gbar[:d, :d] -= step * H
    Gbar[:d, d:2 * d] = step * lam * (1.0 - c) * H
    Gbar[:d, -1] = -step * ((1.0 - lam) + c * lam) * gbar
    dev = np.zeros((n, N, N))
    dev[:, :d, :d] = -step * (Ai - Ad)
    dev[:, :d, d:2 * d] = step * lam * (Ai - Ad)
    dev[:, :d, -1] = -step * (1.0 - lam) * (G - gbar)
    # Σ_i Δ_i ⊗ Δ_i as one product: (Δ ⊗ Δ)[(a,b),(c,e)] = Δ[a,c]Δ[b,e]
    kron = np.einsum("iac,ibe->abce", dev, dev, optimize=True).reshape(N * N, N * N)
    T = np.kron(Gbar, Gbar) + theory.omega(n, batch_size) * kron / n
    R = np.eye(N)
    if refresh:
        R[d:2 * d, d:2 * d] = 0.0
        R[d:2 * d, :d] = np.eye(d)
    F = np.linalg.matrix_power(T, int(period)) @ np.kron(R, R)
    s0 = np.concatenate([x0 - xs, x0 - xs, [1.0]])
    v = np.outer(s0, s0).ravel()
    out = [float(np.trace(v.reshape(N, N)[:d, :d]))]
    for _ in range(int(periods)):
        v = F @ v
        out.append(float(np.trace(v.reshape(N, N)[:d, :d])))
    keep = np.ones((N, N), dtype=bool)
    keep[-1, :] = keep[:, -1] = False                  # the homogeneous block: no constant entry
    idx = np.flatnonzero(keep.ravel())
    rho = float(np.max(np.abs(np.linalg.eigvals(F[np.ix_(idx, idx)]))))
    return np.array(out), rho


def _svrg_run(p, lam, step, m, epochs, seeds, backend, correction, x0):
    return simulate(p, x0, [lam], step, epochs * m, seeds, batch_size=1, estimator="svrg", svrg_period=m,
                    svrg_correction=correction, record_every=m, backend=backend, x0=x0)


def _svrg_rows(res, p, seeds, backend, level, n_mc):
    xs = p.solution()
    x0 = p.default_x0()
    m = p.n
    g = nonexpansive_step(p, 1) * SVRG_STEP
    D0 = float(np.sum((x0 - xs) ** 2))
    label = f"least squares n={p.n} d={p.dim} κ=10, SVRG b=1, γ={g:.3g} (γ_ne/2), m={m} (one epoch), x_0 = 0"
    q = t_quantile(level, n_mc, seeds)
    # identity over the first period: SVRG = corrected KD with λ = 1 and the teacher held at the snapshot x_0
    every = m // 10
    sv = simulate(p, x0, [1.0], g, m, seeds, batch_size=1, estimator="svrg", svrg_period=m, record_every=every,
                  backend=backend, x0=x0)
    ck = simulate(p, x0, [1.0], g, m, seeds, batch_size=1, estimator="corrected", record_every=every,
                  backend=backend, x0=x0)
    dev = float(np.max(np.abs(sv.dist2_opt - ck.dist2_opt))) / D0
    res.rows.append(make_row(CLAIM, label, "SVRG over its first period = corrected KD with λ = 1 and the fixed teacher "
                             "θ = x_0 (same seeds): max |Δ‖x_t − x*‖²| / ‖x_0 − x*‖² (rounding)", dev, 1e-10, "≤"))
    # with the correction, λ = 1: linear convergence to x*, exactly as the period map says
    exact, rho = svrg_exact(p, 1.0, g, m, SVRG_EPOCHS)
    run = _svrg_run(p, 1.0, g, m, SVRG_EPOCHS, seeds, backend, True, x0)
    for line in run.divergence_summary():
        res.notes.append(f"{label}: {line}")
    alive = ~run.diverged[0]
    for k in SVRG_CHECK_EPOCHS + (SVRG_EPOCHS,):
        mean, h, _ = mean_half_width(run.dist2_opt[0][alive][:, k], q)
        res.rows.append(make_row(CLAIM, f"{label}, λ=1, full-gradient correction", f"SVRG E‖x_t − x*‖² at the end of "
                                 f"epoch {k} vs exact (period map)", mean, exact[k], "≈",
                                 tolerance=h + 1e-9 * exact[k], ci_low=mean - h, ci_high=mean + h))
    res.rows.append(make_row(CLAIM, f"{label}, λ=1, full-gradient correction", "exact per-epoch contraction ρ of "
                             "SVRG's period map < 1 (linear convergence; its fixed point, the stationary error, is 0; "
                             "threshold 1 − 1e-9)", rho, 1.0 - 1e-9, "≤"))
    floor = theory.exact_moments(p, x0, 1.0, g, 1, 1, estimator="corrected").stationary_dist2_opt
    mean, h, _ = mean_half_width(run.dist2_opt[0][alive][:, -1], q)
    res.rows.append(make_row(CLAIM, f"{label}, λ=1, full-gradient correction", f"SVRG E‖x_T − x*‖² after "
                             f"{SVRG_EPOCHS} epochs ≤ corrected KD's stationary error with the teacher held at x_0 "
                             f"(exact §5, {floor:.3g}): the refresh removes the O(γ) floor", mean, floor, "≤",
                             ci_low=mean - h, ci_high=mean + h))
    zero = theory.exact_moments(p, xs, 1.0, g, 1, 1, estimator="corrected").stationary_dist2_opt
    res.rows.append(make_row(CLAIM, f"least squares n={p.n} d={p.dim} κ=10, b=1, γ={g:.3g}", "corrected KD, λ = 1, "
                             "θ = x*: exact stationary E‖x_∞ − x*‖² = 0 (rounding)", abs(zero), 1e-25, "≤"))
    # without the correction (the authors' SVRG without --teacher_full_grad)
    exact1, rho1 = svrg_exact(p, 1.0, g, m, SVRG_EPOCHS, correction=False)
    stall = _svrg_run(p, 1.0, g, m, SVRG_EPOCHS, seeds, backend, False, x0)
    dev = float(np.max(np.abs(stall.dist2_opt[0] - exact1[None, :]))) / D0
    res.rows.append(make_row(CLAIM, f"{label}, λ=1, no correction", "SVRG without the full-gradient correction never "
                             "leaves its first snapshot: max |‖x_t − x*‖² − exact| / ‖x_0 − x*‖² over every record and "
                             f"seed (exact: ‖x_0 − x*‖² = {D0:.4g} at every epoch, ρ = {rho1:.6g}; rounding)", dev, 1e-12,
                             "≤"))
    exact5, _ = svrg_exact(p, 0.5, g, m, SVRG_FLOOR_EPOCHS, correction=False)
    stat5, _ = svrg_exact(p, 0.5, g, m, 40 * SVRG_FLOOR_EPOCHS, correction=False)
    fl = _svrg_run(p, 0.5, g, m, SVRG_FLOOR_EPOCHS, seeds, backend, False, x0)
    alive = ~fl.diverged[0]
    tail = tail_mask(fl.steps)
    per_seed = fl.dist2_opt[0][alive][:, tail].mean(axis=1)
    mean, h, _ = mean_half_width(per_seed, q)
    transient = float(np.mean(exact5[tail]) - stat5[-1])
    corr5, _ = svrg_exact(p, 0.5, g, m, 40 * SVRG_FLOOR_EPOCHS, correction=True)
    tag5 = f"{label}, λ=0.5, no correction"
    res.rows.append(make_row(CLAIM, tag5, "SVRG plateau E‖x − x*‖² (last half of the epoch ends) vs the exact stationary "
                             "value of the period map (a floor)", mean, stat5[-1], "≈",
                             tolerance=h + abs(transient), ci_low=mean - h, ci_high=mean + h))
    res.rows.append(make_row(CLAIM, tag5, "SVRG plateau without the correction ≥ the exact floor with it at the same "
                             f"λ = 0.5 ({corr5[-1]:.4g} ≈ (1 − λ)²MSE_SGD): the missing full gradient adds a bias "
                             "(lower limit)", mean, corr5[-1], "≥", ci_low=mean - h, ci_high=mean + h))
    res.notes.append(f"SVRG ({label}): ρ = {rho:.4g} per epoch with the correction (E‖x − x*‖² {exact[0]:.3g} → "
                     f"{exact[-1]:.3g} in {SVRG_EPOCHS} epochs; corrected KD with the teacher held at x_0 stalls at "
                     f"{floor:.3g}); without it, λ = 1 stays at {D0:.4g} and λ = 0.5 settles at {stat5[-1]:.4g} "
                     f"(measured {mean:.4g} ± {h:.2g}; with the correction λ = 0.5 settles at {corr5[-1]:.4g})")
