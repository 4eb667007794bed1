"""Researcher-facing helpers on top of ``kdsim.simulate``: a λ curve beside the theory, and paired comparisons.

* ``lambda_curve`` runs ``simulate`` over a λ grid (common random numbers) and returns a
  ``LambdaCurve``: a tidy frame with one row per λ (mean and interval of a record at the
  end of the run or on its plateau), the empirical optimum λ_emp with a paired bootstrap
  interval over seeds, and every theoretical weight of docs/theory.md §6 (λ̂, λ*_T1, λ*_T2,
  λ*_published, and the exact λ_opt of §5 on least squares); ``LambdaCurve.variants_table()``
  lists every variant of ``theory.lambda_variants`` (the RR epoch-end optimum of §5.2 included)
  beside the empirical optimum: in its interval or not, and by how much it misses.
* ``plot_lambda_curve`` draws it (``LambdaCurve.plot`` is the same).
* ``paired_comparison`` compares two λ of one run (e.g. KD against SGD, λ = 0) seed by
  seed: the ratio and the difference of the means, with a paired bootstrap interval.

Example
-------
>>> import kdsim
>>> from kdsim import teachers
>>> from kdsim.problems import synthetic
>>> p = synthetic.least_squares(n=100, d=5, seed=0)
>>> t = teachers.at_distance(p, 0.3, seed=1)
>>> curve = kdsim.lambda_curve(p, t, lams=[0, 0.1, 0.2, 0.4, 0.7, 1], step=0.1, steps=2000,
...                            seeds=200, at="plateau")                  # doctest: +SKIP
>>> curve.frame                      # lam, mean, ci_low, ci_high, sem, n_seeds, n_diverged   # doctest: +SKIP
>>> curve.empirical, curve.theory    # λ_emp with its interval; {name: (value, source)}      # doctest: +SKIP
>>> curve.variants_table()           # every variant: value, source, in_ci, error, gap        # doctest: +SKIP
>>> curve.plot()                     # matplotlib Axes                                        # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _validate as V
from . import stats, theory
from .problems.least_squares import LeastSquares
from .results import RECORD_LABELS, SimResult, SimSummary, check_at, check_record, format_lams
from .simulate import simulate
from .teachers import Teacher

__all__ = ["LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve",
           "rr_moments_from_run"]

#: display names of the theoretical weights (keys of ``theory.all_lambdas``)
THEORY_LABELS = {
    "lambda_hat": "λ̂ (noise only)",
    "lambda_star_t1": "λ*_T1",
    "lambda_star_t2": "λ*_T2",
    "lambda_star_published": "λ*_published",
    "lambda_opt": "λ_opt (exact, §5)",
}
#: source tag of a weight that does not exist for the problem at hand
NOT_APPLICABLE = "not applicable"
#: records per run that ``at="plateau"`` asks for when ``record_every`` is not given
PLATEAU_RECORDS = 100


def _seed_moments(per, level):
    """Per-row mean, Student-t interval, sem and count over the finite entries of a (λ, seed) array."""
    ok = np.isfinite(per)
    count = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, per, 0.0).sum(axis=1) / count
        dev = np.where(ok, per - mean[:, None], 0.0)
        var = (dev * dev).sum(axis=1) / np.where(count > 1, count - 1, np.nan)
    lo, hi, sem = stats.t_interval(mean, var, count, level)
    return mean, lo, hi, sem, count


# ---------------------------------------------------------------- λ curve
@dataclass(repr=False)
class LambdaCurve:
    """A record against the KD weight λ, its empirical optimum and the theory's weights.

    Attributes
    ----------
    frame : DataFrame
        One row per λ (in the order given): ``lam``, ``mean``, ``ci_low``, ``ci_high`` (Student-t
        interval at ``level`` over the seeds that did not diverge at that λ), ``sem``, ``n_seeds``
        (seeds entering) and ``n_diverged``. ``frame.attrs`` repeats the headline numbers
        (``lambda_emp``, ``lambda_emp_ci``, ``theory`` as {name: value}, ``record``, ``at``, ``level``)
        so that the frame alone is self-describing.
    empirical : kdsim.stats.LambdaOptimum
        λ_emp = argmin over the grid of the seed mean (refined by a parabola through the grid
        minimum and its neighbours; exact on least squares, where the curve is a quadratic in λ)
        with a percentile bootstrap interval that resamples seeds jointly across λ (paired by
        the common random numbers). Only seeds that diverged at no λ enter. NaN with fewer
        than three λ or two seeds. Off least squares the curve is not a quadratic in λ: the
        interval covers the Monte Carlo noise of the parabola's vertex, not the parabola's
        model error, so refine the grid around the optimum before reading it closely.
    theory : dict
        {name: (value, source)} for ``lambda_hat``, ``lambda_star_t1``, ``lambda_star_t2``,
        ``lambda_star_published`` (``kdsim.theory.all_lambdas`` at γ = ``step``, constants at the
        run's batch size) and ``lambda_opt`` (exact on least squares; NaN with source
        "not applicable" elsewhere). A variant that cannot be evaluated (e.g. λ*_T1 with μ = 0)
        is NaN, with the reason in ``notes``.
    record, at, level, step, batch_size, estimator : as passed to ``lambda_curve``
    teacher : str or None
        ``Teacher.describe()`` when a Teacher was passed.
    notes : list of str
        Caveats: the optimum at the grid's edge, divergence, variants that do not apply.
    result : SimResult
        The simulation itself (every record of every seed).
    variants : kdsim.theory.LambdaVariants or None
        Every variant of ``theory.lambda_variants`` (``theory``'s five and the RR epoch-end
        optimum of §5.2: exact for n ≤ 7, else from the run's own λ = 0 records when the run
        reshuffles, starts at x* and has λ = 0 in its grid); see ``variants_table``.
    """

    frame: pd.DataFrame
    empirical: stats.LambdaOptimum
    theory: dict
    record: str
    at: str
    level: float
    step: float
    batch_size: int
    estimator: str
    teacher: str | None
    notes: list = field(default_factory=list)
    result: SimResult | None = None
    variants: object = None

    def theory_frame(self):
        """One row per theoretical weight: name, label, value, source, and whether it lies in
        the empirical optimum's interval (``in_ci``; False for NaN)."""
        lo, hi = self.empirical.ci_low, self.empirical.ci_high
        rows = [{"name": k, "label": THEORY_LABELS.get(k, k), "value": v, "source": s,
                 "in_ci": bool(np.isfinite(v) and lo <= v <= hi)} for k, (v, s) in self.theory.items()]
        return pd.DataFrame(rows, columns=["name", "label", "value", "source", "in_ci"])

    def variants_table(self):
        """Every theoretical weight beside the empirical optimum λ_emp and its interval [lo, hi].

        One row per variant (``variants`` when the curve has them, else ``theory``): ``name``,
        ``label``, ``value``, ``source``, ``lambda_emp``, ``ci_low``, ``ci_high``, ``in_ci``
        (lo ≤ value ≤ hi; False for NaN), ``error`` = value − λ_emp, ``gap`` = the distance from
        the value to the interval (0 inside, NaN when either is NaN) and ``note``. A variant
        outside the interval is a finding about that formula, not an error of the table.
        """
        e = self.empirical
        lo, hi = e.ci_low, e.ci_high
        if self.variants is not None:
            items = [(v.name, v.label, v.value, v.source, v.note) for v in self.variants]
        else:
            items = [(k, THEORY_LABELS.get(k, k), v, src, "") for k, (v, src) in self.theory.items()]
        rows = []
        for name, label, value, source, note in items:
            ok = bool(np.isfinite(value) and np.isfinite(lo) and np.isfinite(hi))
            gap = max(lo - value, value - hi, 0.0) if ok else float("nan")
            rows.append({"name": name, "label": label, "value": value, "source": source, "lambda_emp": e.lam,
                         "ci_low": lo, "ci_high": hi, "in_ci": bool(ok and lo <= value <= hi),
                         "error": value - e.lam, "gap": gap, "note": note})
        cols = ["name", "label", "value", "source", "lambda_emp", "ci_low", "ci_high", "in_ci", "error", "gap", "note"]
        out = pd.DataFrame(rows, columns=cols)
        out.attrs.update(level=self.level, step=self.step, batch_size=self.batch_size, record=self.record, at=self.at)
        return out

    def plot(self, ax=None, logy=False):
        """The curve with its band and the optimum markers (see ``plot_lambda_curve``)."""
        return plot_lambda_curve(self, ax=ax, logy=logy)

    def __repr__(self):
        f = self.frame
        e = self.empirical
        seeds = self.result.n_seeds if self.result is not None else int(f["n_seeds"].max())
        head = (f"LambdaCurve(record={self.record!r}, at={self.at!r}, λ={format_lams(f['lam'])}, "
                f"seeds={seeds}, step={self.step:g}, "
                f"batch_size={self.batch_size}, estimator={self.estimator!r}"
                + (f", teacher={self.teacher!r}" if self.teacher else "") + ")")
        emp = (f"  empirical optimum {e.lam:.4g} [{e.ci_low:.4g}, {e.ci_high:.4g}] "
               f"({self.level:.0%}, {e.method})")
        th = "  theory: " + ", ".join(f"{THEORY_LABELS.get(k, k)} = {v:.4g}" for k, (v, _) in self.theory.items())
        lines = [head, emp, th] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def lambda_curve(problem, theta, lams, step, steps, seeds, batch_size=1, estimator="kd", record="dist2_opt",
                 at="final", level=0.99, backend="auto", seed=0, tail_fraction=0.5, n_boot=1000,
                 **simulate_kwargs):
    """Simulate a λ grid and put the empirical optimum beside every theoretical KD weight.

    Parameters
    ----------
    problem : kdsim problem
    theta : array_like or kdsim.teachers.Teacher
        The teacher (a Teacher's ``theta`` is used, and its description kept).
    lams : sequence of float
        The λ grid (distinct values; at least three for the empirical optimum). All λ share
        each seed's minibatches (common random numbers), which pairs the comparison across λ.
    step, steps, seeds, batch_size, estimator, backend, seed
        As for ``kdsim.simulate``.
    record : str
        "dist2_opt" (‖x_t − x*‖², default; what the theory's weights minimise), "subopt" or
        "dist2_teacher".
    at : {"final", "plateau"}
        "final": each seed's value at the last step (E at step T). "plateau": each seed's mean
        over the records in the last ``tail_fraction`` of the run (steps ≥ (1 − tail_fraction)·T);
        much less noisy, and the stationary level once the transient has died out before
        then: choose ``steps`` so that it has (several times 1/(γμ) on least squares).
        Unless ``record_every`` is given, "final" records only steps 0 and T, and
        "plateau" records every ``steps // 100`` steps.
    level : float
        Level of the per-λ intervals and of the optimum's interval.
    tail_fraction : float
        Fraction of the run averaged by ``at="plateau"``.
    n_boot : int
        Bootstrap resamples of the optimum's interval.
    **simulate_kwargs
        Passed to ``kdsim.simulate`` (``record_every``, ``x0``, ``dtype``, ``memory_budget``, …;
        not ``reduce``: per-seed values are needed).

    Returns
    -------
    LambdaCurve
        ``.frame`` (one row per λ), ``.empirical`` (λ_emp and interval), ``.theory``
        ({name: (value, source)}), ``.notes``, ``.result`` (the SimResult), ``.plot()``.

    Notes
    -----
    The theoretical weights are those of the distillation gradient ∇f_B(x) − λ∇f_B(θ)
    (estimator "kd"); with "kd_loss" the constants use the data-loss teacher term. On least
    squares, E‖x_∞ − x*‖² = λ²D² + (1 − λ)²MSE_SGD exactly (docs/theory.md §5), so with
    ``record="dist2_opt"``, a long enough run and ``at="plateau"`` the empirical interval
    should contain ``lambda_opt``; a run still in its transient biases λ_emp towards the
    finite-horizon optimum.
    """
    record = check_record(record)
    at = check_at(at)
    if "reduce" in simulate_kwargs:
        raise TypeError("lambda_curve needs per-seed values: 'reduce' is not accepted")
    teacher = None
    if isinstance(theta, Teacher):
        teacher, theta = theta.describe(), theta.theta
    steps = V.int_in_range("steps", steps, 1)
    grid = V.lambda_grid(lams)
    if np.unique(grid).size != grid.size:
        raise ValueError(f"lams must be distinct; got {grid.tolist()}")
    if simulate_kwargs.get("record_every") is None:
        simulate_kwargs["record_every"] = steps if at == "final" else max(1, steps // PLATEAU_RECORDS)
    res = simulate(problem, theta, grid, step, steps, seeds, batch_size=batch_size, estimator=estimator,
                   backend=backend, seed=seed, **simulate_kwargs)
    notes = list(res.divergence_summary())

    per = res.per_seed(record, at, tail_fraction)                 # (λ, seed), NaN where diverged
    mean, lo, hi, sem, count = _seed_moments(per, level)
    frame = pd.DataFrame({"lam": res.lams, "mean": mean, "ci_low": lo, "ci_high": hi, "sem": sem,
                          "n_seeds": count.astype(np.int64), "n_diverged": res.diverged.sum(axis=1).astype(np.int64)})

    empirical = _empirical_optimum(res.lams, per, level, n_boot, notes)
    setup = {k: res.config[k] for k in ("sampling", "momentum", "lam_schedule", "temperature") if k in res.config}
    if setup:
        notes.append("the theoretical weights assume i.i.d. minibatches, no momentum, a constant λ and τ = 1; this "
                     f"run used {', '.join(f'{k}={v}' for k, v in setup.items())} (docs/theory.md §5.2: under "
                     "reshuffling the optimum is (M − c)/(M + D² − 2c))")
    b_run = int(res.config.get("batch_size", batch_size))
    variants = _theory_lambdas(problem, res.config, theta, float(step), b_run, estimator, record, notes)
    every = _all_variants(problem, res, theta, float(step), b_run, estimator, at, tail_fraction, simulate_kwargs, notes)
    frame.attrs.update({"record": record, "at": at, "level": float(level), "lambda_emp": empirical.lam,
                        "lambda_emp_ci": (empirical.ci_low, empirical.ci_high),
                        "theory": {k: v for k, (v, _) in variants.items()}})
    return LambdaCurve(frame=frame, empirical=empirical, theory=variants, record=record, at=at, level=float(level),
                       step=float(step), batch_size=b_run,
                       estimator=str(res.config.get("estimator", estimator)), teacher=teacher, notes=notes,
                       result=res, variants=every)


def _empirical_optimum(lams, per, level, n_boot, notes):
    """λ_emp over the seeds that diverged at no λ (paired bootstrap), with notes on its reliability."""
    alive = np.all(np.isfinite(per), axis=0)
    if lams.size < 3 or alive.sum() < 2:
        notes.append(f"no empirical optimum: it needs at least 3 λ and 2 non-diverged seeds "
                     f"(got {lams.size} λ, {int(alive.sum())} seeds)")
        return stats.LambdaOptimum(np.nan, np.nan, np.nan, "not available")
    if not alive.all():
        notes.append(f"the empirical optimum uses the {int(alive.sum())} seeds that diverged at no λ")
    opt = stats.lambda_opt_from_grid(lams, per[:, alive], level=level, n_boot=n_boot, seed=0)
    lo, hi = float(np.min(lams)), float(np.max(lams))
    if opt.lam in (lo, hi) or opt.ci_low <= lo or opt.ci_high >= hi:
        notes.append(f"the empirical optimum or its interval reaches the edge of the λ grid [{lo:g}, {hi:g}]: "
                     "widen the grid")
    return opt


def _theory_lambdas(problem, config, theta, step, batch_size, estimator, record, notes):
    """{name: (value, source)} of theory.all_lambdas (+ lambda_opt), NaN with a note where one cannot be had."""
    names = ("lambda_hat", "lambda_star_t1", "lambda_star_t2", "lambda_star_published", "lambda_opt")
    out = {k: (float("nan"), NOT_APPLICABLE) for k in names}
    if estimator in ("sgd",):
        notes.append("estimator 'sgd' ignores λ: every λ runs the same method")
    elif estimator in ("corrected", "svrg"):
        notes.append(f"the theoretical weights are derived for the estimator 'kd'; this run used {estimator!r}")
    if record != "dist2_opt":
        notes.append(f"the theoretical weights minimise (bounds on) E‖x − x*‖²; record {record!r} has its own optimum")
    term = "data" if estimator == "kd_loss" else "f"
    try:
        c = theory.constants(problem, theta, batch_size, teacher_term=term)
    except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        notes.append(f"no theoretical weights: theory.constants failed ({exc})")
        return out
    try:
        out.update(theory.all_lambdas(c, step, problem=problem, theta=theta, batch_size=batch_size))
    except ValueError:                    # one variant cannot be evaluated: take them one by one
        for name in names[:4]:
            fn = getattr(theory, name)
            try:
                out[name] = (fn(c) if name == "lambda_hat" else fn(c, step), fn.source)
            except ValueError as exc:
                out[name] = (float("nan"), fn.source)
                notes.append(f"{THEORY_LABELS[name]} not available: {exc}")
        if isinstance(problem, LeastSquares):
            try:
                out["lambda_opt"] = (theory.lambda_opt(problem, theta, step, batch_size), theory.lambda_opt.source)
            except ValueError as exc:
                notes.append(f"{THEORY_LABELS['lambda_opt']} not available: {exc}")
    if not isinstance(problem, LeastSquares):
        notes.append("the exact λ_opt has a closed form on least squares only (docs/theory.md §5): NaN here; "
                     "off least squares the empirical interval covers Monte Carlo noise, not the parabola's "
                     "model error")
    elif estimator == "kd_loss" and problem.l2 > 0:
        notes.append("λ_opt is exact for the estimator 'kd'; with a ridge 'kd_loss' has another centre (§5)")
    return out


def rr_moments_from_run(result, problem, theta, at="final", tail_fraction=0.5):
    """(M, c) of docs/theory.md §5.2 from the λ = 0 records of a least-squares run started at x*.

    At λ = 0 the iterate is x* + z_t, so per seed M = ‖z‖² (record "dist2_opt") and
    ⟨θ − x*, z⟩ = (‖z‖² + D² − ‖x − θ‖²)/2 (with "dist2_teacher"), each at the final step or as
    the plateau mean (``SimResult.per_seed``); returns their means over the seeds that did not
    diverge. The caller must make sure the run started at x* and that λ = 0 is one of its λ.
    """
    lams = np.asarray(result.lams, dtype=np.float64)
    k = _lam_index(lams, 0.0, "λ = 0")
    theta = getattr(theta, "theta", theta)
    D2 = float(np.sum((np.asarray(theta, dtype=np.float64) - problem.solution()) ** 2))
    z2 = result.per_seed("dist2_opt", at, tail_fraction)[k]
    to_teacher = result.per_seed("dist2_teacher", at, tail_fraction)[k]
    ok = np.isfinite(z2) & np.isfinite(to_teacher)
    if not ok.any():
        raise ValueError("every seed diverged at λ = 0")
    return float(z2[ok].mean()), float(np.mean(0.5 * (z2[ok] + D2 - to_teacher[ok])))


def _all_variants(problem, res, theta, step, batch_size, estimator, at, tail_fraction, simulate_kwargs, notes):
    """theory.lambda_variants for the run (RR moments from its λ = 0 records where they apply); None on failure."""
    cfg = res.config
    sampling = cfg.get("sampling", "iid")
    rr = None
    if (isinstance(problem, LeastSquares) and sampling in ("reshuffle", "shuffle_once") and estimator == "kd"
            and not cfg.get("lam_schedule") and cfg.get("teacher_l2") is None):
        x0 = simulate_kwargs.get("x0")
        started_at_opt = x0 is not None and np.allclose(np.asarray(x0, dtype=np.float64), problem.solution(),
                                                        rtol=0.0, atol=1e-12)
        has_zero = bool(np.any(np.isclose(res.lams, 0.0, rtol=0.0, atol=1e-12)))
        if started_at_opt and has_zero:
            rr = rr_moments_from_run(res, problem, theta, at, tail_fraction)
            notes.append("the RR optimum (M − c)/(M + D² − 2c) uses M and c from this run's λ = 0 records "
                         f"(Monte Carlo, at={at!r})")
        elif problem.n > 7:
            notes.append("the RR optimum (M − c)/(M + D² − 2c) needs the λ = 0 run started at x* "
                         "(x0=problem.solution() and 0 in the λ grid)")
    term = "data" if estimator == "kd_loss" else "f"
    try:
        return theory.lambda_variants(problem, theta, step, batch_size, rr_moments=rr, teacher_term=term,
                                      sampling=sampling if sampling in ("reshuffle", "shuffle_once") else "reshuffle")
    except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        notes.append(f"no variants table: theory.lambda_variants failed ({exc})")
        return None


def plot_lambda_curve(curve, ax=None, logy=False):
    """Draw a ``LambdaCurve``: the mean with its interval band against λ, the empirical
    optimum with its interval, and one vertical line per theoretical weight.

    Parameters
    ----------
    curve : LambdaCurve
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure with room for the legend on the right).
    logy : bool
        Log-scaled y axis.

    Returns
    -------
    matplotlib Axes
        The legend sits outside the data, right of the axes (save with
        ``bbox_inches="tight"`` when you pass your own ``ax``). A weight far outside the
        grid (beyond 25% of its span) keeps its legend entry, marked "off the axis", without a line,
        so that the data are not squeezed; NaN weights are listed as "n/a".
    """
    import matplotlib.pyplot as plt   # lazily: importing kdsim must not pick a backend

    if ax is None:
        _, ax = plt.subplots(figsize=(8.4, 4.4), layout="constrained")
    f = curve.frame.sort_values("lam")
    lam = f["lam"].to_numpy()
    ax.plot(lam, f["mean"], "o-", color="black", markersize=4, linewidth=1.5,
            label=f"Monte Carlo mean ({curve.at})")
    band = np.isfinite(f["ci_low"].to_numpy()) & np.isfinite(f["ci_high"].to_numpy())
    ax.fill_between(lam[band], f["ci_low"].to_numpy()[band], f["ci_high"].to_numpy()[band], color="black",
                    alpha=0.18, linewidth=0, label=f"{curve.level:.0%} CI")
    e = curve.empirical
    if np.isfinite(e.lam):
        ax.axvspan(e.ci_low, e.ci_high, color="tab:grey", alpha=0.2, linewidth=0,
                   label=f"λ_emp {curve.level:.0%} CI [{e.ci_low:.3g}, {e.ci_high:.3g}]")
        ax.axvline(e.lam, color="black", linewidth=2.0, label=f"λ_emp = {e.lam:.3g} (empirical optimum)")
    span = (lam.max() - lam.min()) if lam.size > 1 else 1.0
    lo_vis, hi_vis = lam.min() - 0.25 * span, lam.max() + 0.25 * span
    colours = plt.get_cmap("tab10")(np.arange(10))
    styles = ("--", "-.", ":", (0, (5, 2, 1, 2)), (0, (1, 1)))
    marks = [(name, THEORY_LABELS.get(name, name), value) for name, (value, _) in curve.theory.items()]
    if curve.variants is not None:     # the variants that ``theory`` lacks (the RR epoch-end optimum), where known
        marks += [(v.name, v.label, v.value) for v in curve.variants
                  if v.name not in curve.theory and np.isfinite(v.value)]
    for k, (name, label, value) in enumerate(marks):
        colour, style = colours[(k + 1) % 10], styles[k % len(styles)]
        if not np.isfinite(value):
            ax.plot([], [], " ", label=f"{label}: n/a")
        elif not lo_vis <= value <= hi_vis:
            ax.plot([], [], linestyle=style, color=colour, label=f"{label} = {value:.3g} (off the axis)")
        else:
            ax.axvline(value, linestyle=style, color=colour, linewidth=1.8, label=f"{label} = {value:.3g}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("KD weight λ")
    ax.set_ylabel(f"E {RECORD_LABELS[curve.record]} ({'step T' if curve.at == 'final' else 'plateau'})")
    ax.set_title(f"{curve.estimator}, γ={curve.step:.3g}, b={curve.batch_size}"
                 + (f", teacher {curve.teacher}" if curve.teacher else ""), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    return ax


# ---------------------------------------------------------- paired comparison
@dataclass(frozen=True)
class PairedComparison:
    """Two KD weights of one run compared seed by seed.

    ``ratio`` = mean_b / mean_a and ``difference`` = mean_b − mean_a of the record's per-seed
    values (at the final step or on the plateau), each with a percentile bootstrap interval
    that resamples seeds as pairs (both λ of a seed together): with common random numbers
    the two λ share each seed's minibatches, so the pairing cancels most of the noise.
    A ratio below 1 (difference below 0) with its whole interval means λ = b beats λ = a.
    """

    record: str
    at: str
    lam_a: float
    lam_b: float
    mean_a: float
    mean_b: float
    ratio: float
    ratio_ci: tuple
    difference: float
    difference_ci: tuple
    n_seeds: int             # pairs entering (seeds that diverged at neither λ)
    n_dropped: int           # seeds left out because they diverged at a or b
    level: float
    paired_streams: bool     # the run used common random numbers (else the pairs are independent)
    method: str = "paired percentile bootstrap over seeds"

    def as_dict(self):
        """Plain dict (for a table row)."""
        return dict(self.__dict__)

    def __str__(self):
        name = f"E[{self.record}]"
        return (f"{name}(λ={self.lam_b:g}) / {name}(λ={self.lam_a:g}) = {self.ratio:.4g} "
                f"[{self.ratio_ci[0]:.4g}, {self.ratio_ci[1]:.4g}]; difference {self.difference:.4g} "
                f"[{self.difference_ci[0]:.4g}, {self.difference_ci[1]:.4g}] "
                f"({self.level:.0%} {self.method}, {self.n_seeds} seeds, at={self.at!r})")


def _lam_index(lams, value, name):
    value = V.finite_float(name, value)
    hits = np.flatnonzero(np.isclose(lams, value, rtol=1e-12, atol=1e-12))
    if hits.size == 0:
        raise ValueError(f"{name}={value:g} is not a λ of this result; its λ are {format_lams(lams, show=20)}")
    return int(hits[0])


def paired_comparison(result, record="subopt", a=0.0, b=None, at="final", level=0.99, tail_fraction=0.5,
                      n_boot=2000, seed=0):
    """Compare two λ of one simulation (e.g. KD at λ = b against SGD at λ = a = 0), paired over seeds.

    Parameters
    ----------
    result : SimResult
        A full (not reduced) result containing both λ, ideally run with common random
        numbers (``simulate``'s default), which makes the comparison paired.
    record : str
        "subopt" (f(x_t) − f*, default), "dist2_opt" or "dist2_teacher".
    a, b : float
        The reference λ and the compared λ; ``b`` may be left out when the result has
        exactly two λ.
    at : {"final", "plateau"}
        Per-seed value at the last step, or mean over the last ``tail_fraction`` of the
        records (see ``SimResult.per_seed``).
    level : float
        Level of the bootstrap intervals.
    tail_fraction : float
        Fraction of the run averaged by ``at="plateau"``.
    n_boot, seed : int
        Bootstrap resamples and the resampling generator's seed (the interval is reproducible).

    Returns
    -------
    PairedComparison
        ratio mean_b/mean_a and difference mean_b − mean_a with their intervals; seeds that
        diverged at a or at b are left out of both means (``n_dropped``).
    """
    if isinstance(result, SimSummary):
        raise TypeError("paired_comparison needs per-seed values; run simulate(..., reduce=False)")
    if not isinstance(result, SimResult):
        raise TypeError(f"result must be a kdsim SimResult; got {type(result).__name__}")
    record = check_record(record)
    at = check_at(at)
    lams = np.asarray(result.lams, dtype=np.float64)
    ia = _lam_index(lams, a, "a")
    if b is None:
        others = [k for k in range(lams.size) if k != ia]
        if len(others) != 1:
            raise ValueError(f"b is required: the result has λ = {format_lams(lams, show=20)}")
        ib = others[0]
    else:
        ib = _lam_index(lams, b, "b")
    if ia == ib:
        raise ValueError(f"a and b must be two different λ; got a={a!r}, b={b!r}")
    per = result.per_seed(record, at, tail_fraction)
    va, vb = per[ia], per[ib]
    ok = np.isfinite(va) & np.isfinite(vb)
    if ok.sum() < 2:
        raise ValueError(f"paired_comparison needs at least two seeds that diverged at neither λ; got {int(ok.sum())}")
    pairs = np.stack([va[ok], vb[ok]], axis=1)

    def statistic(v):
        ma, mb = v[:, 0].mean(), v[:, 1].mean()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.array([mb / ma, mb - ma])

    with np.errstate(divide="ignore", invalid="ignore"):
        est, lo, hi = stats.bootstrap_ci(pairs, statistic, level=level, n_boot=n_boot, seed=seed)
    return PairedComparison(
        record=record, at=at, lam_a=float(lams[ia]), lam_b=float(lams[ib]),
        mean_a=float(pairs[:, 0].mean()), mean_b=float(pairs[:, 1].mean()),
        ratio=float(est[0]), ratio_ci=(float(lo[0]), float(hi[0])),
        difference=float(est[1]), difference_ci=(float(lo[1]), float(hi[1])),
        n_seeds=int(ok.sum()), n_dropped=int((~ok).sum()), level=float(level),
        paired_streams=bool(result.config.get("common_random_numbers", True)))
