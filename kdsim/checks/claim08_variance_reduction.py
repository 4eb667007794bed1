"""Claim 8 (THEORY.md §8): KD at λ̂ reduces the gradient noise at x* by exactly the factor 1 − ρ².

With c0 = σ²_* = E‖∇f_B(x*)‖², c1 = E⟨∇f_B(x*), ∇f_B(θ)⟩, c2 = E‖∇f_B(θ)‖²,
ρ = c1/√(c0c2) and λ̂ = c1/c2 (THEORY §3, §6):

    σ²_*(λ̂, θ) = E‖∇f_B(x*) − λ̂∇f_B(θ)‖² = (1 − ρ²) σ²_*,
    0 < 1 − ρ² < 1 for an imperfect teacher,  1 − ρ² = 0 for θ = x*,

and ρ² falls as the teacher worsens. Rows, per (instance, teacher, b):

* ``theory.constants``' KD-noise quadratic at λ̂ vs (1 − ρ²)σ²_*, tolerance 1e-12·σ²_*.
* An independent evaluation of E‖∇f_B(x*) − λ̂∇f_B(θ)‖² from the problem's per-sample gradients:
  for b = 1 the exact average over the n samples (tolerance 1e-10·σ²_*); for b = 10 a Monte
  Carlo over N minibatches drawn without replacement by ``kdsim.rng`` (tolerance = the
  t-interval half-width at family-wise level ``level``, Bonferroni over all such rows, plus
  1e-12·σ²_*).
* Imperfect teachers: 1 − ρ² ≥ 1e-12 and ρ² ≥ 1e-12 (strictly inside (0, 1)); θ = x*:
  1 − ρ² ≤ 1e-12.
* Teachers at r = 0.03, 0.1, 0.3, 1, 3 along one direction u: ρ²(r_k) − ρ²(r_{k+1}) ≥ 0, one row
  per comparison. (For least squares ∇f_B(θ) = ∇f_B(x*) + rH_Bu, so c1 = c0 + rβ with
  β = E⟨∇f_B(x*), H_Bu⟩, c2 = c0 + 2rβ + r²E‖H_Bu‖², and ρ² = 1 / (1 + r²κ / (c0 + rβ)²),
  κ = c0E‖H_Bu‖² − β² ≥ 0 by Cauchy–Schwarz: ρ² falls for every r when β ≥ 0, and only up
  to r_c = c0/|β| (where c1 = 0) when β < 0; the notes report β and r_c.)

Instances: least squares n = 200, d = 5, κ = 10; the diabetes data (standardised); softmax
regression (n = 200, d = 5 + bias, K = 3, ridge 0.1; x* by Newton, the sampling constants are
exact finite sums at x*, i.e. local to x*). Teachers: x*, the r-sequence, an early-stopped SGD
iterate, top-k of x* (k = dim/2) and 3-bit quantised x*; b = 1 and b = 10.
"""
from __future__ import annotations

import numpy as np

from .. import teachers, theory
from ..problems import LeastSquares, synthetic
from ..rng import minibatch_indices
from .base import CheckResult, Timer, check_seeds, make_row
from .claim04_ls_dynamics import diabetes_problem, mean_half_width, t_quantile

CLAIM, NAME = 8, "variance_reduction"
R_SEQUENCE = (0.03, 0.1, 0.3, 1.0, 3.0)
BATCHES = (1, 10)
FLOOR = 1e-12
MC_SEED = 8


def instances():
    """(label, problem, early-stopping step) of the check."""
    return [
        ("least squares n=200 d=5 κ=10", synthetic.least_squares(200, 5, cond=10.0, seed=0), 0.05),
        ("diabetes 442×10 standardised", diabetes_problem(), 0.02),
        ("softmax n=200 d=5+1 K=3 α=0.1", synthetic.softmax(200, 5, 3, l2=0.1, seed=0), 0.5),
    ]


def teacher_set(p, es_step):
    """[(label, Teacher)]: x*, the r-sequence, early-stopped, top-k, 3-bit."""
    xs = p.solution()
    out = [("θ = x*", teachers.optimum(p))]
    out += [(f"θ at r={r:g}", teachers.at_distance(p, r, seed=1)) for r in R_SEQUENCE]
    out += [("early-stopped θ (50 SGD steps)", teachers.early_stopped(p, 50, es_step, seed=2)),
            (f"top-{p.dim // 2} θ", teachers.top_k(p, xs, p.dim // 2)),
            ("3-bit θ", teachers.quantized(p, xs, 3))]
    return out


def independent_noise(p, theta, lam, b, n_batches, level_q):
    """E‖∇f_B(x*) − λ∇f_B(θ)‖² from per-sample gradients: exact for b = 1, Monte Carlo for b > 1.

    Returns (value, half-width); the minibatches come from ``kdsim.rng`` (without replacement).
    """
    G = p.sample_grads(p.solution())
    T = p.sample_grads(theta)
    V = G - lam * T
    if b == 1:
        return float(np.mean(np.einsum("ij,ij->i", V, V))), 0.0
    idx = minibatch_indices(MC_SEED, np.arange(n_batches, dtype=np.uint64), 0, p.n, b)
    VB = V[idx].mean(axis=1)
    m, h, _ = mean_half_width(np.einsum("ij,ij->i", VB, VB), level_q)
    return float(m), float(h)


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 2
MIN_SEEDS_REASON = "seeds counts Monte Carlo minibatches; Student-t intervals need two"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 8 (exact and minibatch Monte Carlo, no simulation: ``backend`` is not used;
    ``seeds`` sets the number of Monte Carlo minibatches, default 20000, 4000 when quick)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    n_batches = seeds or (4000 if quick else 20000)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    with Timer(res):
        insts = instances()
        sets = [(label, p, teacher_set(p, es)) for label, p, es in insts]
        n_mc = sum(len(ts) for _, _, ts in sets) * sum(b > 1 for b in BATCHES)
        q = t_quantile(level, n_mc, n_batches)
        for label, p, tset in sets:
            for b in BATCHES:
                rho2 = {}
                for tname, teacher in tset:
                    c = theory.constants(p, teacher.theta, batch_size=b)
                    rho2[tname] = c.rho ** 2
                    _teacher_rows(res, f"{label}, {tname}, b={b}", p, c, teacher.theta, b, n_batches, q,
                                  optimum=tname == "θ = x*")
                for r0, r1 in zip(R_SEQUENCE[:-1], R_SEQUENCE[1:]):
                    res.rows.append(make_row(CLAIM, f"{label}, b={b}", f"ρ²(r={r0:g}) − ρ²(r={r1:g}) (teacher worsens)",
                                             rho2[f"θ at r={r0:g}"] - rho2[f"θ at r={r1:g}"], 0.0, "≥"))
                if isinstance(p, LeastSquares):
                    res.notes.append(_ray_note(p, label, b))
        res.notes.append(f"b = 10 rows: Monte Carlo over {n_batches} minibatches (kdsim.rng, seed {MC_SEED}), "
                         f"t quantile {q:.3f} (Bonferroni over {n_mc} rows at level {level})")
    return res


def _teacher_rows(res, tag, p, c, theta, b, n_batches, q, optimum):
    s2 = c.sigma2_star
    rho2 = c.rho ** 2
    lam = theory.lambda_hat(c)
    target = (1.0 - rho2) * s2
    res.rows.append(make_row(CLAIM, tag, f"σ²_*(λ̂, θ) from the KD-noise quadratic (λ̂ = {lam:.4g}) vs (1 − ρ²)σ²_*",
                             c.sigma2_kd(lam), target, "≈", tolerance=FLOOR * s2))
    value, half = independent_noise(p, theta, lam, b, n_batches, q)
    if b == 1:
        res.rows.append(make_row(CLAIM, tag, "(1/n)Σ_i‖∇f_i(x*) − λ̂∇f_i(θ)‖² (every sample) vs (1 − ρ²)σ²_*",
                                 value, target, "≈", tolerance=1e-10 * s2))
    else:
        res.rows.append(make_row(CLAIM, tag, f"Monte Carlo E‖∇f_B(x*) − λ̂∇f_B(θ)‖² ({n_batches} minibatches) "
                                 "vs (1 − ρ²)σ²_*", value, target, "≈", tolerance=half + FLOOR * s2,
                                 ci_low=value - half, ci_high=value + half))
    if optimum:
        res.rows.append(make_row(CLAIM, tag, "1 − ρ² (perfect teacher: full reduction)", 1.0 - rho2, FLOOR, "≤"))
    else:
        res.rows.append(make_row(CLAIM, tag, "1 − ρ² > 0 (partial reduction)", 1.0 - rho2, FLOOR, "≥"))
        res.rows.append(make_row(CLAIM, tag, "ρ² > 0, i.e. 1 − ρ² < 1 (some reduction)", rho2, FLOOR, "≥"))


def _ray_note(p, label, b):
    """c1(r) = c0 + rβ along the r-sequence's ray (least squares): β and the radius where ρ² turns."""
    c_a = theory.constants(p, teachers.at_distance(p, 1.0, seed=1).theta, batch_size=b)
    c_b = theory.constants(p, teachers.at_distance(p, 2.0, seed=1).theta, batch_size=b)
    beta = c_b.cross_star_teacher - c_a.cross_star_teacher
    turn = "ρ² falls for every r > 0" if beta >= 0 else f"ρ² falls only up to r_c = {c_a.sigma2_star / -beta:.4g}"
    return f"{label}, b={b}: along the r-sequence ray c1(r) = c0 + rβ with c0 = {c_a.sigma2_star:.4g}, β = {beta:.4g}: {turn}"
