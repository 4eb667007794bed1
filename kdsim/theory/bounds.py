"""The bounds of docs/theory.md §4 as small objects built from a ``Constants``.

Every bound has the form

    quantity(t) ≤ initial · rate^t + neighbourhood,

knows the quantity it bounds (``quantity`` in words, ``record`` as a record name),
its assumptions (text), its step-size condition and γ_max, its stationary
neighbourhood split into named terms (``neighbourhood_terms``), and its source
("derived": every bound here was derived for kdsim, docs/theory.md §4).

Outside its condition a bound is *not applicable*: ``applicable`` is False,
``status`` reads "not applicable: γ = … > γ_max = …", and ``Bound.curve``
raises ``NotApplicableError`` (a ValueError) with that text, so that a check
can report it with γ_max. A bound also becomes not applicable when μ ≤ 0 (no strong
quasi-convexity / PL constant).

Derivations (one step, B independent of x_t; e_t = x_t − x*; g = ∇f_B(x) − λ t_B,
t_B the teacher term, its mean t̄ = ∇f(θ)):

* T1: E‖g‖² ≤ 2E‖∇f_B(x) − ∇f_B(x*)‖² + 2σ²_*(λ,θ) ≤ 4𝓛(f(x) − f*) + 2σ²_*(λ,θ);
  −2γ⟨∇f(x), e⟩ ≤ −2γ(f(x) − f*) − γμ‖e‖² (strong quasi-convexity);
  2γλ⟨t̄, e⟩ ≤ (γμ/2)‖e‖² + (2γλ²/μ)‖t̄‖² (Young). With γ ≤ 1/(2𝓛):
  E‖e_{t+1}‖² ≤ (1 − γμ/2)‖e_t‖² + 2γ²σ²_*(λ,θ) + 2γλ²‖t̄‖²/μ; unrolling gives
  neighbourhood (4γ/μ)σ²_*(λ,θ) + (4λ²/μ²)‖t̄‖².
* T1': SGD on F_λ(x) = f(x) − λ⟨t̄, x⟩ whose per-sample functions f_i − λ⟨t_i, ·⟩ are
  convex and L_i-smooth; the classic argument about x_λ with γ ≤ 1/(2L_max).
* T2: descent lemma, −γ⟨∇f, ∇f − λt̄⟩ ≤ −(γ/2)‖∇f‖² + (γλ²/2)‖t̄‖², PL, and the same
  second-moment bound; γ ≤ μ/(4L𝓛) makes 2Lγ²𝓛 ≤ γμ/2.
* SGD (classic, Gower et al. 2019 Thm 3.1): γ ≤ 1/(2𝓛).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .. import _validate as V
from ..problems.least_squares import LeastSquares
from .constants import Constants, teacher_rows
from .sampling import batch_sq_norm

#: relative slack when comparing γ with γ_max (a γ set to γ_max exactly stays applicable)
GAMMA_RTOL = 1e-12


class NotApplicableError(ValueError):
    """A bound was evaluated outside its step-size condition (or without μ > 0)."""


@dataclass(frozen=True, eq=False)
class Bound:
    """quantity(t) ≤ initial · rate^t + neighbourhood, valid when ``applicable``."""

    name: str
    quantity: str
    record: str
    assumptions: str
    condition: str
    gamma: float
    gamma_max: float
    lam: float
    rate: float
    initial: float
    neighbourhood: float
    neighbourhood_terms: dict
    applicable: bool
    status: str
    constants_used: dict
    source: str = "derived"
    extra: dict = field(default_factory=dict)

    def curve(self, t):
        """Bound values on a time axis of iteration counts (array or scalar, ≥ 0).

        Raises NotApplicableError (with the status, naming γ_max) when the bound does
        not apply.
        """
        if not self.applicable:
            raise NotApplicableError(f"{self.name}: {self.status}")
        t = np.asarray(t, dtype=np.float64)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("t must hold finite iteration counts >= 0")
        out = self.initial * self.rate ** t + self.neighbourhood
        return float(out) if out.ndim == 0 else out

    def tightness(self, t, observed):
        """bound / observed on the same time axis (≥ 1 wherever the bound holds)."""
        observed = np.asarray(observed, dtype=np.float64)
        return self.curve(t) / observed


def _applicability(name, gamma, gamma_max, mu):
    if not mu > 0:
        return False, f"not applicable: μ = {mu:.6g} ≤ 0 (no strong quasi-convexity / PL constant)"
    if gamma > gamma_max * (1.0 + GAMMA_RTOL):
        return False, f"not applicable: γ = {gamma:.6g} > γ_max = {gamma_max:.6g}"
    return True, f"applicable: γ = {gamma:.6g} ≤ γ_max = {gamma_max:.6g}"


def _common(c, gamma, lam):
    if not isinstance(c, Constants):
        raise TypeError(f"constants must be a kdsim.theory Constants; got {type(c).__name__}")
    gamma = V.positive_float("gamma", gamma)
    lam = V.finite_float("lam", lam)
    return gamma, lam


def _dist2(problem, a, b):
    return float(np.sum((np.ravel(problem.canonical(a)) - np.ravel(problem.canonical(b))) ** 2))


def _x0(c, x0):
    p = c.problem
    return p.default_x0() if x0 is None else V.as_vector("x0", x0, p.dim)


def _used(c, *keys):
    return {k: c.provenance.get(k, "exact") for k in keys}


def _div(num, den):
    return num / den if den > 0 else float("inf")


def t1(constants, gamma, lam, x0=None):
    """T1: E‖x_t − x*‖² ≤ (1 − γμ/2)^t ‖x_0 − x*‖² + (4γ/μ)σ²_*(λ,θ) + (4λ²/μ²)‖∇f(θ)‖².

    Assumptions: f μ-strongly quasi-convex, expected smoothness 𝓛(b); any λ.
    Condition γ ≤ 1/(2𝓛(b)).
    """
    c = constants
    gamma, lam = _common(c, gamma, lam)
    x0 = _x0(c, x0)
    gmax = 1.0 / (2.0 * c.expected_smoothness)
    ok, status = _applicability("T1", gamma, gmax, c.mu)
    noise = _div(4.0 * gamma * c.sigma2_kd(lam), c.mu)
    bias = _div(4.0 * lam * lam * c.teacher_bias ** 2, c.mu * c.mu) if lam != 0 else 0.0
    return Bound(
        name="T1", quantity="E‖x_t − x*‖²", record="dist2_opt",
        assumptions="f μ-strongly quasi-convex about x*; f_i convex with expected smoothness 𝓛(b) "
                    "(b-minibatches without replacement); any λ; the bias cross-term by Young's inequality",
        condition="γ ≤ 1/(2𝓛(b))", gamma=gamma, gamma_max=gmax, lam=lam,
        rate=1.0 - gamma * c.mu / 2.0, initial=_dist2(c.problem, x0, c.x_star),
        neighbourhood=noise + bias, neighbourhood_terms={"noise": noise, "bias": bias},
        applicable=ok, status=status, constants_used=_used(c, "mu", "expected_smoothness", "sigma2_kd", "teacher_bias"),
    )


def sgd_bound(constants, gamma, x0=None):
    """Classic SGD: E‖x_t − x*‖² ≤ (1 − γμ)^t ‖x_0 − x*‖² + 2γσ²_*/μ, for γ ≤ 1/(2𝓛(b))."""
    c = constants
    gamma, _ = _common(c, gamma, 0.0)
    x0 = _x0(c, x0)
    gmax = 1.0 / (2.0 * c.expected_smoothness)
    ok, status = _applicability("SGD", gamma, gmax, c.mu)
    noise = _div(2.0 * gamma * c.sigma2_star, c.mu)
    return Bound(
        name="SGD", quantity="E‖x_t − x*‖²", record="dist2_opt",
        assumptions="f μ-strongly quasi-convex about x*; f_i convex with expected smoothness 𝓛(b) "
                    "(Gower et al. 2019, Thm 3.1); λ = 0",
        condition="γ ≤ 1/(2𝓛(b))", gamma=gamma, gamma_max=gmax, lam=0.0,
        rate=1.0 - gamma * c.mu, initial=_dist2(c.problem, x0, c.x_star),
        neighbourhood=noise, neighbourhood_terms={"noise": noise},
        applicable=ok, status=status, constants_used=_used(c, "mu", "expected_smoothness", "sigma2_star"),
    )


def x_lambda(problem, theta, lam, teacher_term="f", tol=1e-12, max_iter=100):
    """x_λ solving ∇f(x) = λ t̄ (t̄ = ∇f(θ), or ∇ℓ(θ) for teacher_term="data").

    Least squares: (1 − λ)x* + λθ for the "f" term (exact); otherwise a solve with H.
    Other problems: damped Newton on F_λ(x) = f(x) − λ⟨t̄, x⟩ from x* (pseudo-inverse
    steps where ∇²f is singular); raises if ‖∇F_λ‖ does not reach ``tol``·max(1, ‖t̄‖).
    """
    lam = V.finite_float("lam", lam)
    x_star = problem.solution()
    _, tbar, _ = teacher_rows(problem, theta, x_star, teacher_term, "parameter")
    if isinstance(problem, LeastSquares):
        th = problem.check_teacher(theta)
        if teacher_term == "f" or problem.l2 == 0.0:
            return (1.0 - lam) * x_star + lam * th
        H = problem.hessian(x_star)
        return x_star + scipy.linalg.solve(H, lam * tbar - problem.grad(x_star), assume_a="pos")
    if lam == 1.0 and teacher_term == "f":
        return np.array(problem.check_teacher(theta), dtype=np.float64)   # ∇f(θ) = t̄ exactly
    x = x_star.copy()
    target = lam * tbar
    scale = max(1.0, float(np.linalg.norm(target)))

    def F(z):
        return problem.loss(z) - float(target @ z)

    for _ in range(max_iter):
        g = problem.grad(x) - target
        if np.linalg.norm(g) <= tol * scale:
            return x
        H = problem.hessian(x)
        dx, *_ = np.linalg.lstsq(H, -g, rcond=None)
        f0, s = F(x), 1.0
        slope = float(g @ dx)
        while s > 1e-12 and F(x + s * dx) > f0 + 1e-4 * s * slope:
            s *= 0.5
        if s <= 1e-12:      # no decrease left at float precision: stop and judge the gradient
            break
        x = x + s * dx
    g = problem.grad(x) - target
    if np.linalg.norm(g) <= 1e3 * tol * scale:
        return x
    raise RuntimeError(f"x_lambda: Newton did not converge (‖∇F_λ‖ = {np.linalg.norm(g):.3g})")


def t1_prime(constants, gamma, lam, x0=None):
    """T1': E‖x_t − x_λ‖² ≤ (1 − γμ)^t ‖x_0 − x_λ‖² + (2γ/μ)σ²_λ, σ²_λ = E‖∇f_B(x_λ) − λ t_B‖².

    Assumptions: each f_i convex and L_max-smooth, f μ-strongly convex. Condition
    γ ≤ 1/(2L_max). Also ‖x_λ − x*‖ ≤ λ‖∇f(θ)‖/μ (``extra["shift_bound"]``), and the
    point x_λ itself is in ``extra["x_lambda"]``. Needs a teacher in parameter space.
    """
    c = constants
    gamma, lam = _common(c, gamma, lam)
    x0 = _x0(c, x0)
    p = c.problem
    xl = x_lambda(p, c.theta, lam, c.teacher_term)
    T_rows, _, _ = teacher_rows(p, c.theta, c.x_star, c.teacher_term, "parameter")
    sig2 = batch_sq_norm(p.sample_grads(xl) - lam * T_rows, c.batch_size)
    gmax = 1.0 / (2.0 * c.L_max)
    ok, status = _applicability("T1'", gamma, gmax, c.mu)
    noise = _div(2.0 * gamma * sig2, c.mu)
    return Bound(
        name="T1'", quantity="E‖x_t − x_λ‖²", record="dist2_centre",
        assumptions="each f_i convex and L_i-smooth (L_max = max L_i), f μ-strongly convex; "
                    "KD is SGD on F_λ(x) = f(x) − λ⟨∇f(θ), x⟩ whose minimiser x_λ solves ∇f(x_λ) = λ∇f(θ)",
        condition="γ ≤ 1/(2 L_max)", gamma=gamma, gamma_max=gmax, lam=lam,
        rate=1.0 - gamma * c.mu, initial=_dist2(p, x0, xl),
        neighbourhood=noise, neighbourhood_terms={"noise": noise},
        applicable=ok, status=status, constants_used=_used(c, "mu", "L_max"),
        extra={"sigma2_lambda": sig2, "x_lambda": xl,
               "shift_bound": _div(abs(lam) * c.teacher_bias, c.mu),
               "shift": float(np.sqrt(_dist2(p, xl, c.x_star)))},
    )


def t2(constants, gamma, lam, x0=None):
    """T2: E[f(x_t) − f*] ≤ (1 − γμ/2)^t (f(x_0) − f*) + (2Lγ/μ)σ²_*(λ,θ) + (λ²/μ)‖∇f(θ)‖².

    Assumptions: f L-smooth and μ-PL, f_i convex with expected smoothness 𝓛(b).
    Condition γ ≤ μ/(4L𝓛(b)).
    """
    c = constants
    gamma, lam = _common(c, gamma, lam)
    x0 = _x0(c, x0)
    p = c.problem
    gmax = _div(c.mu, 4.0 * c.L * c.expected_smoothness) if c.mu > 0 else 0.0
    ok, status = _applicability("T2", gamma, gmax, c.mu)
    noise = _div(2.0 * c.L * gamma * c.sigma2_kd(lam), c.mu)
    bias = _div(lam * lam * c.teacher_bias ** 2, c.mu) if lam != 0 else 0.0
    return Bound(
        name="T2", quantity="E[f(x_t) − f*]", record="subopt",
        assumptions="f L-smooth and satisfies PL with μ; f_i convex with expected smoothness 𝓛(b); any λ",
        condition="γ ≤ μ/(4 L 𝓛(b))", gamma=gamma, gamma_max=gmax, lam=lam,
        rate=1.0 - gamma * c.mu / 2.0, initial=float(p.suboptimality(x0[None, :])[0]),
        neighbourhood=noise + bias, neighbourhood_terms={"noise": noise, "bias": bias},
        applicable=ok, status=status,
        constants_used=_used(c, "mu", "L", "expected_smoothness", "sigma2_kd", "teacher_bias"),
    )


def all_bounds(constants, gamma, lam, x0=None):
    """{"T1", "T1'", "T2", "SGD"} at one (γ, λ, x_0); the SGD bound ignores λ."""
    return {"T1": t1(constants, gamma, lam, x0), "T1'": t1_prime(constants, gamma, lam, x0),
            "T2": t2(constants, gamma, lam, x0), "SGD": sgd_bound(constants, gamma, x0)}
