"""Claim 8 (THEORY.md §8): KD at λ̂ reduces the gradient noise at x* by exactly the factor 1 − ρ².

With c0 = σ²_* = E‖∇f_B(x*)‖², c1 = E⟨∇f_B(x*), ∇f_B(θ)⟩, c2 = E‖∇f_B(θ)‖²,
ρ = c1/√(c0c2) and λ̂ = c1/c2 (THEORY §3, §6):

    σ²_*(λ̂, θ) = E‖∇f_B(x*) − λ̂∇f_B(θ)‖² = (1 − ρ²) σ²_*,
    0 < 1 − ρ² < 1 for an imperfect teacher,  1 − ρ² = 0 for θ = x*,

and ρ² falls as the teacher worsens. Rows:

* Identity, one row per instance: the largest |σ²_*(λ̂, θ) − (1 − ρ²)σ²_*| / σ²_* over its teachers
  and both batch sizes ≈ 0, tolerance 1e-10 (rounding). σ²_*(λ̂, θ) is evaluated here from the
  problem's per-sample vectors v_i = ∇f_i(x*) − λ̂∇f_i(θ) with the ω(b) identity of THEORY §1,
  E‖v_B‖² = ‖v̄‖² + ω(b)(1/n)Σ‖v_i − v̄‖² (for b = 1 the plain average (1/n)Σ‖v_i‖²), not from
  the quadratic c0 − 2λc1 + λ²c2 of ``theory.constants`` (which equals (1 − ρ²)c0 by algebra).
* Monte Carlo, per (instance, teacher, b) for b = 1 and b = 10: the empirical variance-reduction
  factor R̂ = mean_k ‖∇f_{B_k}(x*) − λ̂∇f_{B_k}(θ)‖² / mean_k ‖∇f_{B_k}(x*)‖² over N minibatches
  B_k drawn without replacement by ``kdsim.rng`` (seed ``MC_SEED``; the same minibatches for
  numerator and denominator) ≈ 1 − ρ². Tolerance: the delta-method half-width of the ratio of
  means, q · sd_k(Y_k − R̂X_k) / (√N · mean_k X_k), with the Student-t quantile q at family-wise
  level ``level`` (Bonferroni over every Monte Carlo row), plus 1e-12.
* Per (instance, b): θ = x*: 1 − ρ² ≈ 0 (tolerance 1e-12; full reduction); over the imperfect
  teachers, the largest ρ² ≤ 1 − 1e-12 (partial reduction: 1 − ρ² > 0) and the largest 1 − ρ²
  ≤ 1 − 1e-12 (some reduction: ρ² > 0). Their ratio columns are the largest ρ² and 1 − ρ².
* Teachers at r = 0.03, 0.1, 0.3, 1, 3 along one direction u: ρ²(r_k) − ρ²(r_{k+1}) ≥ 0, one row
  per comparison and b. (For least squares ∇f_B(θ) = ∇f_B(x*) + rH_Bu, so c1 = c0 + rβ with
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
from ..theory.sampling import omega
from .base import CheckResult, Timer, check_seeds, make_row
from .claim04_ls_dynamics import diabetes_problem, t_quantile

CLAIM, NAME = 8, "variance_reduction"
R_SEQUENCE = (0.03, 0.1, 0.3, 1.0, 3.0)
BATCHES = (1, 10)
#: threshold of the strict inequalities 0 < 1 − ρ² < 1 and the perfect teacher's 1 − ρ² = 0
FLOOR = 1e-12
#: relative tolerance of the identity rows (float rounding of sums over n samples)
IDENTITY_RTOL = 1e-10
MC_SEED = 8
OPTIMUM = "θ = x*"


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
    out = [(OPTIMUM, teachers.optimum(p))]
    out += [(f"θ at r={r:g}", teachers.at_distance(p, r, seed=1)) for r in R_SEQUENCE]
    out += [("early-stopped θ (50 SGD steps)", teachers.early_stopped(p, 50, es_step, seed=2)),
            (f"top-{p.dim // 2} θ", teachers.top_k(p, xs, p.dim // 2)),
            ("3-bit θ", teachers.quantized(p, xs, 3))]
    return out


def direct_noise(p, theta, lam, b):
    """E‖∇f_B(x*) − λ∇f_B(θ)‖² from the per-sample vectors with the ω(b) identity (THEORY §1)."""
    V = p.sample_grads(p.solution()) - lam * p.sample_grads(theta)
    if b == 1:
        return float(np.mean(np.einsum("ij,ij->i", V, V)))
    vbar = V.mean(axis=0)
    C = V - vbar
    return float(vbar @ vbar + omega(p.n, b) * np.mean(np.einsum("ij,ij->i", C, C)))


def minibatches(n, b, n_batches):
    """(N, b) indices of N minibatches drawn without replacement by ``kdsim.rng`` (seed MC_SEED)."""
    return minibatch_indices(MC_SEED, np.arange(n_batches, dtype=np.uint64), 0, n, b)


def vr_factor_mc(G, T, lam, idx, q):
    """(R̂, half-width): the ratio of means mean‖G_B − λT_B‖² / mean‖G_B‖² over the minibatches ``idx``.

    ``G``, ``T``: per-sample gradients at x* and θ (n, dim). The half-width is the delta method's,
    q · sd(Y − R̂X) / (√N · mean X), Y and X the per-minibatch numerator and denominator.
    """
    GB = G[idx].mean(axis=1)
    VB = GB - lam * T[idx].mean(axis=1)
    Y = np.einsum("ij,ij->i", VB, VB)
    X = np.einsum("ij,ij->i", GB, GB)
    xbar = X.mean()
    R = float(Y.mean() / xbar)
    N = len(X)
    half = float(q * np.std(Y - R * X, ddof=1) / (np.sqrt(N) * xbar)) if N > 1 else float("inf")
    return R, half


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
        sets = [(label, p, teacher_set(p, es)) for label, p, es in instances()]
        n_mc = sum(len(ts) for _, _, ts in sets) * len(BATCHES)
        q = t_quantile(level, n_mc, n_batches)
        for label, p, tset in sets:
            _instance_rows(res, label, p, tset, n_batches, q)
        res.notes.append(f"Monte Carlo rows: {n_batches} minibatches per (instance, b) (kdsim.rng, seed {MC_SEED}, "
                         f"the same for every teacher), delta-method t quantile {q:.3f} (Bonferroni over {n_mc} "
                         f"rows at level {level})")
    return res


def _instance_rows(res, label, p, tset, n_batches, q):
    """The rows of one instance: its identity row first, then per b the Monte Carlo and ρ² rows."""
    G = p.sample_grads(p.solution())
    worst = (-1.0, "")
    rows = []
    for b in BATCHES:
        idx = minibatches(p.n, b, n_batches)
        rho2 = {}
        for tname, teacher in tset:
            c = theory.constants(p, teacher.theta, batch_size=b)
            rho2[tname] = c.rho ** 2
            lam = theory.lambda_hat(c)
            factor = 1.0 - c.rho ** 2
            gap = abs(direct_noise(p, teacher.theta, lam, b) - factor * c.sigma2_star) / c.sigma2_star
            if gap > worst[0]:
                worst = (gap, f"{tname}, b={b}")
            R, half = vr_factor_mc(G, p.sample_grads(teacher.theta), lam, idx, q)
            rows.append(make_row(CLAIM, f"{label}, {tname}, b={b}",
                                 f"Monte Carlo factor E‖∇f_B(x*) − λ̂∇f_B(θ)‖² / E‖∇f_B(x*)‖² "
                                 f"({n_batches} minibatches, λ̂ = {lam:.4g}) ≈ 1 − ρ²", R, factor, "≈",
                                 tolerance=half + FLOOR, ci_low=R - half, ci_high=R + half))
        tag = f"{label}, b={b}"
        imperfect = {k: v for k, v in rho2.items() if k != OPTIMUM}
        rows.append(make_row(CLAIM, tag, f"1 − ρ² for {OPTIMUM} (full reduction)", 1.0 - rho2[OPTIMUM], 0.0, "≈",
                             tolerance=FLOOR))
        top = max(imperfect, key=imperfect.get)
        rows.append(make_row(CLAIM, tag, f"largest ρ² over the {len(imperfect)} imperfect teachers ({top}) "
                             "< 1 (partial reduction: 1 − ρ² > 0)", imperfect[top], 1.0 - FLOOR, "≤"))
        low = min(imperfect, key=imperfect.get)
        rows.append(make_row(CLAIM, tag, f"largest 1 − ρ² over the {len(imperfect)} imperfect teachers ({low}) "
                             "< 1 (some reduction: ρ² > 0)", 1.0 - imperfect[low], 1.0 - FLOOR, "≤"))
        for r0, r1 in zip(R_SEQUENCE[:-1], R_SEQUENCE[1:]):
            rows.append(make_row(CLAIM, tag, f"ρ²(r={r0:g}) − ρ²(r={r1:g}) (teacher worsens)",
                                 rho2[f"θ at r={r0:g}"] - rho2[f"θ at r={r1:g}"], 0.0, "≥"))
        if isinstance(p, LeastSquares):
            res.notes.append(_ray_note(p, label, b))
    res.rows.append(make_row(
        CLAIM, label, f"identity: largest |σ²_*(λ̂, θ) − (1 − ρ²)σ²_*| / σ²_* over {len(tset)} teachers × "
                      f"b ∈ {{{', '.join(map(str, BATCHES))}}} ({worst[1]}; σ²_*(λ̂, θ) from the per-sample vectors)",
        worst[0], 0.0, "≈", tolerance=IDENTITY_RTOL))
    res.rows += rows


def _ray_note(p, label, b):
    """c1(r) = c0 + rβ along the r-sequence's ray (least squares): β and the radius where ρ² turns."""
    c_a = theory.constants(p, teachers.at_distance(p, 1.0, seed=1).theta, batch_size=b)
    c_b = theory.constants(p, teachers.at_distance(p, 2.0, seed=1).theta, batch_size=b)
    beta = c_b.cross_star_teacher - c_a.cross_star_teacher
    turn = "ρ² falls for every r > 0" if beta >= 0 else f"ρ² falls only up to r_c = {c_a.sigma2_star / -beta:.4g}"
    return f"{label}, b={b}: along the r-sequence ray c1(r) = c0 + rβ with c0 = {c_a.sigma2_star:.4g}, β = {beta:.4g}: {turn}"
