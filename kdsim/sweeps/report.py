"""Tables and figures from a sweep's store (no simulation, no theory: both are in the rows).

Tables (:func:`table`, ``kdsim table``):

* ``bounds`` — one row per (cell, λ, bound) with a verdict: "holds" when the upper
  confidence limit stays below the bound at every record (up to a relative 1e-9 for
  rounding: at t = 0 the bound is an equality), "VIOLATED" when the lower confidence
  limit exceeds it at some record, "inconclusive" otherwise (more seeds decide); the
  worst ratios mean / bound and upper CI / bound, the plateau of the
  bounded quantity with its interval beside the bound's neighbourhood and their ratio,
  the fitted per-step factor with its interval beside the bound's rate; or the bound's
  status ("not applicable: γ = … > γ_max = …") where it does not apply.
* ``lambdas`` — one row per cell: the empirical best λ on the grid (smallest plateau of
  E‖x_t − x*‖²) with its plateau, beside λ̂, λ*_T1, λ*_T2, λ*_published and λ_opt.
* ``cells`` — one row per cell: γ, γ relative to the T1 condition and to the largest
  stable step, diverged trajectories, notes.

Figures (:func:`plot`, ``kdsim plot``): plateau against γ per λ with the T1
neighbourhood and the exact least-squares plateau; the λ sweep per γ
(``kdsim.report.plots.lambda_sweep_plot``) with λ̂, λ*_T1, λ*_T2, λ*_published, λ_opt;
convergence curves per cell with the T1 bound (``kdsim.report.plots.convergence_plot``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .registry import SweepUsageError
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
def bounds_table(frame, labels):
    """One row per (cell, λ, bound); see the module docstring."""
    rows = []
    for (idx, lam), g in frame.groupby(["cell_index", "lam"], sort=True):
        g = g.sort_values("step")
        first = g.iloc[0]
        for key, name in BOUND_NAMES.items():
            q = BOUND_QUANTITY[key]
            status = str(first[f"bound_{key}_status"])
            if not status:
                continue
            bound = g[f"bound_{key}"].to_numpy(dtype=float)
            mean = g[f"{q}_mean"].to_numpy(dtype=float)
            lo = g[f"{q}_ci_low"].to_numpy(dtype=float)
            hi = g[f"{q}_ci_high"].to_numpy(dtype=float)
            row = {"cell": int(idx), "label": labels.get(int(idx), ""), "lam": float(lam), "bound": name,
                   "quantity": QUANTITY_TEXT[q], "verdict": "", "max_mean_over_bound": np.nan,
                   "max_upper_over_bound": np.nan,
                   "plateau": first.get(f"plateau_{q}_mean", np.nan),
                   "plateau_ci_low": first.get(f"plateau_{q}_ci_low", np.nan),
                   "plateau_ci_high": first.get(f"plateau_{q}_ci_high", np.nan),
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
                    with np.errstate(divide="ignore", invalid="ignore"):
                        row["max_mean_over_bound"] = float(np.max(np.where(bound[ok] > 0, mean[ok] / bound[ok], np.inf)))
                        row["max_upper_over_bound"] = float(np.max(np.where(bound[ok] > 0, hi[ok] / bound[ok], np.inf)))
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
    return pd.DataFrame(rows)


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
    for idx, g in frame.groupby("cell_index", sort=True):
        first = g.iloc[0]
        lam, p, lo, hi = _best_on_grid(g)
        rows.append({"cell": int(idx), "label": labels.get(int(idx), ""), "gamma": first["gamma"],
                     "best_lam_on_grid": lam, "plateau_at_best": p, "plateau_ci_low": lo, "plateau_ci_high": hi,
                     "lambda_hat": first["lambda_hat"], "lambda_star_t1": first["lambda_star_t1"],
                     "lambda_star_t2": first["lambda_star_t2"], "lambda_star_published": first["lambda_star_published"],
                     "lambda_opt": first["lambda_opt"], "grid": ", ".join(f"{v:g}" for v in sorted(g["lam"].unique()))})
    return pd.DataFrame(rows)


def cells_table(frame, labels):
    """One row per cell: γ against the T1 condition and the stability threshold, divergence, notes."""
    rows = []
    for idx, g in frame.groupby("cell_index", sort=True):
        first = g.iloc[0]
        per_lam = g.groupby("lam").first()
        gmax = first["bound_t1_gamma_max"]
        stable = first["gamma_stable_max"]
        notes = [n for n in per_lam["diverged_note"].tolist() if n] + ([first["theory_note"]] if first["theory_note"] else [])
        rows.append({"cell": int(idx), "label": labels.get(int(idx), ""), "cell_hash": first["cell_hash"],
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
GROUP_KEYS = ("problem", "teacher_label", "batch_size", "estimator", "seeds", "steps", "record_every")


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


def plot(spec_or_dir, out=None, figures=None, max_figures=24):
    """Write the sweep's figures (PNG) to ``figures`` (default OUT/figures); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from ..report import plots

    store, sweep, frame = _open(spec_or_dir, out)
    fig_dir = _writable(Path(figures) if figures is not None else store.root / "figures")
    labels = _labels(sweep)
    paths = []
    keys = _group_keys(frame)
    per_lam = frame.sort_values("step").groupby(["cell_index", "lam"], sort=True).agg("last").reset_index()
    for values, g in per_lam.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        title = _group_title(keys, values, per_lam)
        if g["gamma"].nunique() >= 2 and len(paths) < max_figures:
            paths.append(_plateau_vs_gamma(g, fig_dir / f"plateau_vs_gamma_{_slug(title)}.png", title))
        for gamma, h in g.groupby("gamma", sort=True):
            if h["lam"].nunique() >= 3 and len(paths) < max_figures:
                paths.append(_lambda_sweep(plots, h, fig_dir / f"lambda_sweep_{_slug(title)}_gamma={gamma:.4g}.png",
                                           f"{title}, γ = {gamma:.4g}"))
    for idx, g in frame.groupby("cell_index", sort=True):
        if len(paths) >= max_figures:
            break
        paths.append(_convergence(plots, g, fig_dir / f"convergence_cell{int(idx):04d}_{g['cell_hash'].iloc[0]}.png",
                                  labels.get(int(idx), "")))
    return paths


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


def _plateau_vs_gamma(g, path, title):
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lams = sorted(g["lam"].unique())
    palette = sns.color_palette("colorblind", n_colors=len(lams))
    for colour, lam in zip(palette, lams):
        h = g[g["lam"] == lam].sort_values("gamma")
        pos = h["plateau_dist2_opt_mean"] > 0
        ax.plot(h["gamma"][pos], h["plateau_dist2_opt_mean"][pos], "o-", color=colour, label=f"λ = {lam:g}")
        low = h["plateau_dist2_opt_ci_low"].clip(lower=h["plateau_dist2_opt_mean"][pos].min() * 1e-3 if pos.any() else 1e-300)
        ax.fill_between(h["gamma"][pos], low[pos], h["plateau_dist2_opt_ci_high"][pos], color=colour, alpha=0.2, linewidth=0)
        nb = h["bound_t1_neighbourhood"].where(h["bound_t1_status"].str.startswith("applicable"))
        if nb.notna().any():
            ax.plot(h["gamma"], nb, "--", color=colour, linewidth=1)
        ex = h["exact_plateau_dist2_opt"]
        if ex.notna().any():
            ax.plot(h["gamma"], ex, ":", color=colour, linewidth=1.5)
    ax.plot([], [], "k--", linewidth=1, label="T1 neighbourhood")
    if g["exact_plateau_dist2_opt"].notna().any():
        ax.plot([], [], "k:", linewidth=1.5, label="exact plateau (§5)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step size γ")
    ax.set_ylabel("plateau of E‖x_t − x*‖² (mean, CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lambda_sweep(plots, h, path, title):
    h = h.sort_values("lam")
    data = pd.DataFrame({"instance": title, "method": "Monte Carlo plateau", "lam": h["lam"],
                         "mean": h["plateau_dist2_opt_mean"], "ci_low": h["plateau_dist2_opt_ci_low"],
                         "ci_high": h["plateau_dist2_opt_ci_high"]})
    if h["exact_plateau_dist2_opt"].notna().all():
        ex = h["exact_plateau_dist2_opt"]
        data = pd.concat([data, pd.DataFrame({"instance": title, "method": "exact", "lam": h["lam"], "mean": ex,
                                              "ci_low": ex, "ci_high": ex})], ignore_index=True)
    first = h.iloc[0]
    markers = {name: float(first[col]) for name, col in (("λ̂", "lambda_hat"), ("λ*_T1", "lambda_star_t1"),
                                                          ("λ*_T2", "lambda_star_t2"),
                                                          ("λ*_published", "lambda_star_published"),
                                                          ("λ_opt", "lambda_opt")) if np.isfinite(first[col])}
    data = data[data["mean"] > 0]
    return plots.lambda_sweep_plot(data, path, title, markers=markers, ylabel="plateau of E‖x_t − x*‖²")


def _convergence(plots, g, path, label):
    curves = []
    for lam, h in g.groupby("lam", sort=True):
        h = h.sort_values("step")
        curves.append(pd.DataFrame({"instance": _fig_text(label) or "cell", "method": f"λ = {lam:g}", "step": h["step"],
                                    "quantity": "‖x_t − x*‖²", "mean": h["dist2_opt_mean"],
                                    "ci_low": h["dist2_opt_ci_low"], "ci_high": h["dist2_opt_ci_high"]}))
        if h["bound_t1"].notna().any():
            b = h["bound_t1"]
            curves.append(pd.DataFrame({"instance": _fig_text(label) or "cell", "method": f"T1 bound, λ = {lam:g}", "step": h["step"],
                                        "quantity": "‖x_t − x*‖²", "mean": b, "ci_low": b, "ci_high": b}).dropna())
    return plots.convergence_plot(curves, path, _fig_text(f"{label}, γ = {g['gamma'].iloc[0]:.4g}"))
