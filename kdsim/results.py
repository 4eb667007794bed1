"""SimResult: the arrays a simulation produced, indexed (λ, seed, record)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .moments import RunningMoments
from .plan import RECORDS

RECORD_LABELS = {
    "dist2_opt": "‖x_t − x*‖²",
    "subopt": "f(x_t) − f*",
    "dist2_teacher": "‖x_t − θ‖²",
}


def config_hash(config):
    """Stable short hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_record(name):
    """A record name, with a clear error for unknown ones."""
    if name not in RECORDS:
        raise ValueError(f"unknown record {name!r}; valid values: {', '.join(RECORDS)}")
    return name


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


@dataclass
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

    def record(self, name):
        """The (λ, seed, record) array of one recorded quantity."""
        return getattr(self, check_record(name))

    def mean(self, name):
        """Mean over the non-diverged seeds, shape (λ, record); NaN only where every seed diverged."""
        arr = self.record(name)
        alive = ~self.diverged
        count = alive.sum(axis=1)
        total = np.where(alive[:, :, None], arr, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count[:, None]

    def divergence_summary(self):
        """One line per λ with diverged trajectories (empty list when none)."""
        lines = []
        for k, lam in enumerate(self.lams):
            m = self.diverged[k]
            if m.any():
                first = int(self.diverged_step[k][m].min())
                lines.append(f"λ={lam:g}: {int(m.sum())} of {m.size} trajectories diverged "
                             f"(first at step {first}) with step={self.config.get('step')}")
        return lines

    def to_frame(self):
        """Long frame: one row per (λ, seed, record) up to divergence.

        Columns: lam, seed, step, dist2_opt, subopt, dist2_teacher, diverged.
        Records after a trajectory diverged are dropped (no NaN rows).
        """
        L, S, R = self.dist2_opt.shape
        lam = np.repeat(self.lams, S * R)
        seed = np.tile(np.repeat(np.arange(S), R), L)
        step = np.tile(self.steps, L * S)
        div_step = np.repeat(self.diverged_step.ravel(), R)
        keep = (div_step < 0) | (step < div_step)
        frame = pd.DataFrame({
            "lam": lam, "seed": seed, "step": step,
            **{name: self.record(name).ravel() for name in RECORDS},
            "diverged": div_step >= 0,
        })
        return frame[keep].reset_index(drop=True)


@dataclass
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

    def mean(self, name):
        """Mean over non-diverged seeds, (λ, record)."""
        return self.means[check_record(name)]

    def var(self, name):
        """Variance over non-diverged seeds (ddof=1), (λ, record)."""
        return self.variances[check_record(name)]

    def sem(self, name):
        """Standard error of the mean, (λ, record)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.var(name) / self.count[:, None])

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
        """One row per (λ, record): count and mean and variance of each record."""
        L, R = len(self.lams), len(self.steps)
        return pd.DataFrame({"lam": np.repeat(self.lams, R), "step": np.tile(self.steps, L),
                             "count": np.repeat(self.count, R),
                             **{f"{n}_mean": self.means[n].ravel() for n in RECORDS},
                             **{f"{n}_var": self.variances[n].ravel() for n in RECORDS}})
