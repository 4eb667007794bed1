"""Named problem and teacher builders a sweep spec can refer to.

A spec names a problem *family* (``[problem] family = "least_squares"``) and teacher
*kinds* (``[[teachers]] kind = "at_distance"``); every other key of those tables is a
parameter of the builder, validated against the declared ``Param`` list before
any work starts (type, range, unknown names). Builders are plain functions of the
validated parameters, so a worker process rebuilds exactly the same problem from the
cell's configuration.

Add a family with ``register_problem``, a teacher kind with ``register_teacher``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

REQUIRED = object()


class SweepUsageError(ValueError):
    """A sweep was asked for something invalid (bad spec, bad option, missing dependency)."""


class SpecError(SweepUsageError):
    """A sweep spec is invalid; the message names the section, the key and the valid values."""


@dataclass(frozen=True)
class Param:
    """One builder parameter: type ("int", "float", "bool", "str"), default and range."""

    name: str
    kind: str
    default: object = REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False           # lo excluded (x > lo) instead of x >= lo
    hi_open: bool = False           # hi excluded (x < hi) instead of x <= hi
    choices: tuple = ()
    doc: str = ""
    #: added after the first release: left out of a cell's configuration at its default, so the cells
    #: of earlier sweeps keep their hash (the builder's own default applies)
    keyless_default: bool = False

    def describe_range(self):
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return f"{'an integer' if self.kind == 'int' else 'a number'}" + (f" {' and '.join(parts)}" if parts else "")

    def check(self, where, value):
        """The value converted to the parameter's type; SpecError naming ``where`` otherwise."""
        label = f"{where} {self.name}"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"{label} must be true or false; got {value!r} ({type(value).__name__})")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise SpecError(f"{label} must be a string; got {value!r} ({type(value).__name__})")
            if self.choices and value not in self.choices:
                raise SpecError(f"{label}: unknown value {value!r}; valid values: {', '.join(map(repr, self.choices))}")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SpecError(f"{label} must be an integer; got {value!r} ({type(value).__name__})")
            v = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise SpecError(f"{label} must be a number; got {value!r} ({type(value).__name__})")
            v = float(value)
            if v != v or v in (float("inf"), float("-inf")):
                raise SpecError(f"{label} must be finite; got {value!r}")
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise SpecError(f"{label} must be {self.describe_range()}; got {value!r}")
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            raise SpecError(f"{label} must be {self.describe_range()}; got {value!r}")
        return v


@dataclass(frozen=True)
class Builder:
    """A named builder: its parameters, the function and (for problems) cheap size functions."""

    name: str
    params: tuple
    build: object
    doc: str = ""
    n_of: object = None          # params -> number of samples n (problems; no data needed)
    dim_of: object = None        # params -> parameter dimension (problems)
    extra: dict = field(default_factory=dict)
    #: problems: True (or params -> True) when the loss has a softmax to temper (``[grid] temperature``;
    #: ``Problem.supports_temperature``), known without building the problem
    supports_temperature: object = False

    def tempers(self, params):
        """Whether the problem of ``params`` accepts a temperature τ ≠ 1."""
        flag = self.supports_temperature
        return bool(flag(params) if callable(flag) else flag)

    @property
    def param_names(self):
        return tuple(p.name for p in self.params)

    def defaults(self):
        return {p.name: p.default for p in self.params if p.default is not REQUIRED}


PROBLEMS: dict = {}
TEACHERS: dict = {}


def register_problem(builder):
    """Add (or replace) a problem family."""
    PROBLEMS[builder.name] = builder
    return builder


def register_teacher(builder):
    """Add (or replace) a teacher kind."""
    TEACHERS[builder.name] = builder
    return builder


# ------------------------------------------------------------------ problems
def _least_squares(n, d, cond, noise, seed, l2):
    from ..problems import synthetic
    return synthetic.least_squares(n=n, d=d, cond=cond, noise=noise, seed=seed, l2=l2)


def _softmax(n, d, n_classes, l2, bias, separation, seed, l2_bias=True):
    from ..problems import synthetic
    return synthetic.softmax(n=n, d=d, n_classes=n_classes, l2=l2, bias=bias, separation=separation, seed=seed,
                             l2_bias=l2_bias)


def _logistic(n, d, l2, seed):
    from ..problems import synthetic
    return synthetic.logistic(n=n, d=d, l2=l2, seed=seed)


def _poisson(n, d, l2, seed):
    from ..problems import synthetic
    return synthetic.poisson(n=n, d=d, l2=l2, seed=seed)


def _diabetes(standardize, bias, standardize_target, l2, l2_bias=True):
    from ..datasets import load_diabetes
    from ..problems import LeastSquares
    data = load_diabetes(standardize=standardize, bias=bias, standardize_target=standardize_target)
    return LeastSquares(data.A, data.y, l2=l2, l2_bias=l2_bias)


def _digits(standardize, bias, l2, l2_bias=True):
    from ..datasets import load_digits
    from ..problems import SoftmaxRegression
    data = load_digits(standardize=standardize, bias=bias)
    return SoftmaxRegression(data.A, data.y, data.n_classes, bias=False, l2=l2, l2_bias=l2_bias)


_SEED = Param("seed", "int", 0, lo=0, doc="data seed")
_L2_BIAS = Param("l2_bias", "bool", True, doc="false: the ridge leaves the bias out", keyless_default=True)
_L2 = Param("l2", "float", 0.0, lo=0, doc="ridge α")

register_problem(Builder(
    "least_squares",
    (Param("n", "int", 200, lo=1), Param("d", "int", 10, lo=1), Param("cond", "float", 10.0, lo=1),
     Param("noise", "float", 0.5, lo=0), _SEED, _L2),
    _least_squares, "synthetic least squares, H's spectrum log-uniform on [1/cond, 1] (kdsim.problems.synthetic)",
    n_of=lambda p: p["n"], dim_of=lambda p: p["d"]))
register_problem(Builder(
    "softmax",
    (Param("n", "int", 200, lo=1), Param("d", "int", 5, lo=1), Param("n_classes", "int", 3, lo=2),
     Param("l2", "float", 0.1, lo=0), Param("bias", "bool", True), Param("separation", "float", 1.0, lo=0), _SEED,
     _L2_BIAS),
    _softmax, "synthetic softmax regression on Gaussian clusters",
    n_of=lambda p: p["n"], dim_of=lambda p: p["n_classes"] * (p["d"] + (1 if p["bias"] else 0)),
    supports_temperature=True))
register_problem(Builder(
    "logistic", (Param("n", "int", 200, lo=1), Param("d", "int", 5, lo=1), _L2, _SEED),
    _logistic, "synthetic logistic regression", n_of=lambda p: p["n"], dim_of=lambda p: p["d"]))
register_problem(Builder(
    "poisson", (Param("n", "int", 200, lo=1), Param("d", "int", 5, lo=1), _L2, _SEED),
    _poisson, "synthetic Poisson regression", n_of=lambda p: p["n"], dim_of=lambda p: p["d"]))
register_problem(Builder(
    "diabetes",
    (Param("standardize", "bool", True), Param("bias", "bool", True), Param("standardize_target", "bool", True), _L2,
     _L2_BIAS),
    _diabetes, "least squares on the diabetes data (442 × 10, kdsim.datasets)",
    n_of=lambda p: 442, dim_of=lambda p: 10 + (1 if p["bias"] else 0)))
register_problem(Builder(
    "digits",
    (Param("standardize", "bool", True), Param("bias", "bool", True), Param("l2", "float", 1e-2, lo=0), _L2_BIAS),
    _digits, "softmax regression on the 8×8 digits (1797 × 64, 10 classes; THEORY §8 claim 11)",
    n_of=lambda p: 1797, dim_of=lambda p: 10 * (64 + (1 if p["bias"] else 0)), supports_temperature=True))


# ------------------------------------------------------------------ teachers
def _optimum(problem):
    from .. import teachers
    return teachers.optimum(problem)


def _at_distance(problem, r, seed):
    from .. import teachers
    return teachers.at_distance(problem, r, seed=seed)


def _early_stopped(problem, steps, step_fraction, batch_size, seed):
    from .. import teachers, theory
    if batch_size > problem.n:
        raise SpecError(f"[[teachers]] early_stopped batch_size must be <= n = {problem.n}; got {batch_size}")
    c = theory.constants(problem, problem.solution(), batch_size)
    return teachers.early_stopped(problem, steps, step_fraction / c.expected_smoothness,
                                  batch_size=batch_size, seed=seed)


def _quantized(problem, bits):
    from .. import teachers
    return teachers.quantized(problem, problem.solution(), bits)


def _top_k(problem, k):
    from .. import teachers
    return teachers.top_k(problem, problem.solution(), min(k, problem.dim))


register_teacher(Builder("optimum", (), _optimum, "θ = x*"))
register_teacher(Builder("at_distance", (Param("r", "float", REQUIRED, lo=0), Param("seed", "int", 0, lo=0)),
                         _at_distance, "θ at distance r from x* in a seeded random direction"))
register_teacher(Builder("early_stopped",
                         (Param("steps", "int", 100, lo=1), Param("step_fraction", "float", 0.5, lo=0, lo_open=True),
                          Param("batch_size", "int", 1, lo=1), Param("seed", "int", 0, lo=0)),
                         _early_stopped, "the SGD iterate after `steps` steps of size step_fraction/𝓛(b) from x0"))
register_teacher(Builder("quantized", (Param("bits", "int", 8, lo=1, hi=32),),
                         _quantized, "x* quantised uniformly to 2**bits levels"))
register_teacher(Builder("top_k", (Param("k", "int", REQUIRED, lo=0),),
                         _top_k, "x* with all but its k largest-magnitude entries zeroed"))


# --------------------------------------------------- per-process build cache
_CACHE: dict = {}
_CACHE_MAX = 16


def _cache_key(kind, name, params):
    return (kind, name, tuple(sorted(params.items())))


def build_problem(family, params):
    """The problem of a validated family and parameters (cached per process: solution() is reused)."""
    key = _cache_key("problem", family, params)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = PROBLEMS[family].build(**params)
    return _CACHE[key]


def build_teacher(problem, problem_key, kind, params):
    """The Teacher of a validated kind and parameters on ``problem`` (cached with the problem's key)."""
    key = _cache_key("teacher", kind, params) + (problem_key,)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = TEACHERS[kind].build(problem, **params)
    return _CACHE[key]
