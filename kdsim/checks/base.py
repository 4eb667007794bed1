"""CheckResult: the table a theory check returns, one row per compared quantity.

Columns: claim, instance, quantity, empirical, ci_low, ci_high, theoretical, ratio,
relation, tolerance, passed.

* ``relation`` says how empirical and theoretical are compared: "≈" (two-sided,
  |empirical − theoretical| ≤ tolerance), "≤" (the upper confidence limit must not
  exceed the theoretical value: a bound or a threshold), "≥" (the lower
  confidence limit must reach it).
* ``ratio`` is empirical / theoretical; when the theoretical value is 0 (an
  identity), it is empirical / tolerance, the fraction of the tolerance used; when
  both are 0 (a sign comparison such as "difference ≥ 0") no ratio means anything and
  it is blank (NaN).
* Deterministic quantities have ci_low = ci_high = empirical.

Simulate, then judge. A check runs its simulations through ``simulate`` (``kdsim.simulate``)
and judges their records against theory. Inside ``with reuse_simulations(runs):`` every
simulation is served from ``runs`` when the same call was made before (a simulation is a
deterministic function of its arguments, and the key covers all of them), so running a check
again — for instance with a perturbed theory — re-judges the earlier simulations instead of
repeating them. Outside such a block nothing is cached.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..simulate import simulate as _simulate

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
        ratio = math.nan
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
        fmt = {c: "{:.3e}".format for c in ("empirical", "ci_low", "ci_high", "theoretical", "tolerance")}
        fmt["ratio"] = lambda v: "" if math.isnan(v) else f"{v:.3e}"
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


def check_seeds(seeds, minimum, reason):
    """``seeds`` of a check: None (its default) or an integer >= ``minimum`` (``reason`` says why)."""
    if seeds is not None and (isinstance(seeds, (bool, np.bool_)) or not isinstance(seeds, (int, np.integer))
                              or seeds < minimum):
        raise ValueError(f"seeds must be an integer >= {minimum} for this check ({reason}); got {seeds!r}")
    return seeds


# --------------------------------------------------------------- simulate, then judge
_RUNS = contextvars.ContextVar("kdsim_checks_runs", default=None)     # (store, strict) or None
_SCALARS = (type(None), bool, int, float, complex, str, np.generic)


def _key_part(value):
    """A hashable, exact description of one argument of ``simulate``; None when there is none."""
    from ..problems.base import Problem

    if isinstance(value, Problem):
        return ("problem", type(value).__module__, type(value).__qualname__, value.fingerprint())
    if isinstance(value, _SCALARS):
        return (type(value).__name__, repr(value))
    try:
        a = np.ascontiguousarray(value)
    except Exception:                                   # noqa: BLE001 - not an array: no key
        return None
    if a.dtype == object:
        return None
    h = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
    return ("array", h.hexdigest())


def simulation_key(*args, **kwargs):
    """Key of a ``simulate`` call: every argument (defaults filled in), arrays by content, problems by
    ``fingerprint()``; None when an argument has no exact description (such a call is never reused)."""
    bound = inspect.signature(_simulate).bind(*args, **kwargs)
    bound.apply_defaults()
    parts = []
    for name, value in bound.arguments.items():
        part = _key_part(value)
        if part is None:
            return None
        parts.append((name, part))
    return tuple(parts)


def _freeze(result):
    """Make the arrays of a stored result read-only: it is shared by every check that reuses it."""
    for value in getattr(result, "__dict__", {}).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return result


#: callback(event, result) around each simulation of a check ("start" with None, "done" with the result);
#: progress reporting only (``kdsim check``), see ``report_simulations``
_OBSERVER = contextvars.ContextVar("kdsim_checks_observer", default=None)


@functools.wraps(_simulate)
def simulate(*args, **kwargs):
    observe = _OBSERVER.get()
    if observe is None:
        return _simulate_or_reuse(*args, **kwargs)
    observe("start", None)
    result = _simulate_or_reuse(*args, **kwargs)
    observe("done", result)
    return result


def _simulate_or_reuse(*args, **kwargs):
    active = _RUNS.get()
    if active is None:
        return _simulate(*args, **kwargs)
    store, strict = active
    key = simulation_key(*args, **kwargs)
    if key is not None and key in store:
        return store[key]
    if strict:
        raise LookupError("reuse_simulations(strict=True): this check asked for a simulation that is not "
                          "among the stored ones (its simulation depends on what changed)")
    result = _simulate(*args, **kwargs)
    if key is not None:
        store[key] = _freeze(result)
    return result


simulate.__doc__ = ("``kdsim.simulate``, through which the checks simulate; inside ``reuse_simulations`` an "
                    "identical earlier call returns the stored result.\n\n" + (_simulate.__doc__ or ""))


@contextlib.contextmanager
def reuse_simulations(runs=None, strict=False):
    """Serve the checks' simulations from ``runs`` (a mapping key -> result) within the block.

    A call made before (same arguments, see ``simulation_key``) returns the stored result, whose
    arrays are read-only; a new call runs and is added to ``runs`` — or, with ``strict=True``,
    raises LookupError (to re-judge stored simulations only). Yields ``runs`` (a new dict when
    None). A mapping such as ``collections.ChainMap({}, runs)`` reads ``runs`` and keeps new
    runs apart.
    """
    runs = {} if runs is None else runs
    token = _RUNS.set((runs, bool(strict)))
    try:
        yield runs
    finally:
        _RUNS.reset(token)


@contextlib.contextmanager
def report_simulations(callback):
    """Within the block, call ``callback("start", None)`` before and ``callback("done", result)``
    after each simulation a check runs (reused ones included). It only observes: the
    simulations and their results are the same as without it."""
    token = _OBSERVER.set(callback)
    try:
        yield
    finally:
        _OBSERVER.reset(token)
