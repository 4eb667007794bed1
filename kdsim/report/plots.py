"""Seaborn figures from the curves a check returns (long frames: step, mean, ci_low, ci_high)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def log_band_low(mean, ci_low, ci_high):
    """Lower edge of a band on a log axis.

    A t-interval of a positive, heavy-tailed mean can reach below zero; there the band
    shows the log-scale mirror of the upper limit, mean²/ci_high, instead of a drop to
    the bottom of the axis.
    """
    mirror = mean * mean / ci_high.where(ci_high > 0, mean)
    return ci_low.where(ci_low > 0, mirror)


def convergence_plot(curves, path, title):
    """Mean curves with confidence bands on a log scale, one panel per instance.

    Where a lower confidence limit is not positive the band's lower edge is the log-scale
    mirror of the upper one (``log_band_low``). Theoretical curves (a method named with
    "flow", "bound", "exact" or "theory") are dashed.
    """
    frame = pd.concat(curves, ignore_index=True)
    instances = list(dict.fromkeys(frame["instance"]))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(instances), figsize=(5.2 * len(instances), 4.2), squeeze=False)
    for ax, inst in zip(axes[0], instances):
        sub = frame[frame["instance"] == inst]
        palette = sns.color_palette("colorblind", n_colors=sub["method"].nunique())
        for colour, (method, g) in zip(palette, sub.groupby("method", sort=False)):
            pos = g["mean"] > 0
            theory_curve = any(w in method.lower() for w in ("flow", "bound", "exact", "theory"))
            ax.plot(g["step"][pos], g["mean"][pos], "--" if theory_curve else "-", color=colour, label=method,
                    linewidth=2.2 if theory_curve else 1.5)
            ax.fill_between(g["step"][pos], log_band_low(g["mean"], g["ci_low"], g["ci_high"])[pos],
                            g["ci_high"][pos], color=colour, alpha=0.25, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(sub["quantity"].iloc[0] + " (mean, 99% CI)")
        ax.set_title(textwrap.fill(inst, 48), fontsize=10)
        ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def lambda_sweep_plot(data, path, title, markers=None, optimum=None, ylabel="E‖x_T − x*‖²"):
    """Error against λ (mean with CI band), the λ variants as vertical lines and the
    empirical optimum with its interval as a shaded span.

    ``data``: frame with columns instance, lam, mean, ci_low, ci_high (and optionally
    method: a solid line per method; "exact" rows are drawn dashed without a band).
    ``markers``: {label: λ}; ``optimum``: (λ, low, high).
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    methods = data["method"].unique() if "method" in data else [None]
    palette = sns.color_palette("colorblind", n_colors=len(methods) + len(markers or {}))
    for colour, method in zip(palette, methods):
        g = data if method is None else data[data["method"] == method]
        style = "--" if method == "exact" else "-"
        ax.plot(g["lam"], g["mean"], style, color=colour, label=method or "Monte Carlo mean")
        if method != "exact":
            ax.fill_between(g["lam"], g["ci_low"], g["ci_high"], color=colour, alpha=0.25, linewidth=0)
    if optimum is not None:
        lam, lo, hi = optimum
        ax.axvspan(lo, hi, color="grey", alpha=0.2, label=f"empirical optimum {lam:.3g} [{lo:.3g}, {hi:.3g}]")
    for colour, (label, lam) in zip(palette[len(methods):], (markers or {}).items()):
        ax.axvline(lam, color=colour, linestyle=":", linewidth=2, label=f"{label} = {lam:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("KD weight λ")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def heatmap_plot(data, path, title, x, y, value, xlabel=None, ylabel=None, fmt=".2f"):
    """Annotated heatmap of ``value`` over the grid (``x``, ``y``) of a long frame."""
    sns.set_theme(style="white", context="notebook")
    table = data.pivot(index=y, columns=x, values=value).sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * table.shape[1], 1.2 + 0.6 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=fmt, cmap="viridis", ax=ax, cbar_kws={"label": value})
    ax.set_xticklabels([f"{float(t.get_text()):.3g}" for t in ax.get_xticklabels()])
    ax.set_yticklabels([f"{float(t.get_text()):.3g}" for t in ax.get_yticklabels()])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def scatter_plot(data, path, title, xlabel="theoretical", ylabel="empirical", log=True):
    """Empirical against theoretical values (with CI error bars) and the line y = x.

    ``data``: frame with columns theoretical, empirical, ci_low, ci_high, instance.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(5.4, 5.0))
    for colour, (inst, g) in zip(sns.color_palette("colorblind", data["instance"].nunique()),
                                 data.groupby("instance", sort=False)):
        err = [(g["empirical"] - g["ci_low"]).clip(lower=0), (g["ci_high"] - g["empirical"]).clip(lower=0)]
        ax.errorbar(g["theoretical"], g["empirical"], yerr=err, fmt="o", color=colour, label=inst, ms=4)
    lo = min(data["theoretical"].min(), data["ci_low"].clip(lower=1e-300).min())
    hi = max(data["theoretical"].max(), data["ci_high"].max())
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="y = x")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: figure kinds a check may request in ``CheckResult.figures``
RENDERERS = {"lambda_sweep": lambda_sweep_plot, "heatmap": heatmap_plot, "scatter": scatter_plot}


def render(figure, out_dir):
    """Draw one figure request {"kind", "name", "data", "title", ...kind-specific keywords}."""
    spec = dict(figure)
    kind, name = spec.pop("kind"), spec.pop("name")
    if kind not in RENDERERS:
        raise ValueError(f"unknown figure kind {kind!r}; valid values: {', '.join(RENDERERS)}")
    data, title = spec.pop("data"), spec.pop("title")
    return RENDERERS[kind](data, Path(out_dir) / f"{name}.png", title, **spec)
