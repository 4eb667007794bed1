"""Claim 1 (THEORY.md §8): the KD gradient is SGD with the teacher's gradient as control variate.

For least squares, softmax regression at τ = 1 and canonical-link GLMs (logistic, Poisson),
on every minibatch B and for every λ,

    ∇_x KD_B(x | θ, λ) = ∇f_B(x) − λ∇f_B(θ)         (to float precision, ≤ 1e-10 relative),

with a ridge α on the student only: ∇f_B(x) − λ∇ℓ_B(θ), i.e. the distillation gradient of f
minus λαθ. At temperature τ ≠ 1 the identity fails (≥ 1e-3 relative). Deep linear nets:
KD-grad − ∇f_B(x) = −λ J(x)ᵀ∇g_B(Θ̄) exactly (function space, checked against directional
derivatives of the end-to-end map); in parameter space, with a same-architecture θ, the gap
‖KD-grad − (∇f_B(x) − λ∇f_B(θ))‖ is 0 at x = θ and grows like ‖x − θ‖ (log-log slope 1).
"""
from __future__ import annotations

import numpy as np

from ..problems import synthetic
from .base import CheckResult, Timer, check_seeds, make_row

CLAIM, NAME = 1, "identity"
LAMS = (0.0, 0.3, 0.7, 1.0, 1.5)


def relative_gap(a, b):
    """‖a − b‖ / max(‖a‖, ‖b‖, tiny)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def identity_gap(problem, x, theta, batches, temperature=1.0, teacher_grad=None):
    """max over λ and minibatches of the relative gap between kd_grad and ∇f_B(x) − λ T_B(θ)."""
    teacher_grad = teacher_grad or problem.grad
    worst = 0.0
    for idx in batches:
        for lam in LAMS:
            kd = problem.kd_grad(x, theta, lam, idx, temperature=temperature)
            worst = max(worst, relative_gap(kd, problem.grad(x, idx) - lam * teacher_grad(theta, idx)))
    return worst


def _points(problem, rng, n_batches=4, b=5):
    x = problem.solution() + rng.standard_normal(problem.dim)
    theta = problem.solution() + rng.standard_normal(problem.dim)
    batches = [None] + [rng.choice(problem.n, b, replace=False) for _ in range(n_batches)]
    return x, theta, batches


def deep_linear_function_space_gap(problem, x, theta_map, lam, idx, rng, eps=1e-5, n_dirs=6):
    """Relative gap of ⟨KD-grad − ∇f_B(x), v⟩ and −λ⟨∇g_B(Θ̄), DW(x)[v]⟩ over random v.

    DW(x)[v] is a central difference of the end-to-end map (exact for two layers, O(eps²) beyond),
    and ∇g_B(Θ̄) = (1/b) Σ (Θ̄a_i − y_i) a_iᵀ for the squared loss: nothing here uses the
    problem's own gradient code for the right-hand side.
    """
    A, Y = problem.A[idx], problem.Y[idx]
    G = (A @ theta_map.T - Y).T @ A / len(idx)
    lhs, rhs = [], []
    diff = problem.kd_grad(x, theta_map, lam, idx) - problem.grad(x, idx)
    for _ in range(n_dirs):
        v = rng.standard_normal(problem.dim)
        dW = (problem.end_to_end(x + eps * v) - problem.end_to_end(x - eps * v)) / (2 * eps)
        lhs.append(diff @ v)
        rhs.append(-lam * np.sum(G * dW))
    return relative_gap(np.array(lhs), np.array(rhs))


#: the fewest seeds the check accepts, and why
MIN_SEEDS = 1
MIN_SEEDS_REASON = "deterministic: seeds are not used"


def check(quick=False, seeds=None, backend="numpy", level=0.99):
    """Run claim 1 (deterministic: ``seeds`` and ``backend`` are not used)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    rng = np.random.default_rng(0)
    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    row = res.rows.append
    with Timer(res):
        exact = [
            ("least squares n=60 d=6", synthetic.least_squares(60, 6, seed=0)),
            ("softmax K=4 d=5+bias, τ=1", synthetic.softmax(80, 5, 4, l2=0.0, seed=0, separation=0.5)),
            ("logistic d=5", synthetic.logistic(80, 5, seed=0)),
            ("Poisson d=5", synthetic.poisson(80, 5, seed=0)),
        ]
        for label, p in exact:
            x, theta, batches = _points(p, rng)
            row(make_row(CLAIM, label, "max rel. gap kd_grad vs ∇f_B(x) − λ∇f_B(θ)",
                         identity_gap(p, x, theta, batches), 0.0, "≤", 1e-10))
        ridge = synthetic.softmax(80, 5, 4, l2=0.1, seed=1)
        x, theta, batches = _points(ridge, rng)
        row(make_row(CLAIM, "softmax α=0.1 (ridge on the student)",
                     "max rel. gap kd_grad vs ∇f_B(x) − λ∇ℓ_B(θ)",
                     identity_gap(ridge, x, theta, batches, teacher_grad=ridge.data_grad), 0.0, "≤", 1e-10))
        gap = ridge.distillation_grad(x, theta, 0.7) - ridge.kd_grad(x, theta, 0.7)
        row(make_row(CLAIM, "softmax α=0.1 (ridge on the student)",
                     "rel. gap (distillation grad − kd_grad) vs −λαθ",
                     relative_gap(gap, -0.7 * ridge.l2 * theta), 0.0, "≤", 1e-10))
        soft = exact[1][1]
        x, theta, batches = _points(soft, rng)
        row(make_row(CLAIM, "softmax K=4 d=5+bias, τ=2", "min over λ>0 rel. gap at τ = 2 (identity must fail)",
                     min(relative_gap(soft.kd_grad(x, theta, lam, temperature=2.0),
                                      soft.grad(x) - lam * soft.grad(theta)) for lam in LAMS[1:]),
                     1e-3, "≥"))
        _deep_linear_rows(res, rng, quick)
    return res


def _deep_linear_rows(res, rng, quick):
    for hidden in ((4,), (4, 3)):
        p = synthetic.deep_linear(60, 4, 3, hidden=hidden, seed=2)
        label = f"deep linear 4→{'→'.join(map(str, hidden))}→3, squared"
        x = p.default_x0() + 0.3 * rng.standard_normal(p.dim)
        theta_map = p.solution_map() + 0.2 * rng.standard_normal((p.d_out, p.d_in))
        idx = rng.choice(p.n, 8, replace=False)
        tol = 1e-9 if len(hidden) == 1 else 1e-6   # central differences are exact for two layers
        res.rows.append(make_row(CLAIM, label, "function-space form: rel. gap vs −λ⟨∇g_B(Θ̄), DW(x)[v]⟩",
                                 deep_linear_function_space_gap(p, x, theta_map, 0.7, idx, rng), 0.0, "≤", tol))
        theta = p.solution() + 0.3 * rng.standard_normal(p.dim)      # same architecture
        v = rng.standard_normal(p.dim)
        v /= np.linalg.norm(v)

        def param_gap(eps):
            z = theta + eps * v
            return float(np.linalg.norm(p.kd_grad(z, theta, 0.7) - (p.grad(z) - 0.7 * p.grad(theta))))

        scale = float(np.linalg.norm(p.grad(theta)))
        res.rows.append(make_row(CLAIM, label, "parameter-space gap at x = θ (relative)",
                                 param_gap(0.0) / scale, 0.0, "≤", 1e-12))
        eps = np.logspace(-1, -4, 7)
        slope = np.polyfit(np.log(eps), np.log([param_gap(e) for e in eps]), 1)[0]
        res.rows.append(make_row(CLAIM, label, "log-log slope of the parameter-space gap in ‖x − θ‖",
                                 slope, 1.0, "≈", 0.1))
