"""Replications of the authors' experiments with kdsim's simulator (``kdsim replicate NAME``).

``kdvr_linear``: the release linear experiment of the paper's code, transposed to the shipped
8×8 digits. Softmax regression with a bias, constant step 0.05, batch 10, KD weight 0.7, the
"modified" KD update (the distillation gradient ∇f_B(x) − λ∇f_B(θ), kdsim's estimator "kd"),
reshuffled epochs as a shuffled data loader gives them (the last batch partial), no momentum;
SGD, KD and SVRG as the authors run it (plain SGD for 2 epochs, then the teacher becomes a copy
of the student every 2 epochs, λ = 0.7, no full-gradient correction). Many seeds instead of one
run, so every curve has a confidence band.

Every place the transposition differs from the paper's MNIST setting is listed in
``Replication.differences`` and in the written report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import _validate as V

#: the settings of the authors' release linear script and of its transposition here
KDVR_LINEAR = {
    "step": 0.05, "batch_size": 10, "lam": 0.7, "epochs": 100, "seeds": 256, "momentum": 0.0,
    "l2": 1e-3, "test_fraction": 0.2, "split_seed": 0,
    "teacher_epochs": 10, "teacher_seed": 1_000_003,
    "svrg_start_epochs": 2, "svrg_switch_epochs": 2,
}
#: reduced sizes of ``quick=True`` (the default test set runs it)
KDVR_LINEAR_QUICK = {"epochs": 4, "seeds": 16, "teacher_epochs": 2}
METHODS = ("SGD", "KD", "SVRG")


@dataclass
class Replication:
    """A replication's tidy results, its final-epoch table, settings and differences from the paper.

    ``frame``: one row per (method, epoch, record) with mean, ci_low, ci_high, sem, count
    (Student-t intervals over seeds at ``level``); records ``train_loss`` (the training
    objective f, ridge included), ``subopt`` (f − f*), ``test_loss`` and ``test_accuracy``.
    """

    name: str
    frame: pd.DataFrame
    settings: dict
    differences: list
    teacher: object = None
    level: float = 0.95
    notes: list = field(default_factory=list)

    def table(self):
        """One row per method at the last epoch: mean and interval of every record."""
        last = self.frame[self.frame["epoch"] == self.frame["epoch"].max()]
        rows = []
        for method in METHODS:
            sub = last[last["method"] == method].set_index("record")
            if sub.empty:
                continue
            row = {"method": method, "seeds": int(sub["count"].iloc[0])}
            for rec in ("train_loss", "subopt", "test_loss", "test_accuracy"):
                row[rec] = sub.loc[rec, "mean"]
                row[f"{rec}_ci"] = f"[{sub.loc[rec, 'ci_low']:.5g}, {sub.loc[rec, 'ci_high']:.5g}]"
            rows.append(row)
        return pd.DataFrame(rows)

    def to_markdown(self):
        """The report: settings, the final-epoch table and the differences from the paper."""
        t = self.table()
        lines = [f"# Replication: {self.name}", "",
                 f"Final epoch ({int(self.frame['epoch'].max())}), means over seeds with {self.level:.0%} "
                 "Student-t intervals.", "",
                 "| method | seeds | train loss f | f − f* | test loss | test accuracy |", "|---|---|---|---|---|---|"]
        for _, r in t.iterrows():
            lines.append(f"| {r['method']} | {r['seeds']} | {r['train_loss']:.5g} {r['train_loss_ci']} | "
                         f"{r['subopt']:.4g} {r['subopt_ci']} | {r['test_loss']:.5g} {r['test_loss_ci']} | "
                         f"{r['test_accuracy']:.4f} {r['test_accuracy_ci']} |")
        lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in self.settings.items()]
        lines += ["", "## Differences from the paper's setting", ""] + [f"- {d}" for d in self.differences]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def figure(self):
        """Training objective (log scale) and test accuracy per epoch, mean and band per method."""
        import matplotlib.pyplot as plt

        from .report.plots import _style
        with _style():
            fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.9), layout="constrained")
            for ax, rec, label, log in ((axes[0], "train_loss", "training objective f(x_t)", True),
                                        (axes[1], "test_accuracy", "test accuracy", False)):
                for method, colour in zip(METHODS, ("C0", "C1", "C2")):
                    sub = self.frame[(self.frame["method"] == method) & (self.frame["record"] == rec)]
                    if sub.empty:
                        continue
                    ax.plot(sub["epoch"], sub["mean"], color=colour, label=method, linewidth=1.2)
                    ax.fill_between(sub["epoch"], sub["ci_low"], sub["ci_high"], color=colour, alpha=0.25,
                                    linewidth=0)
                ax.set_xlabel("epoch")
                ax.set_ylabel(label)
                if log:
                    ax.set_yscale("log")
            axes[0].legend(frameon=False)
            fig.suptitle(f"{self.name}: mean over seeds, {self.level:.0%} bands")
        return fig

    def save(self, out, fmt="png", dpi=None):
        """Write ``<name>.csv`` (the tidy frame), ``<name>.md`` (the report) and the figure; return the paths."""
        from .report.plots import _save
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{self.name}.csv", out / f"{self.name}.md"]
        self.frame.to_csv(paths[0], index=False)
        paths[1].write_text(self.to_markdown())
        paths.append(_save(self.figure(), out / f"{self.name}.{fmt}", fmt=fmt, dpi=dpi))
        return paths


def kdvr_linear_problem(l2=None, test_fraction=None, split_seed=None):
    """The digits problem of ``kdvr_linear``: (train problem with its test split, train Dataset, test Dataset)."""
    from .datasets import train_test_split
    from .problems import SoftmaxRegression
    s = KDVR_LINEAR
    train, test = train_test_split("digits", s["test_fraction"] if test_fraction is None else test_fraction,
                                   s["split_seed"] if split_seed is None else split_seed, standardize=True)
    alpha = s["l2"] if l2 is None else l2
    problem = SoftmaxRegression(train.A, train.y, train.n_classes, bias=True, l2=alpha)
    held = SoftmaxRegression(test.A, test.y, test.n_classes, bias=True, l2=alpha)
    return problem.with_test(held), train, test


def kdvr_linear(quick=False, seeds=None, epochs=None, backend="auto", seed=0, level=0.95, progress=None):
    """Replicate the authors' release linear experiment on the digits (module docstring).

    Parameters
    ----------
    quick : bool
        Reduced sizes (``KDVR_LINEAR_QUICK``: 4 epochs, 16 seeds), for tests.
    seeds, epochs : int, optional
        Override the number of seeds (default 256) and epochs (default 100).
    backend : str
        Simulation backend (``simulate``'s).
    seed : int
        Master seed of the index streams (every method uses the same streams).
    level : float
        Level of the intervals.
    progress : callable, optional
        Called with a short message before each stage.

    Returns
    -------
    Replication
    """
    from .simulate import simulate
    from .teachers import early_stopped
    s = dict(KDVR_LINEAR, **(KDVR_LINEAR_QUICK if quick else {}))
    if seeds is not None:
        s["seeds"] = V.int_in_range("seeds", seeds, 2)
    if epochs is not None:
        s["epochs"] = V.int_in_range("epochs", epochs, 1)
    level = V.positive_float("level", level, upper=1.0)
    say = progress or (lambda _msg: None)
    problem, train, test = kdvr_linear_problem()
    K = -(-problem.n // s["batch_size"])
    say(f"training the teacher: SGD, {s['teacher_epochs']} reshuffled epochs")
    teacher = early_stopped(problem, s["teacher_epochs"] * K, s["step"], s["batch_size"], seed=s["teacher_seed"],
                            sampling="reshuffle")
    common = dict(batch_size=s["batch_size"], epochs=s["epochs"], record_every_epoch=1, sampling="reshuffle",
                  momentum=s["momentum"], backend=backend, seed=seed)
    runs = {
        "SGD": dict(estimator="sgd", lams=[0.0]),
        "KD": dict(estimator="kd", lams=[s["lam"]]),
        "SVRG": dict(estimator="svrg", lams=[s["lam"]], svrg_warmup=s["svrg_start_epochs"],
                     svrg_period=s["svrg_switch_epochs"] * K, svrg_correction=False),
    }
    frames = []
    f_star = float(problem.f_star)
    for method, kw in runs.items():
        say(f"{method}: {s['seeds']} seeds × {s['epochs']} epochs")
        lams = kw.pop("lams")
        res = simulate(problem, teacher.theta, lams, s["step"], seeds=s["seeds"], **common, **kw)
        frame = res.summary(level=level, records=("subopt", "test_loss", "test_accuracy"))
        loss = frame[frame["record"] == "subopt"].copy()
        loss[["mean", "ci_low", "ci_high"]] += f_star
        loss["record"] = "train_loss"
        frame = pd.concat([frame, loss], ignore_index=True)
        frame.insert(0, "method", method)
        frame["epoch"] = frame["step"] / K
        frames.append(frame.drop(columns=["lam"]))
    frame = pd.concat(frames, ignore_index=True)
    settings = {
        "data": f"digits, {problem.n} train / {test.n_samples} test samples (stratified split, seed "
                f"{s['split_seed']}), 64 pixels standardised by the training part + bias, 10 classes",
        "model": f"softmax regression with bias, ridge α = {s['l2']:g} (kdsim's records need a finite optimum)",
        "optimiser": f"constant step {s['step']}, batch {s['batch_size']}, reshuffled epochs of {K} steps "
                     f"(last batch {problem.n - (K - 1) * s['batch_size']} samples), momentum {s['momentum']:g}, "
                     f"{s['epochs']} epochs, {s['seeds']} seeds",
        "KD": f"λ = {s['lam']}, the 'modified' update ∇f_B(x) − λ∇f_B(θ) (estimator 'kd')",
        "SVRG": f"plain SGD for {s['svrg_start_epochs']} epochs, then the teacher is a copy of the student "
                f"every {s['svrg_switch_epochs']} epochs, λ = {s['lam']}, no full-gradient correction",
        "teacher": f"{teacher.describe()} — SGD from 0 on the training part, {s['teacher_epochs']} reshuffled "
                   f"epochs, step {s['step']}, batch {s['batch_size']}; ‖θ − x*‖ = {teacher.distance:.4g}",
    }
    differences = [
        "data: the 8×8 digits shipped with kdsim (1,797 images) instead of MNIST (60,000 + 10,000 images of "
        "28×28); the test split is a seeded stratified 20% of the digits, not a separate test set",
        "preprocessing: columns standardised by the training part (the authors normalise MNIST pixels by "
        "fixed constants) and a column of ones for the bias",
        f"ridge α = {s['l2']:g} on every weight where the release script uses weight decay 0: the digits are "
        "separable, so without a ridge there is no finite optimum and f − f* is undefined",
        "teacher: an SGD fit of the same linear model on the training part (the paper's teachers are trained "
        "models too; its exact teacher and training budget are not reproduced)",
        f"{s['seeds']} seeds with confidence bands instead of one run; every method uses the same index "
        "streams (common random numbers)",
        "training loss: the exact training objective f(x_t) (ridge included) at every epoch end, not the "
        "running mean of minibatch losses that the authors log",
    ]
    if quick:
        differences.append(f"quick run: {s['epochs']} epochs, {s['seeds']} seeds, teacher {s['teacher_epochs']} "
                           "epochs (the full replication is `kdsim replicate kdvr-linear`)")
    return Replication("kdvr-linear", frame, settings, differences, teacher, level)


REPLICATIONS = {"kdvr-linear": kdvr_linear}
