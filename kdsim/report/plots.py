"""Seaborn figures from the curves a check returns (long frames: step, mean, ci_low, ci_high)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def convergence_plot(curves, path, title):
    """Mean curves with confidence bands on a log scale, one panel per instance."""
    frame = pd.concat(curves, ignore_index=True)
    instances = list(dict.fromkeys(frame["instance"]))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(instances), figsize=(5.2 * len(instances), 4.2), squeeze=False)
    for ax, inst in zip(axes[0], instances):
        sub = frame[frame["instance"] == inst]
        palette = sns.color_palette("colorblind", n_colors=sub["method"].nunique())
        for colour, (method, g) in zip(palette, sub.groupby("method", sort=False)):
            pos = g["mean"] > 0
            ax.plot(g["step"][pos], g["mean"][pos], color=colour, label=method)
            lo = g["ci_low"].clip(lower=g["mean"][pos].min() * 1e-3 if pos.any() else 1e-300)
            ax.fill_between(g["step"][pos], lo[pos], g["ci_high"][pos], color=colour, alpha=0.25, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(sub["quantity"].iloc[0] + " (mean, 99% CI)")
        ax.set_title(inst, fontsize=10)
        ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
