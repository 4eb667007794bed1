"""CheckResult: the table a theory check returns, one row per compared quantity.

Columns: claim, instance, quantity, empirical, ci_low, ci_high, theoretical, ratio,
relation, tolerance, passed.

* ``relation`` says how empirical and theoretical are compared: "≈" (two-sided,
  |empirical − theoretical| ≤ tolerance), "≤" (the upper confidence limit must not
  exceed the theoretical value: a bound or a threshold), "≥" (the lower
  confidence limit must reach it).
* ``ratio`` is empirical / theoretical; when the theoretical value is 0 (an
  identity), it is empirical / tolerance, the fraction of the tolerance used; when
  both are 0 (a sign comparison such as "difference ≥ 0"), the empirical value itself.
* Deterministic quantities have ci_low = ci_high = empirical.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COLUMNS = ["claim", "instance", "quantity", "empirical", "ci_low", "ci_high",
           "theoretical", "ratio", "relation", "tolerance", "passed"]


def make_row(claim, instance, quantity, empirical, theoretical, relation, tolerance=0.0,
             ci_low=None, ci_high=None):
    """One comparison; ``passed`` follows from the relation (see the module docstring)."""
    emp = float(empirical)
    lo = emp if ci_low is None else float(ci_low)
    hi = emp if ci_high is None else float(ci_high)
    theo, tol = float(theoretical), float(tolerance)
    if relation == "≈":
        passed = abs(emp - theo) <= tol
    elif relation == "≤":
        passed = hi <= theo + tol
    elif relation == "≥":
        passed = lo >= theo - tol
    else:
        raise ValueError(f"unknown relation {relation!r}; valid values: '≈', '≤', '≥'")
    if theo != 0.0:
        ratio = emp / theo
    elif tol > 0.0:
        ratio = emp / tol
    else:
        ratio = emp
    passed = bool(passed and np.isfinite(emp) and np.isfinite(lo) and np.isfinite(hi))
    return {"claim": int(claim), "instance": str(instance), "quantity": str(quantity),
            "empirical": emp, "ci_low": lo, "ci_high": hi, "theoretical": theo, "ratio": float(ratio),
            "relation": relation, "tolerance": tol, "passed": passed}


@dataclass
class CheckResult:
    """Outcome of one theory check: its rows, optional curves for plots, timing."""

    claim: int
    name: str
    statement: str
    rows: list = field(default_factory=list)
    curves: list = field(default_factory=list)   # long frames for the convergence plot (report.plots)
    figures: list = field(default_factory=list)  # further figures: dicts for report.plots.render
    notes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self):
        return bool(self.rows) and all(r["passed"] for r in self.rows)

    def frame(self):
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def table(self):
        """Plain-text table for the terminal."""
        f = self.frame()
        fmt = {c: "{:.3e}".format for c in ("empirical", "ci_low", "ci_high", "theoretical", "ratio", "tolerance")}
        return f.to_string(index=False, formatters=fmt)

    def verdict(self):
        n_fail = sum(not r["passed"] for r in self.rows)
        status = "PASS" if self.passed else "FAIL"
        return f"[{status}] claim {self.claim:2d} {self.name}: {len(self.rows) - n_fail}/{len(self.rows)} rows pass ({self.seconds:.1f} s)"


class Timer:
    """Context manager measuring wall time into a CheckResult."""

    def __init__(self, result):
        self.result = result

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self.result

    def __exit__(self, *exc):
        self.result.seconds = time.perf_counter() - self.t0
        return False
