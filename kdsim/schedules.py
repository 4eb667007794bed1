"""KD-weight schedules over epochs, and the per-epoch coefficient table every engine reads.

A schedule maps the run's KD weight λ (one entry of ``lams``) to λ_e, the weight used in
epoch e (an epoch is ``kdsim.rng.steps_per_epoch`` steps, whatever the sampling scheme):

| kind | λ_e | as in the authors' code |
|---|---|---|
| ``constant`` | λ | default |
| ``decay`` | λ · factor^e (default factor 0.9) | ``--decay_lbda`` |
| ``increase`` | min(λ · factor^e, cap) (default 1.047, cap 1) | ``--increase_lbda``, ``--max_lbda`` |

Schedules are serialisable: ``LambdaSchedule.parse`` accepts ``None``, a schedule, a dict
``{"kind": "decay", "factor": 0.9}`` or a string ``"decay"``, ``"decay:0.8"``,
``"increase:1.047:0.9"`` (kind:factor[:cap]); ``str(schedule)`` gives that string back, so
sweep specs and stored configurations can name them.

``coefficient_table`` turns an estimator, its λ grid, a schedule and the SVRG warm-up into
the (λ, epoch, 2) table of the coefficients (a, c) of g = ∇f_B(x) − a·T_B + c·T
(``kdsim.estimators``). The engines look a trajectory's coefficients up by epoch
(``min(e, E − 1)``): a new schedule or warm-up rule changes this table, not the engines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate as V

SCHEDULE_KINDS = ("constant", "decay", "increase")
_DEFAULT_FACTOR = {"constant": 1.0, "decay": 0.9, "increase": 1.047}


@dataclass(frozen=True)
class LambdaSchedule:
    """A per-epoch KD-weight schedule (module docstring)."""

    kind: str = "constant"
    factor: float = 1.0
    cap: float = 1.0

    def __post_init__(self):
        V.choice("lam_schedule kind", self.kind, SCHEDULE_KINDS)
        f = V.positive_float("lam_schedule factor", self.factor)
        if self.kind == "decay" and not f < 1.0:
            raise ValueError(f"lam_schedule factor of 'decay' must satisfy 0 < factor < 1; got {f}")
        if self.kind == "increase" and not f > 1.0:
            raise ValueError(f"lam_schedule factor of 'increase' must be > 1; got {f}")
        V.finite_float("lam_schedule cap", self.cap)

    @classmethod
    def parse(cls, spec):
        """A schedule from None, a schedule, a dict or a string (module docstring)."""
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"kind", "factor", "cap"}
            if unknown:
                raise ValueError(f"lam_schedule has unknown keys {sorted(unknown)}; valid keys: kind, factor, cap")
            kind = spec.get("kind", "constant")
            return cls(kind, float(spec.get("factor", _DEFAULT_FACTOR.get(kind, 1.0))), float(spec.get("cap", 1.0)))
        if isinstance(spec, str):
            parts = spec.split(":")
            kind = V.choice("lam_schedule", parts[0], SCHEDULE_KINDS)
            if len(parts) > (3 if kind == "increase" else 2 if kind == "decay" else 1):
                raise ValueError(f"lam_schedule {spec!r} has too many fields; use 'constant', 'decay[:factor]' "
                                 "or 'increase[:factor[:cap]]'")
            try:
                nums = [float(p) for p in parts[1:]]
            except ValueError:
                raise ValueError(f"lam_schedule {spec!r}: factor and cap must be numbers") from None
            factor = nums[0] if nums else _DEFAULT_FACTOR[kind]
            return cls(kind, factor, nums[1] if len(nums) > 1 else 1.0)
        raise TypeError(f"lam_schedule must be None, a string such as 'decay:0.9', a dict or a LambdaSchedule; "
                        f"got {spec!r}")

    def __str__(self):
        """The schedule's name, parsed back to the same schedule (floats in their shortest exact form)."""
        if self.kind == "constant":
            return "constant"
        if self.kind == "decay":
            return f"decay:{self.factor!r}"
        return f"increase:{self.factor!r}:{self.cap!r}"

    def values(self, lams, epochs):
        """λ_e for every λ of ``lams`` and e = 0 .. epochs − 1, shape (len(lams), epochs)."""
        lams = np.asarray(lams, dtype=np.float64)
        e = np.arange(epochs, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            out = lams[:, None] * self.factor ** e[None, :]
            out[lams == 0.0] = 0.0                       # λ = 0 stays 0 (not 0·inf once factor^e overflows)
            if self.kind == "increase":
                out = np.minimum(out, self.cap)
        return out

    def scales(self, epochs):
        """factor^e (e < epochs): λ_e / λ while the cap is not reached."""
        with np.errstate(over="ignore"):
            return self.factor ** np.arange(epochs, dtype=np.float64)


def coefficient_table(estimator, lams, schedule, epochs, warmup_epochs=0, correction=True):
    """(len(lams), epochs, 2) coefficients (a, c) of every λ in every epoch.

    ``estimator``: a ``kdsim.estimators.Estimator``; ``schedule``: a ``LambdaSchedule``;
    ``warmup_epochs``: epochs of plain SGD (a = c = 0) before the estimator starts (the
    authors' SVRG warm-up); ``correction=False`` drops the full-gradient term (c = 0), as
    the authors' SVRG does without ``--teacher_full_grad``. Raises ValueError naming
    ``lam_schedule`` when a λ_e is not finite.
    """
    lam_e = schedule.values(lams, epochs)
    if not np.all(np.isfinite(lam_e)):
        bad = int(np.argmax(~np.isfinite(lam_e).all(axis=0)))
        raise ValueError(f"lam_schedule {schedule} makes λ non-finite by epoch {bad} of {epochs}; "
                         "use fewer epochs or a factor closer to 1")
    table = np.zeros((len(lam_e), epochs, 2))
    for k in range(len(lam_e)):
        for e in range(epochs):
            a, c = estimator.coefficients(lam_e[k, e])
            table[k, e] = a, (c if correction else 0.0)
    table[:, :warmup_epochs] = 0.0
    return table
