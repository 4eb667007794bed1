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

Every variant in one call
-------------------------
``lambda_variants(problem, θ, γ, b)`` returns a ``LambdaVariants``: the four weights above, the
exact i.i.d. ``lambda_opt`` (least squares) and the epoch-end optimum of random reshuffling
(§5.2, ``lambda_opt_epoch`` = (M − c)/(M + D² − 2c)), each a ``Variant`` with its value, its
source ("derived", "as published", "exact", "exact (enumeration)", "Monte Carlo" or "not
applicable"), what it minimises and a note saying why a value is missing. The RR optimum is
exact where every permutation can be enumerated (least squares, n ≤ 7: ``schemes``); above,
pass the Monte Carlo moments ``rr_moments=(M, c)`` of SGD started at x* (M = E‖z‖²,
c = ⟨θ − x*, E z⟩; ``kdsim.api.lambda_curve`` takes them from its λ = 0 records). Scale: under
a_i → s·a_i, b_i → s·b_i at γ/s² (the same iterates) every variant but λ*_published is
unchanged; ``lambda_star_published`` documents its law.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from ..problems.least_squares import LeastSquares
from .constants import Constants
from .exact_ls import _require_ls, mse_sgd

DERIVED = "derived"
AS_PUBLISHED = "as published"
#: sources of ``Variant`` beyond the two tags above
EXACT = "exact"
EXACT_ENUMERATION = "exact (enumeration)"
MONTE_CARLO = "Monte Carlo"
NOT_APPLICABLE = "not applicable"


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


# ---------------------------------------------------------------- every variant in one call
#: display labels of the variants (``Variant.label``)
VARIANT_LABELS = {
    "lambda_hat": "λ̂",
    "lambda_star_t1": "λ*_T1",
    "lambda_star_t2": "λ*_T2",
    "lambda_star_published": "λ*_published",
    "lambda_opt": "λ_opt (i.i.d.)",
    "lambda_opt_epoch": "λ_opt (RR, epoch ends)",
}
#: what each variant minimises
VARIANT_TARGETS = {
    "lambda_hat": "the KD noise σ²_*(λ, θ) alone (§6)",
    "lambda_star_t1": "T1's neighbourhood (4γ/μ)σ²_*(λ,θ) + (4λ²/μ²)‖∇f(θ)‖² (§4, §6)",
    "lambda_star_t2": "T2's neighbourhood (2Lγ/μ)σ²_*(λ,θ) + (λ²/μ)‖∇f(θ)‖² (§4, §6)",
    "lambda_star_published": "the paper's quoted form (§6), not scale-invariant",
    "lambda_opt": "the stationary E‖x − x*‖² = λ²D² + (1 − λ)²MSE_SGD, i.i.d. minibatches (§5)",
    "lambda_opt_epoch": "the epoch-end E‖x − x*‖² = λ²D² + (1 − λ)²M + 2λ(1 − λ)c under reshuffling (§5.2)",
}
#: relative accuracy to which the exact RR moments are converged (epoch count of ``lambda_variants``)
RR_CONVERGENCE = 1e-12
#: most epochs ``lambda_variants`` enumerates for the exact RR optimum
RR_MAX_EPOCHS = 20000
#: the exact RR optimum is reported only if its last epoch moved λ and M by less than this (relative)
RR_SETTLED = 1e-8


@dataclass(frozen=True)
class Variant:
    """One KD weight: ``name`` (e.g. "lambda_hat"), ``label``, ``value`` (NaN when not available),
    ``source`` ("derived", "as published", "exact", "exact (enumeration)", "Monte Carlo" or "not
    applicable"), ``minimises`` (in words) and ``note`` (why a value is missing, how it was had)."""

    name: str
    label: str
    value: float
    source: str
    minimises: str
    note: str = ""

    def as_dict(self):
        return dict(self.__dict__)


@dataclass(frozen=True)
class LambdaVariants:
    """Every KD weight of docs/theory.md §5–§6 for one (problem, teacher, γ, b); see ``lambda_variants``.

    Indexing by name gives a ``Variant`` (``v["lambda_opt"].value``); ``values()`` is
    {name: value}, ``as_pairs()`` {name: (value, source)} (the form of ``all_lambdas``),
    ``records()`` one dict per variant (``pandas.DataFrame(v.records())``).
    """

    variants: tuple
    step: float
    batch_size: int
    sampling: str
    teacher_term: str

    def __getitem__(self, name):
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r}; variants: {', '.join(v.name for v in self.variants)}")

    def __iter__(self):
        return iter(self.variants)

    def __len__(self):
        return len(self.variants)

    @property
    def names(self):
        return tuple(v.name for v in self.variants)

    def values(self):
        """{name: value}."""
        return {v.name: v.value for v in self.variants}

    def as_pairs(self):
        """{name: (value, source)}."""
        return {v.name: (v.value, v.source) for v in self.variants}

    def records(self):
        """One dict per variant (name, label, value, source, minimises, note), plus step and batch_size."""
        return [v.as_dict() | {"step": self.step, "batch_size": self.batch_size} for v in self.variants]

    def __repr__(self):
        width = max(len(v.label) for v in self.variants)
        lines = [f"LambdaVariants(γ={self.step:g}, b={self.batch_size}, RR scheme {self.sampling!r})"]
        for v in self.variants:
            lines.append(f"  {v.label:<{width}} = {v.value:.6g}  [{v.source}]" + (f"  {v.note}" if v.note else ""))
        return "\n".join(lines)


def _variant(name, value, source, note=""):
    return Variant(name, VARIANT_LABELS[name], float(value), source, VARIANT_TARGETS[name], note)


def _missing(name, source, note):
    return _variant(name, float("nan"), source, note)


def rr_epochs(step, mu, steps_per_epoch, rtol=RR_CONVERGENCE, cap=RR_MAX_EPOCHS):
    """Epochs after which SGD's epoch-end moments from x* (M and c) are within ``rtol`` of their limits.

    The mean E z_t (hence c) approaches its limit like (1 − γμ)^t, the second moment like
    (1 − γμ)^{2t}, so E = ⌈ln(1/rtol) / (Kγμ)⌉ epochs of K steps, at least 2 and at most ``cap``.
    Raises ValueError for μ ≤ 0 (no contraction).
    """
    step = V.positive_float("step", step)
    if not mu > 0:
        raise ValueError(f"rr_epochs needs μ > 0; got μ = {mu}")
    return int(min(cap, max(2, math.ceil(math.log(1.0 / rtol) / (steps_per_epoch * step * mu)))))


def lambda_variants(problem, theta, step, batch_size=1, *, sampling="reshuffle", rr_moments=None, epochs=None,
                    drop_last=False, teacher_term="f", constants=None):
    """Every KD weight for (problem, θ, γ, b) in one call: λ̂, λ*_T1, λ*_T2, λ*_published, λ_opt, λ_opt (RR).

    Parameters
    ----------
    problem : kdsim problem
    theta : array_like
        The teacher (a ``kdsim.teachers.Teacher`` is accepted: its ``theta`` is used).
    step : float
        γ > 0.
    batch_size : int, default 1
        b (minibatches without replacement).
    sampling : {"reshuffle", "shuffle_once"}, default "reshuffle"
        The epoch scheme of the epoch-end optimum (the i.i.d. rows are i.i.d. by definition).
    rr_moments : (float, float), optional
        (M, c): SGD's epoch-end E‖z‖² and ⟨θ − x*, E z⟩ (z = SGD's deviation started at x*,
        docs/theory.md §5.2), e.g. Monte Carlo means from SGD runs started at x*; the RR optimum
        is then (M − c)/(M + D² − 2c) with source "Monte Carlo". Without it the optimum is exact
        on least squares with n ≤ 7 (every permutation enumerated, ``schemes.exact_epoch_moments``)
        and NaN ("not applicable") otherwise: for n > 7 it needs Monte Carlo.
    epochs : int, optional
        Epochs enumerated for the exact RR optimum (default ``rr_epochs``: converged to 1e-12).
    drop_last : bool, default False
        The epoch drops its partial last batch (RR optimum only).
    teacher_term : {"f", "data"}, default "f"
        The teacher term of the constants: "f" for estimator "kd", "data" for "kd_loss".
    constants : Constants, optional
        Precomputed ``constants(problem, θ, b, teacher_term)`` (saves the Hessian at x*).

    Returns
    -------
    LambdaVariants
        Six ``Variant`` rows, in the order above. λ̂, λ*_T1, λ*_T2 are "derived", λ*_published "as
        published"; λ_opt (i.i.d.) is "exact" on least squares (§5; NaN elsewhere, and for
        ``teacher_term="data"`` with a ridge, whose centre differs); the RR optimum as described
        under ``rr_moments``. A variant that cannot be evaluated (μ ≤ 0, an unstable step) is NaN
        with the reason in its ``note``. λ_opt and the RR optimum are for the distillation
        gradient of f (estimator "kd").
    """
    from .constants import constants as _constants
    from .schemes import MAX_ENUM_N, exact_epoch_moments, lambda_opt_epoch

    theta = getattr(theta, "theta", theta)
    step = V.positive_float("step", step)
    sampling = V.choice("sampling", sampling, ("reshuffle", "shuffle_once"))
    V.choice("teacher_term", teacher_term, ("f", "data"))
    c = _constants(problem, theta, batch_size, teacher_term=teacher_term) if constants is None else _c(constants)
    b = c.batch_size
    out = []
    for fn, args in ((lambda_hat, ()), (lambda_star_t1, (step,)), (lambda_star_t2, (step,)),
                     (lambda_star_published, (step,))):
        try:
            out.append(_variant(fn.__name__, fn(c, *args), fn.source))
        except ValueError as exc:
            out.append(_missing(fn.__name__, fn.source, str(exc)))
    is_ls = isinstance(problem, LeastSquares)
    theta_v = problem.check_teacher(theta)
    D2 = float(np.sum((np.ravel(problem.canonical_teacher(theta_v)) - np.ravel(problem.canonical(c.x_star))) ** 2))
    ridge_centre = teacher_term == "data" and problem.l2 > 0
    if not is_ls:
        out.append(_missing("lambda_opt", NOT_APPLICABLE, "closed form on least squares only (§5)"))
    elif ridge_centre:
        out.append(_missing("lambda_opt", NOT_APPLICABLE, "for the estimator 'kd'; 'kd_loss' with a ridge has "
                                                          "another centre (§5)"))
    else:
        try:
            out.append(_variant("lambda_opt", lambda_opt(problem, theta_v, step, b), EXACT))
        except ValueError as exc:
            out.append(_missing("lambda_opt", EXACT, str(exc)))
    if rr_moments is not None:
        M, cc = (V.finite_float("rr_moments[0]", rr_moments[0]), V.finite_float("rr_moments[1]", rr_moments[1]))
        out.append(_variant("lambda_opt_epoch", lambda_opt_epoch(M, cc, D2), MONTE_CARLO,
                            f"{sampling}: (M − c)/(M + D² − 2c) from the given M = {M:.6g}, c = {cc:.6g}"))
    elif not is_ls:
        out.append(_missing("lambda_opt_epoch", NOT_APPLICABLE, "least squares only (§5.2); pass rr_moments=(M, c) "
                                                                "from SGD runs started at x*"))
    elif ridge_centre:
        out.append(_missing("lambda_opt_epoch", NOT_APPLICABLE, "for the estimator 'kd' (§5.2)"))
    elif problem.n > MAX_ENUM_N:
        out.append(_missing("lambda_opt_epoch", NOT_APPLICABLE,
                            f"exact only for n ≤ {MAX_ENUM_N} (every permutation enumerated); n = {problem.n}: "
                            "pass rr_moments=(M, c) from Monte Carlo SGD runs started at x*"))
    else:
        from ..rng import steps_per_epoch
        try:
            E = rr_epochs(step, c.mu, steps_per_epoch(problem.n, b, drop_last)) if epochs is None else \
                V.int_in_range("epochs", epochs, 1)
            ex = exact_epoch_moments(problem, theta_v, 0.0, step, E, b, sampling=sampling, drop_last=drop_last,
                                     x0=c.x_star)
            value = float(ex.lambda_opt[-1])
            moved = abs(value - float(ex.lambda_opt[-2])) if E >= 2 else float("nan")
            grew = abs(float(ex.M[-1] - ex.M[-2])) if E >= 2 else float("nan")
            if not (np.isfinite(value) and moved <= RR_SETTLED * max(1.0, abs(value))
                    and grew <= RR_SETTLED * float(ex.M[-1])):
                raise ValueError(f"the epoch-end moments have not settled after {E} epochs at γ = {step:g} (the last "
                                 f"epoch moved λ by {moved:.3g} and M by {grew:.3g}: an unstable step, or pass more "
                                 "epochs)")
            out.append(_variant("lambda_opt_epoch", value, EXACT_ENUMERATION,
                                f"{sampling}, {E} epochs from x* enumerated exactly (last epoch moved it by {moved:.2g})"))
        except ValueError as exc:
            out.append(_missing("lambda_opt_epoch", EXACT_ENUMERATION, str(exc)))
    return LambdaVariants(variants=tuple(out), step=step, batch_size=b, sampling=sampling, teacher_term=teacher_term)
