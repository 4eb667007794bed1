"""One sweep cell: build → simulate → reduce to summaries, with the theory beside them.

``compute_cell`` is the task a Dask worker (or the driver, in-process) runs. It is
a module-level function of a JSON-serialisable configuration only, so a worker on
another machine rebuilds exactly the same problem and teacher (kdsim must be
installed there). It returns a long frame with one row per (λ, record) and a small
info dict; the driver writes both to the store.

Rows
----
Identification: ``cell_hash``, ``problem`` and ``problem_<param>``, ``teacher``,
``teacher_<param>``, ``teacher_label``, ``estimator``, ``backend``, ``batch_size``,
``seeds``, ``steps``, ``record_every``, ``seed``, ``gamma`` (the resolved step γ),
``gamma_fraction`` (γ·𝓛(b) when the spec gave a fraction, else null), the training setup
(``spec.TRAINING``, defaults filled in: ``sampling``, ``drop_last``, ``momentum``,
``lam_schedule``, ``temperature``, ``teacher_l2`` (null: the estimator's own teacher term),
``svrg_period`` (null: n // b), ``svrg_warmup``, ``svrg_correction``), ``steps_per_epoch``
(K), ``setting_note`` (why THEORY's setting does not hold for the cell; empty when it does),
``lam``, ``lam_eff`` (0 for estimators that ignore λ: sgd), ``step`` (iteration of the record).

Per record (mean and Student-t interval over the trajectories still finite at that
record; ``count`` of them): ``dist2_opt_*``, ``subopt_*``, ``dist2_teacher_*`` and,
where x_λ = (1 − λ)x* + λθ (least squares, distillation gradient of f or no ridge),
``dist2_centre_*`` = ‖x_t − x_λ‖² from the exact identity
‖x − x_λ‖² = (1 − λ)‖x − x*‖² + λ‖x − θ‖² − λ(1 − λ)‖θ − x*‖² (the T1' quantity).

Per λ (repeated on its rows): ``n_diverged``, ``first_diverged_step`` (null if none),
``diverged_note``; ``plateau_<q>_mean/_ci_low/_ci_high``, ``plateau_start_step`` over
the never-diverged trajectories (``plateau_reason`` when there are none); the fitted
per-step factor ``rate`` with ``rate_ci_low/high`` and its window
``rate_window_start/end``, or null with ``rate_reason``. Records at which every
trajectory has diverged have no row (never NaN rows).

Theory (THEORY §3–§6): ``mu``, ``L``, ``L_max``, ``expected_smoothness`` (𝓛(b)),
``omega``, ``sigma2_star``, ``sigma2_kd`` (σ²_*(λ, θ)), ``rho``, ``teacher_bias``,
``teacher_distance``, ``mu_provenance``; ``lambda_hat``, ``lambda_star_t1``,
``lambda_star_t2``, ``lambda_star_published``, ``lambda_opt`` (least squares);
``gamma_stable_max`` (theory.largest_stable_step, least squares) and
``exact_plateau_dist2_opt`` (λ²D² + (1 − λ)² MSE_SGD, least squares, stable γ);
for each bound B in t1, t1p (T1'), t2, sgd: ``bound_B`` (value at the record; null
when not applicable), ``bound_B_status``, ``bound_B_gamma_max``, ``bound_B_rate``,
``bound_B_neighbourhood``. T1 bounds E‖x_t − x*‖² (dist2_opt), T1' E‖x_t − x_λ‖²
(dist2_centre), T2 E[f(x_t) − f*] (subopt), SGD E‖x_t − x*‖².

The bounds, the stability limit, MSE_SGD, λ_opt and the exact plateau are those of THEORY's
setting: i.i.d. minibatches, no momentum, a constant λ, τ = 1 and the estimator's own teacher
term. A cell outside it (``setting_reasons``) has ``bound_*_status`` "not applicable: …" with
the reason (at λ = 0, where the run is SGD whatever the λ schedule, temperature or teacher
term, only sampling and momentum count), no bound values, and empty ``gamma_stable_max``,
``mse_sgd``, ``lambda_opt`` and ``exact_plateau_dist2_opt`` where they do not hold; λ̂ and
the λ* formulas stay (functions of the problem's constants and γ, for comparison).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd

from .. import stats, theory
from ..estimators import get_estimator
from ..problems import LeastSquares
from ..simulate import simulate
from ..results import config_hash
from .registry import build_problem, build_teacher
from .spec import TRAINING, problem_params, training_columns, training_options

RECORDED = ("dist2_opt", "subopt", "dist2_teacher")
QUANTITIES = RECORDED + ("dist2_centre",)
PLATEAUS = ("dist2_opt", "subopt", "dist2_centre")
BOUNDS = {"t1": "T1", "t1p": "T1'", "t2": "T2", "sgd": "SGD"}
BOUND_RECORD = {"t1": "dist2_opt", "t1p": "dist2_centre", "t2": "subopt", "sgd": "dist2_opt"}
#: estimators the derived bounds of THEORY §4 cover at every λ (others only at λ = 0, where they are SGD)
BOUNDED_ESTIMATORS = ("kd", "kd_loss")
#: integer columns that may be empty (pandas "Int64", parquet int64 with nulls)
NULLABLE_INTS = ("first_diverged_step", "plateau_start_step", "rate_window_start", "rate_window_end", "svrg_period")
#: what THEORY §3–§6 assume of the training setup (the bounds and exact least-squares results)
SETTING = "THEORY §4 assumes i.i.d. minibatches, no momentum, a constant λ, τ = 1 and the estimator's teacher term"
#: exceptions a theory quantity may raise when it does not exist for an instance (recorded, not fatal)
THEORY_ERRORS = (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError, TypeError)


class CellError(RuntimeError):
    """A cell could not be computed (the message names the cell's problem and teacher)."""


#: largest_stable_step per (problem, b): a bisection of eigenvalue problems, computed once per
#: worker process; worker threads share it under the lock
_STABLE = {}
_STABLE_LOCK = threading.Lock()


def _problem_key(config):
    p = config["problem"]
    return (p["family"], tuple(sorted(p["params"].items())))


def teacher_term(config, problem):
    """The teacher term of a cell's steps: "f" (∇f_B(θ), with the ridge α), "data" (∇ℓ_B(θ)), or None
    when ``teacher_l2`` is a weight w that is neither α nor 0 (no constants describe it)."""
    est = get_estimator(config["estimator"])
    w = config.get("teacher_l2")
    if w is None or not est.uses_teacher:
        return "data" if est.teacher_term == "data" else "f"
    alpha = getattr(problem, "l2", None)
    if alpha is not None and float(w) == float(alpha):
        return "f"
    return "data" if float(w) == 0.0 else None


def setting_reasons(config, problem, lam_eff=None):
    """Why a cell (at KD weight ``lam_eff``; None: any λ) is outside THEORY's setting: a list of
    phrases, empty when it is inside. Sampling and momentum count at every λ; the λ schedule,
    the temperature and the teacher term only at λ ≠ 0 (at λ = 0 every estimator here is SGD)."""
    opt = training_options(config)
    out = []
    if opt["sampling"] != "iid":
        out.append(f"sampling {opt['sampling']!r}")
    if opt["momentum"]:
        out.append(f"momentum μ = {opt['momentum']:g}")
    if lam_eff == 0.0:
        return out
    if opt["lam_schedule"] != "constant":
        out.append(f"λ schedule {opt['lam_schedule']!r}")
    if opt["temperature"] != 1.0:
        out.append(f"temperature τ = {opt['temperature']:g}")
    if opt["teacher_l2"] is not None and teacher_term(config, problem) is None:
        out.append(f"teacher_l2 = {opt['teacher_l2']:g} (neither the ridge α nor 0)")
    return out


def cell_inputs(config):
    """(problem, teacher, γ, constants or None, note) of a cell configuration."""
    prob = config["problem"]
    problem = build_problem(prob["family"], prob["params"])
    teach = config["teacher"]
    teacher = build_teacher(problem, _problem_key(config), teach["kind"], teach["params"])
    term = teacher_term(config, problem) or "f"
    note = ""
    try:
        c = theory.constants(problem, teacher.theta, config["batch_size"], teacher_term=term)
    except THEORY_ERRORS as exc:
        c, note = None, f"theory.constants failed: {exc}"
    if config["gamma"] is not None:
        gamma = float(config["gamma"])
    elif c is None:
        raise CellError(f"γ = {config['gamma_fraction']}/𝓛(b) needs theory.constants, which failed ({note})")
    else:
        gamma = float(config["gamma_fraction"]) / c.expected_smoothness
    return problem, teacher, gamma, c, note


def training_kwargs(config):
    """The training options a cell's configuration names (non-default), as ``simulate`` keywords."""
    return {key: config[key] for key in TRAINING if key in config}


def run_simulation(config, problem, teacher, gamma):
    """The cell's kdsim.simulate call (exactly what a user would call for this cell)."""
    return simulate(problem, teacher.theta, config["lams"], gamma, config["steps"], config["seeds"],
                    batch_size=config["batch_size"], estimator=config["estimator"],
                    record_every=config["record_every"], backend=config["backend"], seed=config["seed"],
                    **training_kwargs(config))


def compute_cell(config):
    """Run one cell; return (frame, info). See the module docstring for the columns."""
    t0 = time.perf_counter()
    problem, teacher, gamma, c, theory_note = cell_inputs(config)
    t1 = time.perf_counter()
    res = run_simulation(config, problem, teacher, gamma)
    t_sim = time.perf_counter() - t1
    frame, info = summarise(config, problem, teacher, gamma, c, res, theory_note)
    info.update(seconds=time.perf_counter() - t0, simulate_seconds=t_sim)
    return frame, info


# ------------------------------------------------------------------ summaries
def _lam_eff(estimator, lam):
    return 0.0 if estimator == "sgd" else float(lam)


def _centre_identity_holds(problem, c, config, lam_eff):
    """x_λ = (1 − λ)x* + λθ: least squares with the distillation gradient of f (or no ridge)."""
    if not isinstance(problem, LeastSquares) or c is None:
        return False
    if lam_eff == 0.0:
        return True
    term = teacher_term(config, problem)
    return config["estimator"] in ("kd", "kd_loss") and (term == "f" or (term == "data" and problem.l2 == 0.0))


def summarise(config, problem, teacher, gamma, c, res, theory_note=""):
    """Reduce a SimResult to the long frame of the store (one row per (λ, record))."""
    level = config["summaries"]["level"]
    tail = config["summaries"]["tail_fraction"]
    n_boot = config["summaries"]["rate_boot"]
    est = config["estimator"]
    steps = np.asarray(res.steps)
    R = steps.size
    ls = isinstance(problem, LeastSquares)
    D2 = float(np.sum((teacher.theta - problem.solution()) ** 2)) if ls else float("nan")

    cell_theory, cell_notes = _cell_theory(config, problem, teacher, gamma, c, theory_note)
    notes = list(cell_notes)
    blocks, rows_per_lambda = [], []
    for k, lam in enumerate(res.lams):
        lam_eff = _lam_eff(est, lam)
        div = res.diverged_step[k]
        alive = (div[:, None] < 0) | (steps[None, :] < div[:, None])          # (seed, record)
        never = div < 0
        per_seed = {q: res.record(q)[k] for q in RECORDED}
        if _centre_identity_holds(problem, c, config, lam_eff):
            with np.errstate(over="ignore", invalid="ignore"):
                per_seed["dist2_centre"] = ((1.0 - lam_eff) * per_seed["dist2_opt"] + lam_eff * per_seed["dist2_teacher"]
                                            - lam_eff * (1.0 - lam_eff) * D2)
        keep = alive.any(axis=0)                                              # records with a live trajectory
        cols = {"lam": float(lam), "lam_eff": lam_eff, "step": steps[keep].astype(np.int64)}
        count = None
        for q in QUANTITIES:
            if q in per_seed:
                v = np.where(alive, per_seed[q], np.nan)
                m, lo, hi, cnt = stats.mean_ci(v, axis=0, level=level)
                cols[f"{q}_mean"], cols[f"{q}_ci_low"], cols[f"{q}_ci_high"] = m[keep], lo[keep], hi[keep]
                count = cnt[keep]
            else:
                cols[f"{q}_mean"] = cols[f"{q}_ci_low"] = cols[f"{q}_ci_high"] = np.nan
        cols["count"] = count.astype(np.int64)
        n_div = int((~never).sum())
        cols["n_diverged"] = n_div
        cols["first_diverged_step"] = float(div[~never].min()) if n_div else np.nan
        cols["diverged_note"] = _diverged_note(n_div, never.size, div, gamma, cell_theory.get("gamma_stable_max"), lam)
        if cols["diverged_note"]:
            notes.append(cols["diverged_note"])
        cols.update(_plateaus(steps, per_seed, never, tail, level))
        cols.update(_rate(steps, per_seed["dist2_opt"], never, level, n_boot))
        cols.update(_lam_theory(config, problem, teacher, gamma, c, lam_eff, steps[keep], cell_theory, D2))
        blocks.append((int(keep.sum()), cols))
        rows_per_lambda.append(int(keep.sum()))
    frame = _frame(config, problem, teacher, gamma, cell_theory, blocks)
    info = {"rows_per_lambda": rows_per_lambda, "n_rows": int(len(frame)), "notes": notes, "records": int(R)}
    return frame, info


def _identity(config, problem, teacher, gamma):
    ident = {"cell_hash": config_hash(config), "problem": config["problem"]["family"]}
    for k, v in problem_params(config).items():
        ident[f"problem_{k}"] = v
    ident["teacher"] = config["teacher"]["kind"]
    for k, v in config["teacher"]["params"].items():
        ident[f"teacher_{k}"] = v
    ident.update({
        "teacher_label": teacher.describe(), "estimator": config["estimator"], "backend": config["backend"],
        "batch_size": int(config["batch_size"]), "seeds": int(config["seeds"]), "steps": int(config["steps"]),
        "record_every": int(config["record_every"]), "seed": int(config["seed"]), "gamma": float(gamma),
        "gamma_fraction": np.nan if config["gamma_fraction"] is None else float(config["gamma_fraction"]),
    })
    reasons = setting_reasons(config, problem)
    ident.update(training_columns(config, "; ".join(reasons) and f"outside THEORY's setting: {'; '.join(reasons)}"))
    return ident


def _column(value, n):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, str):
        return np.full(n, value, dtype=object)
    if value is None:
        return np.full(n, np.nan)
    return np.full(n, value)


def _frame(config, problem, teacher, gamma, cell_theory, blocks):
    """One DataFrame from the identity, the per-λ blocks and the cell's theory columns."""
    total = sum(n for n, _ in blocks)
    data = {k: _column(v, total) for k, v in _identity(config, problem, teacher, gamma).items()}
    for key in blocks[0][1]:
        data[key] = np.concatenate([_column(cols[key], n) for n, cols in blocks])
    for k, v in cell_theory.items():
        data[k] = _column(v, total)
    data["level"] = _column(float(config["summaries"]["level"]), total)
    data["tail_fraction"] = _column(float(config["summaries"]["tail_fraction"]), total)
    frame = pd.DataFrame(data)
    for col in NULLABLE_INTS:
        frame[col] = frame[col].astype("Int64")
    return frame


def _diverged_note(n_div, n, div, gamma, stable_max, lam):
    if not n_div:
        return ""
    first = int(div[div >= 0].min())
    text = f"λ={lam:g}: {n_div} of {n} trajectories diverged (first at step {first}) with γ = {gamma:.6g}"
    if stable_max is not None and np.isfinite(stable_max):
        rel = ">" if gamma > stable_max else "≤"
        text += f" {rel} largest stable step {stable_max:.6g} (theory.largest_stable_step)"
    return text


def _plateaus(steps, per_seed, never, tail, level):
    out = {}
    ok = int(never.sum())
    reason = "" if ok else f"all {never.size} trajectories diverged"
    start = None
    for q in PLATEAUS:
        if ok and q in per_seed:
            p = stats.plateau(steps, per_seed[q][never], tail_fraction=tail, level=level)
            out[f"plateau_{q}_mean"], out[f"plateau_{q}_ci_low"], out[f"plateau_{q}_ci_high"] = p.mean, p.ci_low, p.ci_high
            start = p.start_step
        else:
            out[f"plateau_{q}_mean"] = out[f"plateau_{q}_ci_low"] = out[f"plateau_{q}_ci_high"] = np.nan
    out["plateau_start_step"] = float(start) if ok else np.nan
    out["plateau_seeds"] = ok
    out["plateau_reason"] = reason
    return out


def _rate(steps, per_seed, never, level, n_boot):
    out = {"rate": np.nan, "rate_ci_low": np.nan, "rate_ci_high": np.nan,
           "rate_window_start": np.nan, "rate_window_end": np.nan, "rate_reason": ""}
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fit = stats.fit_rate(steps, per_seed[never], level=level, n_boot=n_boot)
    except (ValueError, np.linalg.LinAlgError) as exc:
        out["rate_reason"] = str(exc) if never.sum() >= 2 else f"fewer than two non-diverged trajectories ({int(never.sum())})"
        return out
    if not np.isfinite(fit.rate):
        out["rate_reason"] = "the transient's excess over the plateau is not positive on the window"
        return out
    out.update(rate=fit.rate, rate_ci_low=fit.ci_low, rate_ci_high=fit.ci_high,
               rate_window_start=float(fit.window[0]), rate_window_end=float(fit.window[1]))
    return out


def _try(fn, *args):
    try:
        return float(fn(*args)), ""
    except THEORY_ERRORS as exc:
        return np.nan, f"{getattr(fn, '__name__', 'theory')}: {exc}"


def _cell_theory(config, problem, teacher, gamma, c, theory_note=""):
    """Problem-level theory columns (same for every λ) and the notes on what could not be computed."""
    out = {k: np.nan for k in ("mu", "L", "L_max", "expected_smoothness", "omega", "sigma2_star", "rho",
                               "teacher_bias", "teacher_distance", "lambda_hat", "lambda_star_t1", "lambda_star_t2",
                               "lambda_star_published", "lambda_opt", "gamma_stable_max", "mse_sgd")}
    out["mu_provenance"] = ""
    notes = [theory_note]
    if c is None:
        out["theory_note"] = theory_note or "no theory constants"
        return out, [out["theory_note"]]
    out.update(mu=c.mu, L=c.L, L_max=c.L_max, expected_smoothness=c.expected_smoothness, omega=c.omega,
               sigma2_star=c.sigma2_star, rho=c.rho, teacher_bias=c.teacher_bias, teacher_distance=c.teacher_distance,
               mu_provenance=str(c.provenance.get("mu", "")))
    for name, fn, args in (("lambda_hat", theory.lambda_hat, (c,)),
                           ("lambda_star_t1", theory.lambda_star_t1, (c, gamma)),
                           ("lambda_star_t2", theory.lambda_star_t2, (c, gamma)),
                           ("lambda_star_published", theory.lambda_star_published, (c, gamma))):
        out[name], note = _try(fn, *args)
        notes.append(note)
    b = config["batch_size"]
    iid = setting_reasons(config, problem, lam_eff=0.0)           # sampling and momentum
    setting = ""
    if isinstance(problem, LeastSquares) and iid:                # in the rows, not the run's notes (asked for)
        setting = f"no stability limit, MSE_SGD, λ_opt or exact plateau: {'; '.join(iid)} ({SETTING})"
    elif isinstance(problem, LeastSquares):
        key = (_problem_key(config), b)
        with _STABLE_LOCK:
            if key not in _STABLE:
                _STABLE[key] = _try(theory.largest_stable_step, problem, b)
            out["gamma_stable_max"], note = _STABLE[key]
        notes.append(note)
        if np.isfinite(out["gamma_stable_max"]) and gamma < out["gamma_stable_max"]:
            out["mse_sgd"], note = _try(theory.mse_sgd, problem, gamma, b)
            notes.append(note)
            if np.isfinite(out["mse_sgd"]) and training_options(config)["lam_schedule"] == "constant":
                out["lambda_opt"] = theory.lambda_opt_from(c.teacher_distance ** 2, out["mse_sgd"])
    out["theory_note"] = "; ".join(n for n in notes + [setting] if n)
    return out, [n for n in notes if n]


def _lam_theory(config, problem, teacher, gamma, c, lam_eff, steps, cell_theory, D2):
    """Bounds at every kept record and the λ-dependent theory values."""
    n = steps.size
    out = {"sigma2_kd": c.sigma2_kd(lam_eff) if c is not None else np.nan, "exact_plateau_dist2_opt": np.nan}
    est = config["estimator"]
    outside = setting_reasons(config, problem, lam_eff)
    if isinstance(problem, LeastSquares) and np.isfinite(cell_theory["mse_sgd"]) and not outside and \
            _centre_identity_holds(problem, c, config, lam_eff):
        out["exact_plateau_dist2_opt"] = theory.stationary_error_from(lam_eff, D2, cell_theory["mse_sgd"])
    for key, name in BOUNDS.items():
        value = np.full(n, np.nan)
        status, gmax, rate, neigh = "", np.nan, np.nan, np.nan
        if c is None:
            status = "not computed: no theory constants"
        elif outside:
            status = f"not applicable: {'; '.join(outside)} ({SETTING})"
        elif key == "sgd" and lam_eff != 0.0:
            status = "not applicable: the SGD bound is for λ = 0"
        elif est not in BOUNDED_ESTIMATORS and lam_eff != 0.0:
            status = (f"not derived for estimator {est!r} at λ ≠ 0 (THEORY §4 covers sgd, kd and kd_loss)")
        else:
            try:
                if key == "t1":
                    bound = theory.t1(c, gamma, lam_eff)
                elif key == "t1p":
                    bound = theory.t1_prime(c, gamma, lam_eff)
                elif key == "t2":
                    bound = theory.t2(c, gamma, lam_eff)
                else:
                    bound = theory.sgd_bound(c, gamma)
            except THEORY_ERRORS as exc:
                status = f"not computed: {exc}"
            else:
                status, gmax, rate, neigh = bound.status, bound.gamma_max, bound.rate, bound.neighbourhood
                if bound.applicable:
                    value = np.asarray(bound.curve(steps.astype(np.float64)), dtype=np.float64).reshape(n)
        out[f"bound_{key}"] = value
        out[f"bound_{key}_status"] = status
        out[f"bound_{key}_gamma_max"] = gmax
        out[f"bound_{key}_rate"] = rate
        out[f"bound_{key}_neighbourhood"] = neigh
    return out
