"""SimResult: the arrays a simulation produced, indexed (λ, seed, record); SimSummary: their moments.

Both give a tidy ``summary()`` frame (mean, Student-t interval and standard error per
(λ, record step, record)), a ``plot()`` of the mean curves with their bands, and a
compact ``repr``. matplotlib is imported only inside ``plot`` (importing kdsim never
selects a plotting backend).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import stats
from .moments import RunningMoments
from .plan import RECORDS

RECORD_LABELS = {
    "dist2_opt": "‖x_t − x*‖²",
    "subopt": "f(x_t) − f*",
    "dist2_teacher": "‖x_t − θ‖²",
    "test_loss": "held-out loss",
    "test_accuracy": "held-out accuracy",
}
#: records a problem's held-out split adds (``Problem.with_test``)
HELDOUT_RECORDS = ("test_loss", "test_accuracy")


def config_hash(config):
    """Stable short hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_record(name, names=RECORDS):
    """A record name among ``names``, with a clear error for others."""
    if name not in names:
        extra = (" (test_loss and test_accuracy need a problem with a held-out split: problem.with_test)"
                 if name in HELDOUT_RECORDS else "")
        raise ValueError(f"unknown record {name!r}; valid values: {', '.join(names)}{extra}")
    return name


#: the training-setup options a configuration names when they differ from their defaults
#: (``kdsim.simulate.training_config``); ``to_frame`` adds them as columns
SETUP_KEYS = ("sampling", "drop_last", "momentum", "lam_schedule", "svrg_warmup", "svrg_correction", "teacher_l2",
              "temperature", "full_grad")


def setup_columns(config):
    """{option: value} of the non-default training options of a run's configuration."""
    return {k: config[k] for k in SETUP_KEYS if k in config}


#: summary-frame columns, in order
SUMMARY_COLUMNS = ("lam", "step", "record", "mean", "ci_low", "ci_high", "sem", "count")
#: the ways of reducing a seed's records to one value (``SimResult.per_seed``)
AT = ("final", "plateau")


def check_at(at):
    """A per-seed reduction name ("final" or "plateau"), with a clear error for others."""
    if at not in AT:
        raise ValueError(f"at must be one of {', '.join(map(repr, AT))}; got {at!r}")
    return at


def stability_note(step, stability):
    """One line on a step beyond its stability limit (``theory.step_stability``), or ""."""
    if not stability or stability.get("ratio") is None or stability["ratio"] <= 1.0:
        return ""
    return (f"step {step:.6g} is {stability['ratio']:.3g}× the mean-square stability limit "
            f"γ_c = {stability['limit']:.6g} of least squares at batch size {stability['batch_size']} "
            "(docs/theory.md §5): E‖x_t − x*‖² grows without bound")


def format_lams(lams, show=8):
    """``[0, 0.3, 1]``, or ``[0, 0.1, …, 1] (11 values)`` for a long grid."""
    lams = [float(v) for v in np.ravel(lams)]
    if len(lams) <= show:
        return "[" + ", ".join(f"{v:g}" for v in lams) + "]"
    return f"[{lams[0]:g}, {lams[1]:g}, …, {lams[-1]:g}] ({len(lams)} values)"


def _summary_frame(lams, steps, names, moments, level):
    """Tidy frame of ``SUMMARY_COLUMNS`` from {record: (mean, var, count)} with (λ, record) arrays."""
    L, R = len(lams), len(steps)
    parts = []
    for name in names:
        mean, var, count = moments[name]
        count = np.broadcast_to(np.asarray(count)[:, None], (L, R))
        lo, hi, sem = stats.t_interval(mean, var, count, level)
        parts.append(pd.DataFrame({
            "lam": np.repeat(np.asarray(lams, dtype=np.float64), R), "step": np.tile(steps, L), "record": name,
            "mean": np.ravel(mean), "ci_low": np.ravel(lo), "ci_high": np.ravel(hi), "sem": np.ravel(sem),
            "count": np.ravel(count).astype(np.int64)}))
    return pd.concat(parts, ignore_index=True)[list(SUMMARY_COLUMNS)]


def plot_curves(frame, record, ax=None, logy=True, level=0.99, title=None):
    """Mean ± interval band against the step, one line per λ, from a ``summary`` frame.

    Parameters
    ----------
    frame : DataFrame
        A ``summary()`` frame (columns ``SUMMARY_COLUMNS``).
    record : str
        Which record to draw.
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    logy : bool
        Log-scaled y axis. Non-positive means are left out there, and a band whose lower
        limit is not positive shows the log-scale mirror mean²/ci_high of its upper limit
        (a t-interval of a positive, heavy-tailed mean can reach below zero).
    level : float
        The interval's level, for the axis label.
    title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt   # lazily: importing kdsim must not pick a backend

    check_record(record, RECORDS + HELDOUT_RECORDS)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    sub = frame[frame["record"] == record]
    lams = list(dict.fromkeys(sub["lam"]))
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(lams), 1)))
    for colour, lam in zip(colours, lams):
        g = sub[sub["lam"] == lam]
        step, mean = g["step"].to_numpy(), g["mean"].to_numpy()
        lo, hi = g["ci_low"].to_numpy(), g["ci_high"].to_numpy()
        keep = np.isfinite(mean)
        if logy:
            keep &= mean > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                lo = np.where(lo > 0, lo, mean * mean / np.where(hi > 0, hi, np.nan))
        ax.plot(step[keep], mean[keep], color=colour, linewidth=1.5, label=f"λ = {lam:.4g}")
        band = keep & np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(step[band], lo[band], hi[band], color=colour, alpha=0.25, linewidth=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel(f"E {RECORD_LABELS[record]} (mean, {level:.0%} CI)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9)
    return ax


class _RunInfo:
    """What full and reduced results share: seeds, divergence flags, configuration hash."""

    @property
    def n_seeds(self):
        return self.diverged_step.shape[1]

    @property
    def diverged(self):
        """(λ, seed) mask of diverged trajectories."""
        return self.diverged_step >= 0

    @property
    def config_hash(self):
        return config_hash(self.config)

    @property
    def epochs(self):
        """The record steps in epochs (steps / K, K = ``config["steps_per_epoch"]``; NaN when unknown)."""
        K = self.config.get("steps_per_epoch")
        return np.asarray(self.steps, dtype=float) / K if K else np.full(len(self.steps), np.nan)

    def divergence_summary(self):
        """One line per λ with diverged trajectories, and one naming the stability limit when the
        step exceeds it (empty list when neither)."""
        lines = []
        note = stability_note(self.config.get("step", float("nan")), self.stability)
        if note:
            lines.append(note)
        for k, lam in enumerate(self.lams):
            m = self.diverged[k]
            if m.any():
                first = int(self.diverged_step[k][m].min())
                lines.append(f"λ={lam:g}: {int(m.sum())} of {m.size} trajectories diverged "
                             f"(first at step {first}) with step={self.config.get('step')}")
        return lines

    # ------------------------------------------------------------ summaries
    def _moments(self, name):
        """(mean, variance with ddof=1, count) over the seeds that never diverged: (λ, record), (λ, record), (λ,)."""
        raise NotImplementedError

    def sem(self, name):
        """Standard error of ``mean(name)``, shape (λ, record); NaN with fewer than two seeds."""
        _, var, count = self._moments(name)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(var / np.asarray(count)[:, None])

    def summary(self, level=0.99, records=None):
        """Tidy frame: one row per (λ, record step, record) over the seeds that never diverged.

        Parameters
        ----------
        level : float
            Two-sided level of the Student-t interval across seeds (independent trajectories).
        records : str or sequence of str, optional
            Records to include (default: all of ``dist2_opt``, ``subopt``, ``dist2_teacher``).

        Returns
        -------
        DataFrame
            Columns lam, step, record, mean, ci_low, ci_high, sem, count. ``count`` is the
            number of seeds of that λ that never diverged; with fewer than two the interval
            and ``sem`` are NaN.
        """
        names = self.record_names if records is None else ((records,) if isinstance(records, str) else tuple(records))
        moments = {check_record(n, self.record_names): self._moments(n) for n in names}
        return _summary_frame(self.lams, self.steps, names, moments, level)

    def plot(self, record="dist2_opt", ax=None, logy=True, level=0.99):
        """Mean ± ``level`` interval of one record against the step, one line per λ.

        Parameters
        ----------
        record : str
            "dist2_opt" (‖x_t − x*‖², default), "subopt" or "dist2_teacher".
        ax : matplotlib Axes, optional
            Where to draw (default: a new figure).
        logy : bool
            Log-scaled y axis (default True; see ``plot_curves`` for bands that reach 0).
        level : float
            Level of the Student-t band across seeds.

        Returns
        -------
        matplotlib Axes
        """
        frame = self.summary(level=level, records=record)
        c = self.config
        title = f"{c.get('problem', '')}, {c.get('estimator', '')}, γ={c.get('step', float('nan')):.3g}"
        return plot_curves(frame, record, ax=ax, logy=logy, level=level, title=title)

    # ------------------------------------------------------------ repr
    def _describe(self, kind):
        c = self.config
        engine = self.timing.get("engine")
        backend = c.get("backend", "?")
        backend = f"{backend!r}→{engine}" if engine and engine != backend else repr(backend)
        head = (f"{kind}(problem={c.get('problem', '?')!r}, estimator={c.get('estimator', '?')!r}, "
                f"step={c.get('step', float('nan')):g}, batch_size={c.get('batch_size', '?')}, backend={backend})")
        steps = np.asarray(self.steps)
        span = f"{steps[0]} … {steps[-1]}" if steps.size > 1 else f"{steps[0]}" if steps.size else "none"
        total = int(np.asarray(self.diverged_step).size)
        return (f"{head}\n  λ={format_lams(self.lams)}  seeds={self.n_seeds}  records={', '.join(self.record_names)} "
                f"at {steps.size} steps ({span})  diverged={int(self.diverged.sum())} of {total}")


@dataclass(repr=False)
class SimResult(_RunInfo):
    """Records of a simulation.

    ``dist2_opt``, ``subopt`` and ``dist2_teacher`` have shape (λ, seed, record);
    ``steps`` is the time axis (iteration numbers of the records). A trajectory
    whose iterate left the finite range is *diverged*: ``diverged_step`` holds the
    first step at which it did (−1 if never) and its later records are NaN in the
    raw arrays; ``to_frame`` and ``mean`` leave them out.
    """

    lams: np.ndarray
    steps: np.ndarray
    dist2_opt: np.ndarray
    subopt: np.ndarray
    dist2_teacher: np.ndarray
    diverged_step: np.ndarray
    x_final: np.ndarray
    config: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)   # engine timings (compile, run); not hashed
    stability: dict = field(default_factory=dict)  # theory.step_stability of the run's step; not hashed
    heldout: dict = field(default_factory=dict)  # held-out records (λ, seed, record): test_loss, test_accuracy
    iterates: np.ndarray | None = None           # (λ, seed, record, dim) with keep_iterates=True

    @property
    def record_names(self):
        """The records of this result: ``RECORDS`` and the held-out ones."""
        return RECORDS + tuple(self.heldout)

    def record(self, name):
        """The (λ, seed, record) array of one recorded quantity."""
        name = check_record(name, self.record_names)
        return self.heldout[name] if name in self.heldout else getattr(self, name)

    def mean(self, name):
        """Mean over the non-diverged seeds, shape (λ, record); NaN only where every seed diverged."""
        arr = self.record(name)
        alive = ~self.diverged
        count = alive.sum(axis=1)
        total = np.where(alive[:, :, None], arr, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count[:, None]

    def _moments(self, name):
        moments = RunningMoments(*self.dist2_opt.shape[::2])
        moments.add(self.record(name), ~self.diverged)
        return moments.result()

    def var(self, name):
        """Variance over the non-diverged seeds (ddof=1), shape (λ, record); NaN with fewer than 2 seeds."""
        return self._moments(name)[1]

    def per_seed(self, name, at="final", tail_fraction=0.5):
        """One value per (λ, seed) of a record: its last value, or its plateau.

        Parameters
        ----------
        name : str
            The record ("dist2_opt", "subopt" or "dist2_teacher").
        at : {"final", "plateau"}
            "final": the value at the last record step. "plateau": the mean of the seed's
            records in the last ``tail_fraction`` of the run (steps ≥ T − tail_fraction·T,
            the rule of ``kdsim.stats.plateau``): less noisy than "final", and an estimate
            of the stationary level once the transient has died out by then.
        tail_fraction : float
            Fraction of the run averaged by "plateau" (0 < tail_fraction ≤ 1).

        Returns
        -------
        ndarray (λ, seed)
            NaN for every seed that diverged at that λ (the means of ``mean`` leave them out too).
        """
        at = check_at(at)
        arr = self.record(name)
        if at == "final":
            per = arr[:, :, -1].copy()
        else:
            steps = np.asarray(self.steps, dtype=np.float64)
            frac = float(tail_fraction)
            if not 0.0 < frac <= 1.0:
                raise ValueError(f"tail_fraction must satisfy 0 < tail_fraction <= 1; got {tail_fraction!r}")
            tail = steps >= steps[-1] - frac * (steps[-1] - steps[0])
            per = arr[:, :, tail].mean(axis=2)
        per[self.diverged] = np.nan
        return per

    def __repr__(self):
        return self._describe("SimResult")

    def to_frame(self):
        """Long frame: one row per (λ, seed, record) up to divergence.

        Columns: lam, seed, step, epoch, dist2_opt, subopt, dist2_teacher, the held-out records
        (test_loss, test_accuracy) when the problem has a test split, diverged, and one column per
        training option that differs from its default (``SETUP_KEYS``: sampling, momentum, …).
        Records after a trajectory diverged are dropped (no NaN rows).
        """
        L, S, R = self.dist2_opt.shape
        lam = np.repeat(self.lams, S * R)
        seed = np.tile(np.repeat(np.arange(S), R), L)
        step = np.tile(self.steps, L * S)
        div_step = np.repeat(self.diverged_step.ravel(), R)
        keep = (div_step < 0) | (step < div_step)
        frame = pd.DataFrame({
            "lam": lam, "seed": seed, "step": step, "epoch": np.tile(self.epochs, L * S),
            **{name: self.record(name).ravel() for name in self.record_names},
            "diverged": div_step >= 0,
        })
        for key, value in setup_columns(self.config).items():
            frame[key] = value
        return frame[keep].reset_index(drop=True)


@dataclass(repr=False)
class SimSummary(_RunInfo):
    """Per-(λ, record) moments over the seeds that never diverged (``simulate(..., reduce=True)``)."""

    lams: np.ndarray
    steps: np.ndarray
    means: dict                  # record name -> (λ, record)
    variances: dict              # record name -> (λ, record), ddof=1, NaN with fewer than 2 seeds
    count: np.ndarray            # (λ,) seeds that entered
    diverged_step: np.ndarray    # (λ, seed)
    config: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    stability: dict = field(default_factory=dict)

    @property
    def record_names(self):
        """The records of this result: ``RECORDS`` and the held-out ones."""
        return RECORDS + tuple(n for n in self.means if n not in RECORDS)

    def mean(self, name):
        """Mean over non-diverged seeds, (λ, record)."""
        return self.means[check_record(name, self.record_names)]

    def var(self, name):
        """Variance over non-diverged seeds (ddof=1), (λ, record)."""
        return self.variances[check_record(name, self.record_names)]

    def _moments(self, name):
        return self.mean(name), self.var(name), np.asarray(self.count)

    def __repr__(self):
        return self._describe("SimSummary") + "  (reduced: moments only)"

    @staticmethod
    def reduce_arrays(arrays):
        """Full engine arrays -> the moments dict a reduced run returns (``engines.driver.run``)."""
        L, S, R = arrays["dist2_opt"].shape
        keep = arrays["diverged_step"] < 0
        out = {"mean": {}, "var": {}, "diverged_step": arrays["diverged_step"]}
        for name in RECORDS:
            m = RunningMoments(L, R)
            m.add(arrays[name], keep)
            out["mean"][name], out["var"][name], out["count"] = m.result()
        return out

    def to_frame(self):
        """One row per (λ, record): step, epoch, count, mean and variance of each record, and the
        non-default training options (``SETUP_KEYS``) as columns.

        A λ none of whose seeds survived has no rows (``divergence_summary`` names it); a
        variance needs two seeds and is NaN with one.
        """
        L, R = len(self.lams), len(self.steps)
        frame = pd.DataFrame({"lam": np.repeat(self.lams, R), "step": np.tile(self.steps, L),
                              "epoch": np.tile(self.epochs, L), "count": np.repeat(self.count, R),
                              **{f"{n}_mean": self.means[n].ravel() for n in self.record_names},
                              **{f"{n}_var": self.variances[n].ravel() for n in self.record_names}})
        for key, value in setup_columns(self.config).items():
            frame[key] = value
        return frame[frame["count"] > 0].reset_index(drop=True)
