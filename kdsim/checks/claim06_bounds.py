"""Claim 6 (THEORY.md §8): the bounds T1, T1′, T2 and the classic SGD bound hold on every instance of a sweep.

The sweep is problems × teachers × λ × γ. For every problem the step sizes are fractions
(0.5 and 1, or 1 alone) of each distinct γ_max of the four bounds (kdsim.theory.bounds:
T1 and SGD need γ ≤ 1/(2𝓛(b)), T1′ γ ≤ 1/(2L_max), T2 γ ≤ μ/(4L𝓛(b))), and every bound is
evaluated at every step of the grid. A bound whose condition fails at a step is not a row:
the notes say "not applicable, γ_max = …". With the constants kdsim computes
(kdsim.theory.constants; μ is "exact" = λ_min(H) for least squares and "local at x*" for
softmax with a ridge, where it equals the ridge α, a global strong-convexity constant; the
instance label says which), for every applicable (instance, bound) and every record t

    T1:  E‖x_t − x*‖²    ≤ (1 − γμ/2)^t ‖x_0 − x*‖² + (4γ/μ)σ²_*(λ,θ) + (4λ²/μ²)‖∇f(θ)‖²
    T1′: E‖x_t − x_λ‖²   ≤ (1 − γμ)^t ‖x_0 − x_λ‖² + (2γ/μ)σ²_λ,  and ‖x_λ − x*‖ ≤ λ‖∇f(θ)‖/μ
    T2:  E[f(x_t) − f*]  ≤ (1 − γμ/2)^t (f(x_0) − f*) + (2Lγ/μ)σ²_*(λ,θ) + (λ²/μ)‖∇f(θ)‖²
    SGD: E‖x_t − x*‖²    ≤ (1 − γμ)^t ‖x_0 − x*‖² + 2γσ²_*/μ        (λ = 0)

An instance is (problem, teacher, λ, γ). Rows, one per (instance, bound) and comparison:

* least squares, exact (THEORY §5, theory.exact_moments): max over records t > 0 of
  exact/bound ≤ 1 within a rounding tolerance of 1e-9 (the recursion is exact up to float
  rounding; at t = 0 both sides hold the deterministic initial value, with equality for T1′
  at λ = 1);
* Monte Carlo (least squares and softmax): max over records t > 0 of the upper 99% Student-t
  limit over seeds divided by the bound ≤ 1 (no tolerance: the interval is the allowance).
  The early records are the tight ones (with b = 1 at γ_max the exact ratio reaches ~0.9), so
  these rows need enough seeds to resolve them: the default is 128 (16 with quick=True, whose
  least-squares problem uses b = 8, which 8 seeds already resolve);
* tightness at the plateau (stats.tightness): neighbourhood / observed plateau, relation "≥" 1
  (least squares: the exact stationary value; softmax: the Monte Carlo plateau of the last
  quarter of the run, or the last time for E‖x_t − x_λ‖² measured from final iterates; the
  interval of the ratio comes from the plateau's interval). A bound with a
  zero neighbourhood (T1′ at λ = 1: x_1 = θ is a noise-free fixed point) has no tightness;
  the notes say so.
* T1′'s shift ‖x_λ − x*‖ ≤ λ‖∇f(θ)‖/μ, once per (problem, teacher, λ > 0), tolerance 1e-12
  relative (equality holds when θ − x* is a bottom eigenvector of H).

For softmax, E‖x_t − x_λ‖² at an intermediate λ is not among the engines' records (x_λ is
neither x* nor θ, which it is at λ = 0 and λ = 1, where the records serve); it is measured
at the horizons T/8, T/4, T/2 and T from the final iterates of runs of those lengths (the
counter-based index stream makes each run a prefix of the longest). For least squares it is exact from the records:
‖x − x_λ‖² = (1 − λ)‖x − x*‖² + λ‖x − θ‖² − λ(1 − λ)‖θ − x*‖².

Run length: ⌈8/(γμ)⌉ steps, so that the observed transient (rate ≈ (1 − γμ)²) is below e^{-12}
of its start in the plateau window. The figure "claim06_plateau_vs_neighbourhood" plots the
Monte Carlo plateau (with its interval) against the bound's neighbourhood; every point must
lie below y = x.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import stats, teachers, theory
from ..problems import LeastSquares, synthetic
from .base import CheckResult, Timer, check_seeds, make_row, simulate

CLAIM, NAME = 6, "bounds"
#: run length in units of 1/(γμ)
HORIZON = 8.0
#: records per run
N_RECORDS = 80
#: plateau window: the last quarter of the run
TAIL = 0.25
#: the exact recursion is exact up to float rounding
EXACT_RTOL = 1e-9
#: x_λ within this relative distance of x* or θ is taken to be that point (x_λ comes from Newton's
#: method, accurate to ~1e-9 for softmax; the squared distances then differ by ~1e-6 relative at most)
CENTRE_RTOL = 1e-6
#: a neighbourhood below this fraction of the initial value is zero up to rounding (x_λ from Newton)
ZERO_RTOL = 1e-12
#: KD weights of the sweep (λ = 0 is added for the first teacher of each problem)
KD_LAMS = (0.5, 1.0)
#: fractions of the softmax run length at which E‖x_t − x_λ‖² is measured from final iterates
CHECKPOINTS = (0.125, 0.25, 0.5)
#: bound name -> record it bounds, and how the record reads
RECORD_TEXT = {"dist2_opt": "E‖x_t − x*‖²", "dist2_centre": "E‖x_t − x_λ‖²", "subopt": "E[f(x_t) − f*]"}
BOUND_TEXT = {"T1": "T1", "T1'": "T1′", "T2": "T2", "SGD": "SGD"}


@dataclass
class Setting:
    """One problem of the sweep with its teachers, batch size, step fractions and start."""

    label: str
    problem: object
    batch_size: int
    teachers: list          # [(label, Teacher)]
    fractions: tuple
    x0: np.ndarray
    only: tuple = None      # use only the γ_max of these bounds (None: all four)


def away_start(problem, distance, seed):
    """x* plus ``distance`` along a seeded direction of the canonical space."""
    u = problem.canonical(np.random.default_rng(seed).standard_normal(problem.dim))
    return problem.solution() + distance * u / np.linalg.norm(u)


def settings(quick):
    """The problems of the sweep (reduced when ``quick``)."""
    ls_a = synthetic.least_squares(100, 5, cond=3.0, seed=0)
    ls_b = synthetic.least_squares(100, 5, cond=4.0, seed=1)
    sm = synthetic.softmax(200, 2, 3, l2=0.3, seed=0)
    out = [
        Setting("LS n=100 d=5 κ=3 b=1", ls_a, 1,
                [("teacher r=0.3", teachers.at_distance(ls_a, 0.3, seed=1)),
                 ("teacher r=1.5", teachers.at_distance(ls_a, 1.5, seed=2))],
                (0.5, 1.0), ls_a.default_x0()),
        Setting("LS n=100 d=5 κ=4 b=8", ls_b, 8,
                [("teacher r=0.5", teachers.at_distance(ls_b, 0.5, seed=3))],
                (1.0,), ls_b.default_x0()),
        Setting("softmax n=200 d=2+1 K=3 α=0.3 b=1", sm, 1,
                [("teacher r=0.5", teachers.at_distance(sm, 0.5, seed=4))],
                (1.0,), away_start(sm, 2.0, seed=5)),
    ]
    if quick:
        # b = 8: smaller per-seed spread, so that even 8 seeds resolve the early records
        _, b, s = out
        s.only = ("T1",)
        return [b, s]
    return out


def gamma_grid(c, fractions, only=None):
    """[(γ, text)]: each fraction of each distinct γ_max of the four bounds, largest first.

    ``only``: names of the bounds whose γ_max enter (default: all four); the text names every
    bound sharing that γ_max.
    """
    groups = {}
    bounds = theory.all_bounds(c, 1.0, 0.0)
    keep = {bounds[name].gamma_max for name in (only or bounds)}
    for name, b in bounds.items():
        for key in groups:
            if abs(key - b.gamma_max) <= 1e-9 * key:
                groups[key].append(BOUND_TEXT[name])
                break
        else:
            groups[b.gamma_max] = [BOUND_TEXT[name]]
    grid = [(f * gmax, f"γ={f:g}·γ_max({'/'.join(names)})={f * gmax:.4g}")
            for gmax, names in groups.items() if any(abs(gmax - g) <= 1e-9 * g for g in keep) for f in fractions]
    return sorted(grid, key=lambda g: -g[0])


def run_length(gamma, mu, horizon=HORIZON):
    """⌈horizon/(γμ)⌉ steps."""
    return int(np.ceil(horizon / (gamma * mu)))


def bounds_at(c, gamma, lam, x0):
    """{name: Bound} of the bounds that concern KD at weight λ (the SGD bound only at λ = 0)."""
    out = {"T1": theory.t1(c, gamma, lam, x0), "T1'": theory.t1_prime(c, gamma, lam, x0),
           "T2": theory.t2(c, gamma, lam, x0)}
    if lam == 0.0:
        out["SGD"] = theory.sgd_bound(c, gamma, x0)
    return out


def _dist2(problem, X, point):
    C = problem.canonical(np.atleast_2d(X))
    return np.sum((C - problem.canonical(point)) ** 2, axis=-1)


def centre_series(problem, run, k, theta, x_lam, lam):
    """Per-seed ‖x_t − x_λ‖² on the record axis, or None when the records do not determine it.

    Least squares: the exact identity of the module docstring. Otherwise x_λ = x* or x_λ = θ
    (to CENTRE_RTOL relative) use ‖x_t − x*‖² or ‖x_t − θ‖².
    """
    if isinstance(problem, LeastSquares):
        D2 = float(np.sum((theta - problem.solution()) ** 2))
        return (1.0 - lam) * run.dist2_opt[k] + lam * run.dist2_teacher[k] - lam * (1.0 - lam) * D2
    scale = CENTRE_RTOL * max(1.0, float(np.linalg.norm(problem.canonical(x_lam))))
    if np.sqrt(_dist2(problem, x_lam, problem.solution())[0]) <= scale:
        return run.dist2_opt[k]
    if np.sqrt(_dist2(problem, x_lam, theta)[0]) <= scale:
        return run.dist2_teacher[k]
    return None


def centre_checkpoints(problem, theta, lam, gamma, steps, seeds, batch_size, x0, x_lam, final, backend):
    """(times, per-seed ‖x_t − x_λ‖² (seeds, times)) from the final iterates of shorter runs.

    ``final``: the (seeds, dim) final iterates of the full run (time ``steps``).
    """
    times = sorted({max(1, int(round(f * steps))) for f in CHECKPOINTS} - {steps})
    cols = []
    for t in times:
        r = simulate(problem, theta, [lam], gamma, t, seeds, batch_size=batch_size, estimator="kd",
                     record_every=t, backend=backend, x0=x0)
        cols.append(_dist2(problem, r.x_final[0], x_lam))
    cols.append(_dist2(problem, final, x_lam))
    return np.array(times + [steps]), np.stack(cols, axis=1)


def observed(problem, run, k, bound, theta, lam, ctx):
    """(times, per-seed values (seeds, times), source note) of the quantity a bound concerns."""
    if bound.record in ("dist2_opt", "subopt"):
        return run.steps, run.record(bound.record)[k], ""
    series = centre_series(problem, run, k, theta, bound.extra["x_lambda"], lam)
    if series is not None:
        return run.steps, series, ""
    times, values = centre_checkpoints(problem, theta, lam, bound.gamma, run.steps[-1], run.n_seeds,
                                       ctx["batch_size"], ctx["x0"], bound.extra["x_lambda"],
                                       run.x_final[k], ctx["backend"])
    return times, values, ", at t = T/8, T/4, T/2, T from final iterates"


def mc_plateau(times, values, level):
    """Monte Carlo plateau: stats.plateau over the last quarter, or the last time alone."""
    if len(times) >= 8:
        return stats.plateau(times, values, tail_fraction=TAIL, level=level)
    m, lo, hi, count = stats.mean_ci(values[:, -1], level=level)
    return stats.Plateau(float(m), float(lo), float(hi), float(np.nanstd(values[:, -1], ddof=1)),
                         int(times[-1]), int(count))


def tightness_interval(neighbourhood, plateau):
    """stats.tightness of the neighbourhood against the plateau mean and its interval ends.

    The interval is (neighbourhood / upper plateau limit, neighbourhood / lower plateau limit);
    when the lower plateau limit is not positive the upper end is left at the estimate.
    """
    est, lo, hi = stats.tightness(neighbourhood, [plateau.mean, plateau.ci_high, plateau.ci_low])
    hi = hi if plateau.ci_low > 0 else est
    return float(est), float(lo), float(hi)


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 2
MIN_SEEDS_REASON = "Student-t intervals across seeds need two"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 6; returns a CheckResult (see the module docstring for the claim)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    seeds = seeds or (16 if quick else 128)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    scatter = []
    with Timer(res):
        for s in settings(quick):
            _sweep_setting(res, s, seeds, backend, level, scatter)
        res.figures.append({"kind": "scatter", "name": "claim06_plateau_vs_neighbourhood",
                            "data": pd.DataFrame(scatter),
                            "title": "Claim 6: every observed plateau (Monte Carlo mean, 99% CI) lies below its bound's "
                                     "neighbourhood (points under the line y = x)",
                            "xlabel": "neighbourhood of the bound", "ylabel": "observed plateau"})
    return res


def _sweep_setting(res, s, seeds, backend, level, scatter):
    p, b, x0 = s.problem, s.batch_size, s.x0
    is_ls = isinstance(p, LeastSquares)
    consts = [theory.constants(p, t.theta, batch_size=b) for _, t in s.teachers]
    c0 = consts[0]
    mu_text = f"μ={c0.mu:.4g} {c0.provenance['mu']}"
    if not is_ls and abs(c0.mu - p.l2) <= 1e-9 * p.l2:
        mu_text += " (= α: global)"
    ctx = {"batch_size": b, "x0": x0, "backend": backend}
    # T1′'s shift bound, once per (teacher, λ)
    for (tlabel, teacher), c in zip(s.teachers, consts):
        for lam in KD_LAMS:
            bd = theory.t1_prime(c, 1.0, lam, x0)
            res.rows.append(make_row(CLAIM, f"{s.label}; {tlabel}; λ={lam:g}; {mu_text}",
                                     "T1′ shift ‖x_λ − x*‖ ≤ λ‖∇f(θ)‖/μ", bd.extra["shift"],
                                     bd.extra["shift_bound"], "≤", tolerance=1e-12 * bd.extra["shift_bound"]))
    first_curve = True                      # one convergence panel per problem: its largest γ
    for gamma, gtext in gamma_grid(c0, s.fractions, s.only):
        steps = run_length(gamma, c0.mu)
        every = max(1, steps // N_RECORDS)
        for j, ((tlabel, teacher), c) in enumerate(zip(s.teachers, consts)):
            lams = ((0.0,) if j == 0 else ()) + KD_LAMS
            run = simulate(p, teacher.theta, lams, gamma, steps, seeds, batch_size=b, estimator="kd",
                           record_every=every, backend=backend, x0=x0)
            for line in run.divergence_summary():
                res.notes.append(f"{s.label}; {tlabel}; {gtext}: {line}")
            for k, lam in enumerate(lams):
                inst = f"{s.label}; {tlabel if lam else 'any teacher'}; λ={lam:g}; {gtext}; T={steps}; {mu_text}"
                exact = (theory.exact_moments(p, teacher.theta, lam, gamma, steps, b, every, "kd", x0)
                         if is_ls else None)
                for name, bd in bounds_at(c, gamma, lam, x0).items():
                    if not bd.applicable:
                        res.notes.append(f"{inst}: {BOUND_TEXT[name]} not applicable, γ_max = {bd.gamma_max:.6g} "
                                         f"(condition {bd.condition}; γ = {gamma:.6g})")
                        continue
                    _bound_rows(res, inst, name, bd, p, run, k, teacher.theta, lam, exact, ctx, level, scatter)
                if first_curve and lam == KD_LAMS[0]:
                    res.curves.append(_curve(run, k, f"{s.label}, {tlabel}, λ={lam:g}, {gtext}", c, gamma, lam, x0))
                    first_curve = False


def _bound_rows(res, inst, name, bd, p, run, k, theta, lam, exact, ctx, level, scatter):
    label = BOUND_TEXT[name]
    text = RECORD_TEXT[bd.record]
    times, values, source = observed(p, run, k, bd, theta, lam, ctx)
    later = times > 0                      # at t = 0 the quantity is its deterministic initial value
    if exact is not None:
        ex = exact.steps > 0
        ratio = float(np.max(exact.record(bd.record)[ex] / bd.curve(exact.steps[ex])))
        res.rows.append(make_row(CLAIM, inst, f"{label}: max_(t>0) exact {text} / bound (§5)",
                                 ratio, 1.0, "≤", tolerance=EXACT_RTOL))
    _, _, upper, _ = stats.mean_ci(values[:, later], axis=0, level=level)
    res.rows.append(make_row(CLAIM, inst, f"{label}: max_(t>0) upper {level:.0%} CI of {text} / bound "
                             f"(Monte Carlo, {run.n_seeds} seeds{source})",
                             float(np.max(upper / bd.curve(times[later]))), 1.0, "≤"))
    pl = mc_plateau(times, values, level)
    nb = bd.neighbourhood
    terms = " + ".join(f"{t} {v:.3g}" for t, v in bd.neighbourhood_terms.items())
    if nb <= ZERO_RTOL * bd.initial:
        res.notes.append(f"{inst}: {label} neighbourhood is 0 (noise-free fixed point x_λ); tightness "
                         f"bound/observed is not defined (observed plateau {pl.mean:.3g})")
        return
    scatter.append({"instance": label, "theoretical": nb, "empirical": pl.mean,
                    "ci_low": pl.ci_low, "ci_high": pl.ci_high, "setting": inst,
                    "group": inst.split(";")[0], "marker": f"{label} ({text})"})
    if exact is not None:
        stat = {"dist2_opt": exact.stationary_dist2_opt, "subopt": exact.stationary_subopt,
                "dist2_centre": exact.stationary_dist2_centre}[bd.record]
        t = float(stats.tightness(nb, stat))
        res.rows.append(make_row(CLAIM, inst, f"{label}: tightness neighbourhood ({terms}) / exact stationary "
                                 f"{text} = {stat:.3g}", t, 1.0, "≥"))
    else:
        t, lo, hi = tightness_interval(nb, pl)
        res.rows.append(make_row(CLAIM, inst, f"{label}: tightness neighbourhood ({terms}) / Monte Carlo "
                                 f"plateau {text} = {pl.mean:.3g} (from step {pl.start_step})", t, 1.0, "≥",
                                 ci_low=lo, ci_high=hi))


TITLE = "Claim 6: the T1 bound lies above the Monte Carlo error at every step (largest γ of each problem)"


def _curve(run, k, label, c, gamma, lam, x0):
    mean, lo, hi, _ = stats.mean_ci(run.dist2_opt[k], axis=0)
    common = {"instance": label, "series": f"λ = {lam:g}", "quantity": "‖x_t − x*‖²", "step": run.steps}
    frames = [pd.DataFrame({**common, "method": "Monte Carlo", "kind": "mc", "mean": mean, "ci_low": lo,
                            "ci_high": hi})]
    bd = theory.t1(c, gamma, lam, x0)
    if bd.applicable:
        cv = bd.curve(run.steps)
        frames.append(pd.DataFrame({**common, "method": "T1 bound", "kind": "bound", "mean": cv, "ci_low": cv,
                                    "ci_high": cv}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(title=TITLE)
    return out
