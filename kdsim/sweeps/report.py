"""Tables and figures from a sweep's store (no simulation, no theory: both are in the rows).

Tables (``table``, ``kdsim table``):

* ``bounds`` — one row per (cell, λ, bound) with a verdict: "holds" when the upper
  confidence limit stays below the bound at every record (up to a relative 1e-9 for
  rounding: at t = 0 the bound is an equality), "VIOLATED" when the lower confidence
  limit exceeds it at some record, "inconclusive" otherwise (more seeds decide); the
  worst ratios ``max_mean_over_bound`` (mean / bound) and ``max_upper_over_bound`` (upper CI /
  bound) over the records after a burn-in, t ≥ ``burn_in_step`` = the first record at or after
  min(1/(γμ), T/2) (``burn_in_step``; 10% of the run T when μ is unknown), since at t = 0
  every bound is an equality and the worst ratio over all records would always be ~1; the
  plateau of the bounded quantity with its interval and ``converged`` (``plateau_converged``:
  the fitted transient has decayed below the plateau's CI half-width where the plateau window
  starts; False flags a plateau still in its transient) beside the bound's neighbourhood and
  their ratio, the fitted per-step factor with its interval beside the bound's rate; or the
  bound's status ("not applicable: γ = … > γ_max = …") where it does not apply.
* ``lambdas`` — one row per cell: the empirical best λ on the grid (smallest plateau of
  E‖x_t − x*‖²) with its plateau and ``converged`` (as in ``bounds``), beside λ̂, λ*_T1,
  λ*_T2, λ*_published and λ_opt.
* ``cells`` — one row per cell: γ, γ relative to the T1 condition and to the largest
  stable step, diverged trajectories, notes.

Every table carries, after ``label``, the training-setup options (``sampling``, ``momentum``,
``lam_schedule``, …; ``spec.TRAINING``) that some cell of the store sets to a non-default value,
so a table can be grouped by them; a store of default setups gives the tables it always gave.
A bound of a cell outside THEORY's setting (another sampling scheme, momentum, a λ schedule,
τ ≠ 1) has the status "not applicable: …" and the verdict "n/a", never "holds".

Figures (``plot``, ``kdsim plot``; PNG, PDF or SVG): plateau against γ per λ with the T1
neighbourhood and the exact least-squares plateau; the λ sweep per γ
(``kdsim.report.plots.lambda_sweep_plot``) with λ̂, λ*_T1, λ*_T2, λ*_published, λ_opt;
convergence curves per cell with the T1 bound (``kdsim.report.plots.convergence_plot``). Titles
name the instance (problem and parameters, teacher, b, estimator, seeds, steps, γ); more than
six λ are coloured by a colour bar; ``max_figures`` shares its budget among the three kinds
and reports what it skipped.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .registry import SweepUsageError
from .spec import TRAINING
from .store import load, resolve_store

BOUND_NAMES = {"t1": "T1", "t1p": "T1'", "t2": "T2", "sgd": "SGD"}
BOUND_QUANTITY = {"t1": "dist2_opt", "t1p": "dist2_centre", "t2": "subopt", "sgd": "dist2_opt"}
QUANTITY_TEXT = {"dist2_opt": "E‖x_t − x*‖²", "dist2_centre": "E‖x_t − x_λ‖²", "subopt": "E[f(x_t) − f*]"}
TABLE_KINDS = ("bounds", "lambdas", "cells")
#: relative slack for rounding when comparing an upper confidence limit with a bound (t = 0 is an equality)
ROUNDING_RTOL = 1e-9
FORMATS = ("md", "csv")


def _labels(sweep):
    return {c.index: c.label for c in sweep.cells}


def _fig_text(text):
    """Text for a figure: 𝓛 (U+1D4DB) is missing from matplotlib's default font; ℒ is not."""
    return str(text).replace("𝓛", "ℒ")


def _open(spec_or_dir, out=None):
    store, sweep = resolve_store(spec_or_dir, out)
    frame = load(store, spec=sweep, missing="ignore")
    if frame.empty:
        raise SweepUsageError(f"no results in {store.root} yet: run `kdsim sweep` first")
    return store, sweep, frame


# ------------------------------------------------------------------- tables
def setup_columns(frame):
    """The training options (``spec.TRAINING``) that some row of ``frame`` sets to a non-default value."""
    out = []
    for key, param in TRAINING.items():
        if key not in frame.columns:
            continue
        col = frame[key]
        default = param.default
        changed = col.notna().any() if default is None else (col.isna() | (col != default)).any()
        if changed:
            out.append(key)
    return out


def _setup(first, keys):
    """The values of the training options ``keys`` in a cell's first row (NaN for a missing value: the
    estimator's own teacher term, the default SVRG period)."""
    return {k: (np.nan if pd.isna(first[k]) else first[k]) for k in keys}


def bounds_table(frame, labels):
    """One row per (cell, λ, bound); see the module docstring."""
    rows = []
    setup = setup_columns(frame)
    for (idx, lam), g in frame.groupby(["cell_index", "lam"], sort=True):
        g = g.sort_values("step")
        first = g.iloc[0]
        for key, name in BOUND_NAMES.items():
            q = BOUND_QUANTITY[key]
            status = str(first[f"bound_{key}_status"])
            if not status:
                continue
            bound = g[f"bound_{key}"].to_numpy(dtype=float)
            steps = g["step"].to_numpy(dtype=float)
            mean = g[f"{q}_mean"].to_numpy(dtype=float)
            lo = g[f"{q}_ci_low"].to_numpy(dtype=float)
            hi = g[f"{q}_ci_high"].to_numpy(dtype=float)
            row = {"cell": int(idx), "label": labels.get(int(idx), ""), **_setup(first, setup), "lam": float(lam),
                   "bound": name,
                   "quantity": QUANTITY_TEXT[q], "verdict": "", "max_mean_over_bound": np.nan,
                   "max_upper_over_bound": np.nan, "burn_in_step": np.nan,
                   "plateau": first.get(f"plateau_{q}_mean", np.nan),
                   "plateau_ci_low": first.get(f"plateau_{q}_ci_low", np.nan),
                   "plateau_ci_high": first.get(f"plateau_{q}_ci_high", np.nan),
                   "converged": plateau_converged(g, q, first),
                   "neighbourhood": first[f"bound_{key}_neighbourhood"], "neighbourhood_over_plateau": np.nan,
                   "rate": np.nan, "rate_ci_low": np.nan, "rate_ci_high": np.nan,
                   "bound_rate": first[f"bound_{key}_rate"], "gamma": first["gamma"],
                   "gamma_max": first[f"bound_{key}_gamma_max"], "status": status}
            ok = np.isfinite(bound) & np.isfinite(hi)
            if status.startswith("applicable"):
                if not ok.any():
                    row["verdict"] = "no empirical record"
                else:
                    slack = bound[ok] * (1.0 + ROUNDING_RTOL)
                    burn = burn_in_step(first, float(steps[ok].max()))
                    late = ok & (steps >= burn)
                    if not late.any():
                        late = ok
                    row["burn_in_step"] = float(steps[late].min())
                    positive = bound[late] > 0
                    with np.errstate(divide="ignore", invalid="ignore"):
                        row["max_mean_over_bound"] = float(np.max(np.where(positive, mean[late] / bound[late], np.inf)))
                        row["max_upper_over_bound"] = float(np.max(np.where(positive, hi[late] / bound[late], np.inf)))
                    if np.all(hi[ok] <= slack):
                        row["verdict"] = "holds"
                    elif np.any(lo[ok] > slack):
                        row["verdict"] = "VIOLATED"
                    else:
                        row["verdict"] = "inconclusive"
            else:
                row["verdict"] = "n/a"
            p = row["plateau"]
            if np.isfinite(p) and p > 0 and np.isfinite(row["neighbourhood"]):
                row["neighbourhood_over_plateau"] = row["neighbourhood"] / p
            if q == "dist2_opt" and np.isfinite(first["rate"]):
                row.update(rate=first["rate"], rate_ci_low=first["rate_ci_low"], rate_ci_high=first["rate_ci_high"])
            rows.append(row)
    out = pd.DataFrame(rows)
    if "converged" in out:
        out["converged"] = out["converged"].astype("boolean")
    return out


def burn_in_step(first, last_step):
    """First record step that enters the worst ratios of the bounds table: t ≥ 1/(γμ), one time
    constant of the contraction 1 − γμ (at t = 0 every bound is an equality, so the worst ratio
    would always be ~1 there), at most half the run; 10% of the run when μ is unknown."""
    gamma, mu = float(first["gamma"]), float(first.get("mu", np.nan))
    if np.isfinite(mu) and mu > 0 and gamma > 0:
        return min(1.0 / (gamma * mu), 0.5 * last_step)
    return 0.1 * last_step


def plateau_converged(g, q, first):
    """Whether the plateau of quantity ``q`` of one (cell, λ) (rows ``g``, sorted by step) lies
    past its transient: True when the fitted transient (the store's rate fit on E‖x_t − x*‖²,
    its line through the records of its window, carried to the plateau window's first step with
    the upper limit of the fitted factor) is at most the plateau's CI half-width there. Without
    a fitted rate: when the means of the first and second half of the plateau window differ by at
    most twice that half-width (no drift). None when there is no plateau."""
    mean = first.get(f"plateau_{q}_mean", np.nan)
    lo, hi = first.get(f"plateau_{q}_ci_low", np.nan), first.get(f"plateau_{q}_ci_high", np.nan)
    start = first.get("plateau_start_step", np.nan)
    if not (np.isfinite(mean) and np.isfinite(lo) and np.isfinite(hi) and pd.notna(start)):
        return None
    half = max(hi - mean, mean - lo, 0.0)
    steps = g["step"].to_numpy(dtype=float)
    values = g[f"{q}_mean"].to_numpy(dtype=float)
    rate, rate_hi = first.get("rate", np.nan), first.get("rate_ci_high", np.nan)
    w0, w1 = first.get("rate_window_start", np.nan), first.get("rate_window_end", np.nan)
    if pd.notna(rate) and np.isfinite(rate) and pd.notna(w0) and pd.notna(w1):
        window = (steps >= float(w0)) & (steps <= float(w1)) & np.isfinite(values)
        excess = values[window] - mean
        ok = excess > 0
        if ok.sum() >= 2:
            slope, icpt = np.polyfit(steps[window][ok], np.log(excess[ok]), 1)
            at_end = float(np.exp(icpt + slope * float(w1)))
            factor = min(float(rate_hi) if np.isfinite(rate_hi) else float(rate), 1.0)
            transient = at_end * factor ** max(float(start) - float(w1), 0.0)
            return bool(transient <= half)
    tail = (steps >= float(start)) & np.isfinite(values)
    v = values[tail]
    if v.size < 2:
        return None
    k = v.size // 2
    return bool(abs(v[k:].mean() - v[:k].mean()) <= 2.0 * half)


def _best_on_grid(g):
    per_lam = g.groupby("lam", sort=True).first()
    plateau = per_lam["plateau_dist2_opt_mean"]
    if plateau.notna().sum() == 0:
        return np.nan, np.nan, np.nan, np.nan
    lam = float(plateau.idxmin())
    r = per_lam.loc[lam]
    return lam, float(r["plateau_dist2_opt_mean"]), float(r["plateau_dist2_opt_ci_low"]), float(r["plateau_dist2_opt_ci_high"])


def lambdas_table(frame, labels):
    """One row per cell: the best λ on the grid beside the theoretical optimal weights."""
    rows = []
    setup = setup_columns(frame)
    for idx, g in frame.groupby("cell_index", sort=True):
        first = g.iloc[0]
        lam, p, lo, hi = _best_on_grid(g)
        best = g[g["lam"] == lam].sort_values("step") if np.isfinite(lam) else g.iloc[:0]
        converged = plateau_converged(best, "dist2_opt", best.iloc[0]) if len(best) else None
        rows.append({"cell": int(idx), "label": labels.get(int(idx), ""), **_setup(first, setup),
                     "gamma": first["gamma"], "best_lam_on_grid": lam, "plateau_at_best": p, "plateau_ci_low": lo,
                     "plateau_ci_high": hi,
                     "converged": converged,
                     "lambda_hat": first["lambda_hat"], "lambda_star_t1": first["lambda_star_t1"],
                     "lambda_star_t2": first["lambda_star_t2"], "lambda_star_published": first["lambda_star_published"],
                     "lambda_opt": first["lambda_opt"], "grid": ", ".join(f"{v:g}" for v in sorted(g["lam"].unique()))})
    out = pd.DataFrame(rows)
    out["converged"] = out["converged"].astype("boolean")
    return out


def cells_table(frame, labels):
    """One row per cell: γ against the T1 condition and the stability threshold, divergence, notes."""
    rows = []
    setup = setup_columns(frame)
    for idx, g in frame.groupby("cell_index", sort=True):
        first = g.iloc[0]
        per_lam = g.groupby("lam").first()
        gmax = first["bound_t1_gamma_max"]
        stable = first["gamma_stable_max"]
        notes = [n for n in per_lam["diverged_note"].tolist() if n] + ([first["theory_note"]] if first["theory_note"] else [])
        rows.append({"cell": int(idx), "label": labels.get(int(idx), ""), **_setup(first, setup),
                     "cell_hash": first["cell_hash"],
                     "gamma": first["gamma"], "gamma_over_t1_max": first["gamma"] / gmax if gmax > 0 else np.nan,
                     "gamma_stable_max": stable, "mu": first["mu"], "expected_smoothness": first["expected_smoothness"],
                     "seeds": int(first["seeds"]), "steps": int(first["steps"]),
                     "diverged": int(per_lam["n_diverged"].sum()),
                     "trajectories": int(first["seeds"]) * len(per_lam), "notes": "; ".join(notes)})
    return pd.DataFrame(rows)


_TABLES = {"bounds": bounds_table, "lambdas": lambdas_table, "cells": cells_table}


def table(spec_or_dir, kind="bounds", out=None):
    """The table ``kind`` (bounds, lambdas or cells) of a sweep's results, as a DataFrame."""
    if kind not in _TABLES:
        raise SweepUsageError(f"unknown table {kind!r}; valid values: {', '.join(TABLE_KINDS)}")
    _, sweep, frame = _open(spec_or_dir, out)
    result = _TABLES[kind](frame, _labels(sweep))
    result.attrs["missing"] = frame.attrs.get("missing", [])
    return result


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def to_markdown(frame):
    """A GitHub Markdown table (floats to 4 significant digits, empty cells for missing values)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def render_table(frame, fmt="md"):
    if fmt not in FORMATS:
        raise SweepUsageError(f"unknown format {fmt!r}; valid values: {', '.join(FORMATS)}")
    return to_markdown(frame) if fmt == "md" else frame.to_csv(index=False)


# ------------------------------------------------------------------ figures
GROUP_KEYS = ("problem", "teacher_label", "batch_size", "estimator", "seeds", "steps", "record_every") + tuple(TRAINING)


def _group_keys(frame):
    keys = [k for k in frame.columns if k.startswith("problem_")] + list(GROUP_KEYS)
    return [k for k in keys if k in frame.columns]


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("_")[:80]


def _group_title(keys, values, frame):
    varying = [k for k in keys if frame[k].nunique(dropna=False) > 1]
    names = {k: "teacher" if k == "teacher_label" else k.removeprefix("problem_") for k in keys}
    parts = [f"{names[k]}={v:g}" if isinstance(v, float) else f"{names[k]}={v}"
             for k, v in zip(keys, values) if k in varying]
    return ", ".join(parts) or str(frame["problem"].iloc[0])


#: how a problem parameter reads in a figure title
PARAM_TEXT = {"cond": "κ", "l2": "α", "n_classes": "K", "classes": "K"}
#: figure kinds of ``kdsim plot``, in the order their first figures are drawn
FIGURE_KINDS = ("plateau_vs_gamma", "lambda_sweep", "convergence")


class FigureList(list):
    """The paths of the figures ``plot`` wrote, with ``skipped``: (kind, file name) of the
    figures that ``max_figures`` left out, and ``summary``, one line that says so."""

    def __init__(self, paths=(), skipped=(), max_figures=None):
        super().__init__(paths)
        self.skipped = list(skipped)
        self.max_figures = max_figures

    def summary(self):
        """An empty string when nothing was left out, else one line: how many figures of each kind
        were skipped."""
        if not self.skipped:
            return ""
        counts = {}
        for kind, _ in self.skipped:
            counts[kind] = counts.get(kind, 0) + 1
        parts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items())
        return (f"--max-figures {self.max_figures}: wrote {len(self)} of {len(self) + len(self.skipped)} figures; "
                f"skipped {parts} (raise --max-figures to draw them)")


def caption(row, keys=None):
    """The instance a figure shows, in words: problem and its parameters, teacher, b, estimator,
    seeds and steps (``keys``: only those columns, for a group of cells)."""
    def has(k):
        return k in row.index and (keys is None or k in keys) and not (isinstance(row[k], float) and np.isnan(row[k]))

    params = []
    for k in row.index:
        if k.startswith("problem_") and has(k) and k not in ("problem_seed",):
            name = k.removeprefix("problem_")
            v = row[k]
            if name == "l2" and float(v) == 0.0:
                continue
            params.append(f"{PARAM_TEXT.get(name, name)}={v:g}" if isinstance(v, (float, np.floating)) else
                          f"{PARAM_TEXT.get(name, name)}={v}")
    parts = [f"{str(row['problem']).replace('_', ' ')} {', '.join(params)}".strip()]
    if has("teacher_label"):
        parts.append(f"teacher {str(row['teacher_label']).replace('_', ' ')}")
    if has("batch_size"):
        parts.append(f"b={int(row['batch_size'])}")
    if has("estimator"):
        parts.append(f"estimator {row['estimator']}")
    if has("seeds") and has("steps"):
        parts.append(f"{int(row['seeds'])} seeds, {int(row['steps'])} steps")
    setup = setup_text(row, keys)
    if setup:
        parts.append(setup)
    return "; ".join(parts)


#: how a non-default training option reads in a figure title
SETUP_TEXT = {"sampling": "sampling {}", "drop_last": "drop_last", "momentum": "momentum μ = {:g}",
              "lam_schedule": "λ schedule {}", "temperature": "τ = {:g}", "teacher_l2": "teacher_l2 = {:g}",
              "svrg_period": "SVRG period {}", "svrg_warmup": "SVRG warm-up {} epochs",
              "svrg_correction": "SVRG without correction"}


def setup_text(row, keys=None):
    """The training options of a row that differ from their defaults, in words ("" when none)."""
    parts = []
    for key, param in TRAINING.items():
        if key not in row.index or (keys is not None and key not in keys):
            continue
        value = row[key]
        if pd.isna(value) or value == param.default:
            continue
        parts.append(SETUP_TEXT[key].format(int(value) if key in ("svrg_period", "svrg_warmup") else value))
    return ", ".join(parts)


def _select(planned, max_figures):
    """(kept, skipped): round-robin over the kinds, so that every kind gets figures before any
    kind gets many; each kind keeps its own order."""
    queues = {kind: [p for p in planned if p[0] == kind] for kind in FIGURE_KINDS}
    kept = []
    while len(kept) < max_figures and any(queues.values()):
        for kind in FIGURE_KINDS:
            if queues[kind] and len(kept) < max_figures:
                kept.append(queues[kind].pop(0))
    chosen = {id(p) for p in kept}
    return [p for p in planned if id(p) in chosen], [p for p in planned if id(p) not in chosen]


def plot(spec_or_dir, out=None, figures=None, max_figures=24, fmt="png", dpi=None):
    """Write the sweep's figures to ``figures`` (default OUT/figures); return their paths.

    Figures: plateau against γ per group of cells and λ, the λ sweep per γ, convergence curves
    per cell (a colour bar over λ instead of a legend when there are more than
    ``kdsim.report.plots.MAX_LEGEND_SERIES`` λ). With more figures than ``max_figures`` the
    kinds take turns (every kind gets figures) and the result's ``skipped`` lists the rest
    (``FigureList``; its ``summary()`` is the line to print). ``fmt``: png, pdf or svg;
    ``dpi``: resolution of PNG output.
    """
    import matplotlib

    matplotlib.use("Agg")
    from ..report import plots

    if str(fmt).lower() not in plots.FORMATS:
        raise SweepUsageError(f"unknown figure format {fmt!r}; valid values: {', '.join(plots.FORMATS)}")
    fmt = str(fmt).lower()
    store, sweep, frame = _open(spec_or_dir, out)
    fig_dir = _writable(Path(figures) if figures is not None else store.root / "figures")
    labels = _labels(sweep)
    keys = _group_keys(frame)
    per_lam = frame.sort_values("step").groupby(["cell_index", "lam"], sort=True).agg("last").reset_index()
    planned = []
    for values, g in per_lam.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        slug = _slug(_group_title(keys, values, per_lam))
        text = caption(g.iloc[0], keys)
        if g["gamma"].nunique() >= 2:
            planned.append(("plateau_vs_gamma", fig_dir / f"plateau_vs_gamma_{slug}.{fmt}",
                            lambda g=g, path=None, text=text: _plateau_vs_gamma(g, path, text, fmt, dpi)))
        for gamma, h in g.groupby("gamma", sort=True):
            if h["lam"].nunique() >= 3:
                planned.append(("lambda_sweep", fig_dir / f"lambda_sweep_{slug}_gamma={gamma:.4g}.{fmt}",
                                lambda h=h, path=None, text=text, gamma=gamma: _lambda_sweep(
                                    plots, h, path, f"{text}; γ = {gamma:.4g}", fmt, dpi)))
    for idx, g in frame.groupby("cell_index", sort=True):
        planned.append(("convergence", fig_dir / f"convergence_cell{int(idx):04d}_{g['cell_hash'].iloc[0]}.{fmt}",
                        lambda g=g, path=None, label=labels.get(int(idx), ""): _convergence(
                            plots, g, path, label, fmt, dpi)))
    kept, skipped = _select(planned, max_figures)
    paths = [draw(path=path) for _, path, draw in kept]
    return FigureList(paths, [(kind, path.name) for kind, path, _ in skipped], max_figures)


def _writable(folder):
    """``folder``, created if needed, once a file could be written in it (checked before any drawing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".kdsim-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SweepUsageError(f"cannot write figures to {str(folder)!r} ({exc.strerror or exc}); "
                              "give a writable folder with --figures DIR") from None
    return folder


def _plateau_vs_gamma(g, path, title, fmt="png", dpi=None):
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..report import plots

    lams = sorted(g["lam"].unique())
    colours, cmap, norm = plots._series_colours([f"λ = {v:g}" for v in lams], [float(v) for v in lams])
    with plots._style():
        fig, ax = plt.subplots(figsize=(plots.PAGE_WIDTH, 4.0), layout="constrained")
        for lam in lams:
            colour = colours[f"λ = {lam:g}"]
            h = g[g["lam"] == lam].sort_values("gamma")
            pos = h["plateau_dist2_opt_mean"] > 0
            ax.plot(h["gamma"][pos], h["plateau_dist2_opt_mean"][pos], "o-", color=colour, markersize=3,
                    linewidth=1.3, zorder=3)
            low = h["plateau_dist2_opt_ci_low"].clip(lower=h["plateau_dist2_opt_mean"][pos].min() * 1e-3
                                                     if pos.any() else 1e-300)
            if cmap is None:                                   # many λ: lines only
                ax.fill_between(h["gamma"][pos], low[pos], h["plateau_dist2_opt_ci_high"][pos], color=colour,
                                alpha=0.2, linewidth=0, zorder=1)
            nb = h["bound_t1_neighbourhood"].where(h["bound_t1_status"].str.startswith("applicable"))
            if nb.notna().any():
                ax.plot(h["gamma"], nb, "--", color=colour, linewidth=1.0, zorder=4)
            ex = h["exact_plateau_dist2_opt"]
            if ex.notna().any():
                ax.plot(h["gamma"], ex, ":", color=colour, linewidth=1.5, zorder=4)
        handles = []
        if cmap is None:
            handles += [Line2D([], [], color=colours[f"λ = {v:g}"], linewidth=2.4, label=plots.mathtext(f"λ = {v:g}"))
                        for v in lams]
        else:
            sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(
                cmap(np.linspace(0, 0.9, 256))))
            fig.colorbar(sm, ax=ax, pad=0.01).set_label(plots.mathtext("KD weight λ"))
        if cmap is None:
            handles.append(plots._BandHandle(Line2D([], [], color="0.15", marker="o", markersize=3, linewidth=1.3),
                                             Patch(color="0.15", alpha=0.2, linewidth=0),
                                             "Monte Carlo plateau (mean, 99% CI band)"))
        else:
            handles.append(Line2D([], [], color="0.15", marker="o", markersize=3, linewidth=1.3,
                                  label=f"Monte Carlo plateau (mean; CI bands left out for more than "
                                        f"{plots.MAX_LEGEND_SERIES} λ)"))
        handles.append(Line2D([], [], color="0.15", linestyle="--", linewidth=1.0, label="T1 neighbourhood"))
        if g["exact_plateau_dist2_opt"].notna().any():
            handles.append(Line2D([], [], color="0.15", linestyle=":", linewidth=1.5,
                                  label=plots.mathtext("exact plateau λ²D² + (1 − λ)²MSE_SGD (§5)")))
        ax.set_xscale("log")
        ax.set_yscale("log")
        plots._log_ticks(ax)
        ax.set_xlabel(plots.mathtext("step size γ"))
        ax.set_ylabel(plots.mathtext("plateau of E‖x_t − x*‖²"))
        fig.suptitle(plots._wrap(f"Plateau against the step size; {title}", 100))
        fig.legend(handles=handles, loc="outside lower center", ncols=plots._legend_columns(handles), frameon=False)
        return plots._save(fig, path, fmt, dpi)


def _lambda_sweep(plots, h, path, title, fmt="png", dpi=None):
    h = h.sort_values("lam")
    data = pd.DataFrame({"instance": title, "method": "Monte Carlo plateau", "lam": h["lam"],
                         "mean": h["plateau_dist2_opt_mean"], "ci_low": h["plateau_dist2_opt_ci_low"],
                         "ci_high": h["plateau_dist2_opt_ci_high"]})
    if h["exact_plateau_dist2_opt"].notna().all():
        ex = h["exact_plateau_dist2_opt"]
        data = pd.concat([data, pd.DataFrame({"instance": title, "method": "exact", "lam": h["lam"], "mean": ex,
                                              "ci_low": ex, "ci_high": ex})], ignore_index=True)
    first = h.iloc[0]
    markers = {name: float(first[col]) for name, col in ((r"$\hat\lambda$", "lambda_hat"),
                                                          (r"$\lambda^*_{\mathrm{T1}}$", "lambda_star_t1"),
                                                          (r"$\lambda^*_{\mathrm{T2}}$", "lambda_star_t2"),
                                                          (r"$\lambda^*_{\mathrm{published}}$", "lambda_star_published"),
                                                          (r"$\lambda_{\mathrm{opt}}$", "lambda_opt"))
               if np.isfinite(first[col])}
    data = data[data["mean"] > 0]
    return plots.lambda_sweep_plot(data, path, f"Plateau against the KD weight; {title}", markers=markers,
                                   ylabel="plateau of E‖x_t − x*‖²", fmt=fmt, dpi=dpi)


def _convergence(plots, g, path, label, fmt="png", dpi=None):
    curves = []
    first = g.iloc[0]
    inst = f"cell {_fig_text(label)}" if label else "cell"
    for lam, h in g.groupby("lam", sort=True):
        h = h.sort_values("step")
        common = {"instance": inst, "series": f"λ = {lam:g}", "series_value": float(lam), "quantity": "‖x_t − x*‖²",
                  "step": h["step"]}
        curves.append(pd.DataFrame({**common, "method": "Monte Carlo", "kind": "mc", "mean": h["dist2_opt_mean"],
                                    "ci_low": h["dist2_opt_ci_low"], "ci_high": h["dist2_opt_ci_high"]}))
        if h["bound_t1"].notna().any():
            b = h["bound_t1"]
            curves.append(pd.DataFrame({**common, "method": "T1 bound", "kind": "bound", "mean": b, "ci_low": b,
                                        "ci_high": b}).dropna(subset=["mean"]))
    curves[0].attrs.update(series_name="KD weight λ")
    title = _fig_text(f"Convergence; {caption(first)}; γ = {first['gamma']:.4g}")
    return plots.convergence_plot(curves, path, title, fmt=fmt, dpi=dpi)
