"""Sweep specs: TOML → validated ``Sweep`` → Cartesian product of ``Cell``.

A spec has four parts (every key is listed in ``SPEC_KEYS``; an unknown key is an
error that names it and lists the valid ones)::

    [sweep]                       # run-wide settings (all optional)
    name = "ls-grid"              # default: the file's stem, else "sweep"
    master_seed = 0               # seed of the counter-based index generator
    backend = "auto"              # kdsim.engines.BACKENDS
    cell_seeds = "common"         # "common": every cell uses master_seed (paired cells);
                                  # "independent": a seed derived from the cell and master_seed
    level = 0.99                  # confidence level of every interval
    tail_fraction = 0.5           # plateau = average over the last half of the records
    rate_boot = 200               # bootstrap resamples of the rate fit
    out = "kdsim-sweeps/ls-grid"  # results folder (default kdsim-sweeps/<name>)

    [problem]                     # or [[problems]], several tables
    family = "least_squares"      # registry.PROBLEMS
    n = 200
    d = 5
    cond = [4.0, 16.0]            # a list is a grid axis

    [[teachers]]                  # default: one optimum teacher
    kind = "at_distance"          # registry.TEACHERS
    r = [0.1, 1.0]

    [grid]
    lams = [0.0, 0.5, 1.0]        # λ values inside each cell (or {start, stop, num})
    step_fraction = [0.25, 0.5]   # γ = fraction / 𝓛(b); or step = [...] for absolute γ
    batch_size = [1, 10]
    estimator = "kd"
    seeds = 64
    steps = 2000
    record_every = 20             # default max(1, steps // 100)
    sampling = ["iid", "reshuffle"]   # training setups (``TRAINING``; docs/training.md), all optional:
    momentum = [0.0, 0.9]             # sampling, drop_last, momentum, lam_schedule, temperature,
    lam_schedule = "decay:0.9"        # teacher_l2, svrg_period, svrg_warmup, svrg_correction

Every value in [problem], [[teachers]] and [grid] (except ``lams``) may be a scalar
or a list; lists are axes of the Cartesian product. λ is not an axis: the whole λ
grid of a cell runs in one ``simulate`` call with common random numbers.
Validation happens in ``load_spec``, before any work: bad specs raise
``SpecError`` (a ValueError) naming the section and key.

Training-setup options (``TRAINING``) enter a cell's configuration, and so its hash, only
where they differ from ``simulate``'s defaults (as ``kdsim.simulate.training_config``
does), and the normalised spec names them only when the spec gives them: a spec that uses
none of them has the cells, hashes and stores it always had. An option that does not apply
to a cell's estimator or problem (``training_issue``: svrg_* to estimators other than svrg,
teacher_l2 to sgd and svrg, temperature to estimators other than kd and kd_loss or to
problems without a softmax loss) is a ``SpecError`` when no cell could use it, or when it is
a list (an axis): the cells it does not apply to would repeat. A single value applies to
the cells it fits; the others run without it (their configuration does not name it).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..results import config_hash
from ..rng import SAMPLINGS
from ..schedules import LambdaSchedule
from .registry import PROBLEMS, REQUIRED, TEACHERS, Param, SpecError

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml
    except ModuleNotFoundError:
        _toml = None

#: version of the stored row layout; part files of another layout are recomputed
STORE_SCHEMA = 1

SPEC_KEYS = {
    "": ("sweep", "problem", "problems", "teachers", "grid"),
    "sweep": ("name", "description", "master_seed", "backend", "cell_seeds", "level", "tail_fraction",
              "rate_boot", "out"),
    "grid": ("lams", "step", "step_fraction", "batch_size", "estimator", "seeds", "steps", "record_every",
             "sampling", "drop_last", "momentum", "lam_schedule", "temperature", "teacher_l2", "svrg_period",
             "svrg_warmup", "svrg_correction"),
}

_SWEEP_PARAMS = {
    "name": Param("name", "str", None),
    "description": Param("description", "str", ""),
    "master_seed": Param("master_seed", "int", 0, lo=0, hi=2**63 - 1),
    "backend": Param("backend", "str", "auto"),
    "cell_seeds": Param("cell_seeds", "str", "common", choices=("common", "independent")),
    "level": Param("level", "float", 0.99, lo=0, lo_open=True, hi=0.999999),
    "tail_fraction": Param("tail_fraction", "float", 0.5, lo=0, lo_open=True, hi=1.0),
    "rate_boot": Param("rate_boot", "int", 200, lo=10),
    "out": Param("out", "str", None),
}

_GRID_PARAMS = {
    "step": Param("step", "float", None, lo=0, lo_open=True),
    "step_fraction": Param("step_fraction", "float", None, lo=0, lo_open=True),
    "batch_size": Param("batch_size", "int", 1, lo=1),
    "estimator": Param("estimator", "str", "kd"),
    "seeds": Param("seeds", "int", 32, lo=1),
    "steps": Param("steps", "int", REQUIRED, lo=1),
    "record_every": Param("record_every", "int", None, lo=1),
}

#: the training-setup options of ``kdsim.simulate`` a [grid] may set (docs/training.md), with
#: simulate's defaults: a cell's configuration names an option only when it differs from its
#: default. ``lam_schedule`` is checked by ``kdsim.schedules.LambdaSchedule.parse`` and kept as
#: its canonical string; ``sampling``'s values are ``kdsim.rng.SAMPLINGS``.
TRAINING = {
    "sampling": Param("sampling", "str", "iid", choices=SAMPLINGS),
    "drop_last": Param("drop_last", "bool", False),
    "momentum": Param("momentum", "float", 0.0, lo=0, hi=1, hi_open=True),
    "lam_schedule": Param("lam_schedule", "str", "constant"),
    "temperature": Param("temperature", "float", 1.0, lo=0, lo_open=True),
    "teacher_l2": Param("teacher_l2", "float", None, lo=0),
    "svrg_period": Param("svrg_period", "int", None, lo=1),
    "svrg_warmup": Param("svrg_warmup", "int", 0, lo=0),
    "svrg_correction": Param("svrg_correction", "bool", True),
}
#: the options that only the SVRG estimator reads
SVRG_ONLY = ("svrg_period", "svrg_warmup", "svrg_correction")


def _backends():
    from ..engines import BACKENDS
    return tuple(BACKENDS)


def _estimators():
    from ..estimators import ESTIMATORS
    return tuple(ESTIMATORS)


def training_issue(key, value, estimator, family, params):
    """Why the training option ``key = value`` does not apply to a cell of ``estimator`` on problem
    ``family`` with ``params`` ("" when it does; a default value always does). The rules are
    those of ``kdsim.plan.make_plan``, read from the estimator's data and the problem builder."""
    if value == TRAINING[key].default:
        return ""
    from ..estimators import get_estimator
    est = get_estimator(estimator)
    if key in SVRG_ONLY and not est.snapshot:
        return f"{key} applies to estimator 'svrg' only"
    if key == "teacher_l2" and not est.uses_teacher:
        return "teacher_l2 applies to the teacher estimators 'kd', 'kd_loss' and 'corrected'"
    if key == "temperature":
        if est.name not in ("kd", "kd_loss"):
            return "temperature applies to the literal KD loss, estimators 'kd' and 'kd_loss'"
        if not PROBLEMS[family].tempers(params):
            return f"temperature applies to softmax losses; problem family {family!r} has none"
    return ""


def training_options(config):
    """Every training option of a cell configuration, defaults filled in (``TRAINING``)."""
    return {key: config.get(key, p.default) for key, p in TRAINING.items()}


def steps_per_epoch(config):
    """K of a cell: ⌈n/b⌉ steps per epoch (⌊n/b⌋ with drop_last), as ``kdsim.simulate`` counts them."""
    p = config["problem"]
    n, b = PROBLEMS[p["family"]].n_of(p["params"]), config["batch_size"]
    return n // b if config.get("drop_last", False) else -(-n // b)


def training_columns(config, setting_note=""):
    """The training-setup columns of a cell's rows: every option of ``spec.TRAINING`` (defaults filled
    in), ``steps_per_epoch`` and ``setting_note`` (``task``; ``store.load`` fills them so into parts
    written before they existed, whose cells use the defaults)."""
    cols = training_options(config)
    if cols["teacher_l2"] is None:
        cols["teacher_l2"] = np.nan
    cols["teacher_l2"] = float(cols["teacher_l2"])
    cols["momentum"], cols["temperature"] = float(cols["momentum"]), float(cols["temperature"])
    cols["svrg_warmup"] = int(cols["svrg_warmup"])
    cols["steps_per_epoch"] = int(steps_per_epoch(config))
    cols["setting_note"] = setting_note
    return cols


# --------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One task of a sweep: a full simulate() configuration plus its summary settings."""

    index: int
    config: dict = field(repr=False)        # JSON-serialisable, includes kdsim_version (hashed)
    hash: str = ""
    label: str = ""

    @property
    def n_lams(self):
        return len(self.config["lams"])

    @property
    def n_records(self):
        steps, every = self.config["steps"], self.config["record_every"]
        return len(range(0, steps + 1, every)) + (0 if steps % every == 0 else 1)

    @property
    def n_rows(self):
        """Rows of the cell's part when no trajectory diverges (λ × records)."""
        return self.n_lams * self.n_records

    @property
    def trajectory_steps(self):
        c = self.config
        return len(c["lams"]) * c["seeds"] * c["steps"]

    def gamma_text(self):
        c = self.config
        return f"{c['gamma']:.4g}" if c["gamma"] is not None else f"{c['gamma_fraction']:g}/𝓛(b)"


def make_cell(index, config, label=""):
    return Cell(index=index, config=config, hash=config_hash(config), label=label)


def plain_name(name):
    """True when ``name`` can be a folder name of its own (no separators, not "." or "..")."""
    return (isinstance(name, str) and name not in ("", ".", "..") and name.isprintable()
            and not any(ch in name for ch in "/\\\0"))


@dataclass
class Sweep:
    """A validated sweep: normalised spec (JSON-serialisable), cells and axes.

    ``cells`` is a sequence (``Cells`` for a spec: built on demand from the axes, so a
    grid of millions of cells costs no memory until its cells are asked for)."""

    name: str
    spec: dict                      # normalised spec, defaults filled in
    cells: Sequence
    axes: dict                      # axis name -> number of values (> 1 only)
    source: str = ""                # the TOML text when read from TOML
    path: str | None = None         # the spec file, when read from one

    @property
    def out(self):
        """Default results folder (``[sweep] out`` or kdsim-sweeps/<name>)."""
        if self.spec["sweep"]["out"]:
            return Path(self.spec["sweep"]["out"])
        if not plain_name(self.name):
            raise SpecError(f"[sweep] name {self.name!r} is not a plain folder name, so it cannot name the results "
                            "folder kdsim-sweeps/<name>; rename the sweep, or give --out (or [sweep] out)")
        return Path("kdsim-sweeps") / self.name

    @property
    def hash(self):
        """Identity of the cells: the normalised spec with the kdsim version and store schema that expand it."""
        cells = self.cells
        version = getattr(cells, "version", __version__)
        schema = getattr(cells, "schema", STORE_SCHEMA)
        return config_hash({"spec": self.spec, "kdsim_version": version, "store_schema": schema})

    def describe_axes(self):
        if not self.axes:
            return "a single cell"
        return " × ".join(f"{k} {v}" for k, v in self.axes.items())


# ------------------------------------------------------- cells on demand
def _position(index, length):
    index = operator.index(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"cell index {index} out of range for {length} cells")
    return index


class _Product(Sequence):
    """The Cartesian product of lists, indexed without being stored (the last list varies
    fastest, as in itertools.product)."""

    def __init__(self, lists):
        self.lists = list(lists)            # sequences (lists, or _Builders), indexed, never copied
        self._len = math.prod(len(v) for v in self.lists)

    def __len__(self):
        return self._len

    def __getitem__(self, index):
        index = _position(index, self._len)
        out = []
        for values in reversed(self.lists):
            index, k = divmod(index, len(values))
            out.append(values[k])
        return tuple(reversed(out))


class _Builders(Sequence):
    """The (name, params) of every problem (or teacher) of a spec: each table's product, in order."""

    def __init__(self, tables, key):
        self.tables = [(t[key], list(t["params"]), _Product(list(t["params"].values()))) for t in tables]
        self._len = sum(len(prod) for _, _, prod in self.tables)

    def __len__(self):
        return self._len

    def __getitem__(self, index):
        index = _position(index, self._len)
        for name, keys, prod in self.tables:
            if index < len(prod):
                return name, dict(zip(keys, prod[index]))
            index -= len(prod)
        raise AssertionError("unreachable")

    def varying(self):
        """Parameter names whose value differs between entries (they go into the cell labels)."""
        keys = {k for _, names, _ in self.tables for k in names}
        seen = {k: set() for k in keys}
        for _, names, prod in self.tables:
            values = dict(zip(names, prod.lists))
            for k in keys:
                seen[k].update(map(repr, values.get(k, [None])))
        return {k for k, v in seen.items() if len(v) > 1}


class Cells(Sequence):
    """The cells of a normalised spec, built on demand from its axes by index.

    Cell ``i`` is the ``i``-th element of the Cartesian product of the axes (problem,
    teacher, step, batch size, estimator, seeds, steps, record_every, then the training
    options of ``TRAINING``; the last varies fastest). Only the axes' values are held, so
    ``len`` is a product and a cell costs nothing until it is asked for. ``version`` and
    ``schema`` go into every configuration (and so into every hash): a store re-expands its
    cells with the ones it was written with.
    """

    def __init__(self, norm, version=__version__, schema=STORE_SCHEMA):
        self.version, self.schema = version, schema
        self.sweep, grid = norm["sweep"], norm["grid"]
        self.lams = list(grid["lams"])
        self.problems = _Builders(norm["problems"], "family")
        self.teachers = _Builders(norm["teachers"], "kind")
        self.step_key = "step" if grid["step"] != [None] else "step_fraction"
        self.axes_values = {
            "problem": self.problems, "teacher": self.teachers, self.step_key: grid[self.step_key],
            "batch_size": grid["batch_size"], "estimator": grid["estimator"], "seeds": grid["seeds"],
            "steps": grid["steps"], "record_every": grid["record_every"],
        }
        # training options last (a spec without them keeps its cell order); absent in older specs
        self.axes_values.update({k: grid.get(k, [p.default]) for k, p in TRAINING.items()})
        self.axes = {k: len(v) for k, v in self.axes_values.items() if len(v) > 1}
        self._product = _Product(self.axes_values.values())
        self._label_problem = len(norm["problems"]) > 1
        self._varying_problem = self.problems.varying()
        self._varying_teacher = self.teachers.varying()

    def __len__(self):
        return len(self._product)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.cell(i) for i in range(len(self))[index]]
        return self.cell(_position(index, len(self)))

    def __iter__(self):
        for index in range(len(self)):
            yield self.cell(index)

    def cell(self, index, full=True):
        """Cell ``index``; ``full=False`` leaves its hash and label empty (for cost sums, which need
        neither and would spend most of their time on them)."""
        prob, teach, gamma, b, est, seeds, steps, every, *training = self._product[index]
        if every is None:
            every = max(1, steps // 100)
        sweep, step_key = self.sweep, self.step_key
        config = {
            "kdsim_version": self.version, "store_schema": self.schema,
            "problem": {"family": prob[0], "params": _keyed(PROBLEMS[prob[0]], prob[1])},
            "teacher": {"kind": teach[0], "params": dict(teach[1])},
            "lams": list(self.lams),
            "gamma": gamma if step_key == "step" else None,
            "gamma_fraction": gamma if step_key == "step_fraction" else None,
            "batch_size": b, "estimator": est, "seeds": seeds, "steps": steps, "record_every": every,
            "backend": sweep["backend"],
            "summaries": {"level": sweep["level"], "tail_fraction": sweep["tail_fraction"],
                          "rate_boot": sweep["rate_boot"]},
        }
        for key, value in zip(TRAINING, training):
            # defaults stay out (the cell keeps its hash); so does a single value that does not apply here
            if value != TRAINING[key].default and not training_issue(key, value, est, prob[0], prob[1]):
                config[key] = value
        config["seed"] = (sweep["master_seed"] if sweep["cell_seeds"] == "common"
                          else _derived_seed(config, sweep["master_seed"]))
        if not full:
            return Cell(index=index, config=config)
        return Cell(index=index, config=config, hash=config_hash(config),
                    label=self._label(prob, teach, gamma, b, est, seeds, steps, every, config))

    def _label(self, prob, teach, gamma, b, est, seeds, steps, every, config):
        parts = []
        if self._label_problem or self._varying_problem:
            inner = _short(prob[1], self._varying_problem)
            parts.append(f"{prob[0]}({inner})" if inner else prob[0])
        if len(self.teachers) > 1:
            inner = _short(teach[1], self._varying_teacher)
            parts.append(f"{teach[0]}({inner})" if inner else teach[0])
        gtxt = f"γ={gamma:.4g}" if self.step_key == "step" else f"γ={gamma:g}/𝓛"
        for name, text in ((self.step_key, gtxt), ("batch_size", f"b={b}"), ("estimator", est),
                           ("seeds", f"seeds={seeds}"), ("steps", f"T={steps}"), ("record_every", f"every={every}")):
            if name in self.axes:
                parts.append(text)
        for key in TRAINING:
            if key in self.axes:
                parts.append(_training_text(key, config.get(key, TRAINING[key].default)))
        return " · ".join(parts) or "single cell"

    def representatives(self, axes):
        """(cell, weight) for each combination of the named axes' values, every other axis at its
        first value, ``weight`` the number of cells sharing the combination. A sum over cells of a
        quantity that reads only those axes is the weighted sum over these; one cell is held at a time."""
        names = list(self.axes_values)
        sizes = [len(v) for v in self.axes_values.values()]
        chosen = [k for k, name in enumerate(names) if name in axes]
        strides = [math.prod(sizes[k + 1:]) for k in range(len(sizes))]
        weight = len(self) // math.prod(sizes[k] for k in chosen)
        for combo in itertools.product(*(range(sizes[k]) for k in chosen)):
            yield self.cell(sum(pos * strides[k] for k, pos in zip(chosen, combo)), full=False), weight


# ------------------------------------------------------------------- loading
def read_source(spec):
    """(dict, source text, path) from a path, a TOML string or a dict."""
    if isinstance(spec, dict):
        return copy.deepcopy(spec), "", None
    looks_like_path = isinstance(spec, str) and "\n" not in spec and (Path(spec).is_file() or "=" not in spec)
    if isinstance(spec, os.PathLike) or looks_like_path:
        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} not found (pass a path to a TOML file, a TOML string or a dict)")
        text = path.read_text(encoding="utf-8")
        return _parse_toml(text, str(path)), text, str(path)
    if isinstance(spec, str):
        return _parse_toml(spec, "<string>"), spec, None
    raise SpecError(f"spec must be a path, a TOML string or a dict; got {type(spec).__name__}")


def _parse_toml(text, where):
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise SpecError("reading TOML on Python 3.10 needs tomli: pip install tomli")
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise SpecError(f"{where} is not valid TOML: {exc}") from None


def load_spec(spec):
    """Parse and validate a spec (path, TOML string, dict or Sweep) into a ``Sweep``.

    Raises ``SpecError`` before any work for an unknown key (named, with the
    valid keys), an empty grid axis, a non-positive step / steps / seeds / batch size,
    a value of the wrong type, an unknown problem family, teacher kind, estimator or
    backend, a batch size above n, or record_every above steps.
    """
    if isinstance(spec, Sweep):
        return spec
    raw, source, path = read_source(spec)
    if not isinstance(raw, dict):
        raise SpecError(f"a spec must be a table of sections; got {type(raw).__name__}")
    _unknown("spec (top level)", raw, SPEC_KEYS[""])
    if "problem" in raw and "problems" in raw:
        raise SpecError("spec: give either [problem] or [[problems]], not both")
    if "grid" not in raw:
        raise SpecError("spec: missing section [grid] (needs lams, steps and step or step_fraction)")

    sweep = _sweep_section(raw.get("sweep", {}), path)
    problems = _problems_section(raw)
    teachers = _teachers_section(raw.get("teachers", [{"kind": "optimum"}]))
    grid = _grid_section(raw["grid"])
    _cross_checks(problems, grid)

    norm = {"sweep": sweep, "problems": problems, "teachers": teachers, "grid": grid}
    cells = Cells(norm)
    return Sweep(name=sweep["name"], spec=norm, cells=cells, axes=cells.axes, source=source, path=path)


def _unknown(where, table, valid):
    if not isinstance(table, dict):
        raise SpecError(f"{where} must be a table; got {table!r}")
    for key in table:
        if key not in valid:
            raise SpecError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")


def _as_axis(where, value):
    """A list of values (a scalar is an axis of length one); empty lists are errors."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{where}: empty list (a grid axis needs at least one value)")
    if any(isinstance(v, (list, dict)) for v in values):
        raise SpecError(f"{where}: a grid axis is a list of scalars; got {value!r}")
    return values


def _axis(where, param, value):
    values = [param.check(where, v) for v in _as_axis(f"{where} {param.name}", value)]
    if len(set(map(repr, values))) != len(values):
        raise SpecError(f"{where} {param.name}: repeated values in {value!r}")
    return values


def _sweep_section(table, path):
    _unknown("[sweep]", table, SPEC_KEYS["sweep"])
    out = {}
    for key, param in _SWEEP_PARAMS.items():
        out[key] = param.check("[sweep]", table[key]) if key in table else param.default
    if out["name"] is None:
        out["name"] = Path(path).stem if path else "sweep"
    if not out["name"] or any(ch in out["name"] for ch in "/\\\0"):
        raise SpecError(f"[sweep] name must be a non-empty name without slashes; got {out['name']!r}")
    if out["backend"] not in _backends():
        raise SpecError(f"[sweep] backend: unknown value {out['backend']!r}; valid values: "
                        f"{', '.join(map(repr, _backends()))}")
    return out


def _builder_section(where, table, registry, key):
    _unknown_builder = f"{where}: missing {key!r}; valid values: {', '.join(map(repr, registry))}"
    if not isinstance(table, dict):
        raise SpecError(f"{where} must be a table; got {table!r}")
    if key not in table:
        raise SpecError(_unknown_builder)
    name = table[key]
    if not isinstance(name, str) or name not in registry:
        raise SpecError(f"{where} {key}: unknown value {name!r}; valid values: {', '.join(map(repr, registry))}")
    builder = registry[name]
    valid = (key,) + builder.param_names
    _unknown(f"{where} ({key} = {name!r})", table, valid)
    params = {}
    for p in builder.params:
        if p.name in table:
            values = _axis(where, p, table[p.name])
            if not (p.keyless_default and values == [p.default]):
                params[p.name] = values
        elif p.default is REQUIRED:
            raise SpecError(f"{where} ({key} = {name!r}): missing required key {p.name!r} ({p.describe_range()})")
        elif not p.keyless_default:
            params[p.name] = [p.default]
    return {key: name, "params": params}


def _keyed(builder, params):
    """A cell's parameters without those added after the first release that are at their default
    (``Param.keyless_default``: the cell keeps the hash it had before they existed)."""
    quiet = {p.name: p.default for p in builder.params if p.keyless_default}
    return {k: v for k, v in dict(params).items() if not (k in quiet and v == quiet[k])}


def problem_params(config):
    """A cell's problem parameters, those left out at their default (``Param.keyless_default``) filled in."""
    p = config["problem"]
    given = p["params"]
    return {q.name: given.get(q.name, q.default) for q in PROBLEMS[p["family"]].params
            if q.name in given or q.keyless_default}


def _problems_section(raw):
    if "problems" in raw:
        tables = raw["problems"]
        if not isinstance(tables, list) or not tables:
            raise SpecError("[[problems]]: empty list (a grid axis needs at least one value)")
        return [_builder_section(f"[[problems]] #{k + 1}", t, PROBLEMS, "family") for k, t in enumerate(tables)]
    if "problem" not in raw:
        raise SpecError("spec: missing section [problem] (with family = one of "
                        f"{', '.join(map(repr, PROBLEMS))})")
    return [_builder_section("[problem]", raw["problem"], PROBLEMS, "family")]


def _teachers_section(tables):
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list) or not tables:
        raise SpecError("[[teachers]]: empty list (a grid axis needs at least one value)")
    return [_builder_section(f"[[teachers]] #{k + 1}", t, TEACHERS, "kind") for k, t in enumerate(tables)]


def _lams(value):
    where = "[grid] lams"
    if isinstance(value, dict):
        _unknown(where, value, ("start", "stop", "num"))
        missing = [k for k in ("start", "stop", "num") if k not in value]
        if missing:
            raise SpecError(f"{where}: a range needs start, stop and num; missing {', '.join(missing)}")
        start = Param("start", "float").check(where, value["start"])
        stop = Param("stop", "float").check(where, value["stop"])
        num = Param("num", "int", lo=1).check(where, value["num"])
        return [float(v) for v in np.linspace(start, stop, num)]
    values = [Param("lams", "float").check("[grid]", v) for v in _as_axis(where, value)]
    if len(set(values)) != len(values):
        raise SpecError(f"{where}: repeated values in {value!r}")
    return values


def _grid_section(table):
    _unknown("[grid]", table, SPEC_KEYS["grid"])
    if "lams" not in table:
        raise SpecError("[grid]: missing required key 'lams' (the KD weights λ of every cell)")
    grid = {"lams": _lams(table["lams"])}
    has_step, has_frac = "step" in table, "step_fraction" in table
    if has_step == has_frac:
        raise SpecError("[grid]: give exactly one of 'step' (absolute γ) or 'step_fraction' (γ = fraction / 𝓛(b))")
    for key, param in _GRID_PARAMS.items():
        if key in table:
            grid[key] = _axis("[grid]", param, table[key])
        elif param.default is REQUIRED:
            raise SpecError(f"[grid]: missing required key {key!r} ({param.describe_range()})")
        else:
            grid[key] = [param.default]
    for est in grid["estimator"]:
        if est not in _estimators():
            raise SpecError(f"[grid] estimator: unknown value {est!r}; valid values: {', '.join(map(repr, _estimators()))}")
    for key, param in TRAINING.items():      # named in the normalised spec only when given
        if key in table:
            grid[key] = _schedule_axis(table[key]) if key == "lam_schedule" else _axis("[grid]", param, table[key])
    return grid


def _schedule_axis(value):
    """lam_schedule values (strings such as "decay:0.9", or tables {kind, factor, cap}) as canonical strings."""
    where = "[grid] lam_schedule"
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{where}: empty list (a grid axis needs at least one value)")
    out = []
    for v in values:
        if not isinstance(v, (str, dict)):
            raise SpecError(f"{where} must be a string such as 'decay:0.9' or a table {{kind, factor, cap}}; "
                            f"got {v!r} ({type(v).__name__})")
        try:
            schedule = LambdaSchedule.parse(v)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{where}: {exc}") from None
        out.append(str(schedule))              # its exact name: parses back to the same schedule
    if len(set(out)) != len(out):
        raise SpecError(f"{where}: repeated values in {value!r} (as schedules: {', '.join(out)})")
    return out


def _expand(params):
    keys = list(params)
    return (dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys)))


def _cross_checks(problems, grid):
    for prob in problems:
        builder = PROBLEMS[prob["family"]]
        for params in _expand(prob["params"]):
            n = builder.n_of(params)
            if prob["family"] == "least_squares" and params["d"] > n:
                raise SpecError(f"[problem] least_squares: d must be <= n; got d = {params['d']}, n = {n}")
            big = [b for b in grid["batch_size"] if b > n]
            if big:
                raise SpecError(f"[grid] batch_size must be <= n = {n} ({prob['family']}); got {big[0]}")
    for every in grid["record_every"]:
        if every is not None:
            short = [s for s in grid["steps"] if every > s]
            if short:
                raise SpecError(f"[grid] record_every must be <= steps; got record_every = {every}, steps = {short[0]}")
    _training_checks(problems, grid)


def _problem_entries(problems):
    """(family, params) of every problem, or of one per table when the family's temperature flag is
    not a function of the parameters (all that ``training_issue`` can tell apart)."""
    for prob in problems:
        family = prob["family"]
        entries = _expand(prob["params"])
        if callable(PROBLEMS[family].supports_temperature):
            yield from ((family, params) for params in entries)
        else:
            yield family, next(entries)


def _training_checks(problems, grid):
    """Each training option's values against the estimators and problems it crosses (module docstring),
    and λ schedules against the run lengths."""
    entries = None
    for key, param in TRAINING.items():
        values = grid.get(key, [param.default])
        for value in values:
            if value == param.default:
                continue
            if entries is None:
                entries = list(_problem_entries(problems))
            fits, refused = 0, []
            for est in grid["estimator"]:
                for family, params in (entries if key == "temperature" else entries[:1]):
                    issue = training_issue(key, value, est, family, params)
                    if issue:
                        refused.append((est, family, issue))
                    else:
                        fits += 1
            if not refused:
                continue
            est, family, issue = refused[0]
            cell = f"estimator {est!r}" + (f", problem {family!r}" if key == "temperature" else "")
            if not fits:
                raise SpecError(f"[grid] {key} = {value!r}: {issue}; no cell of this spec can use it "
                                f"(the cells with {cell} cannot)")
            if len(values) > 1:
                raise SpecError(f"[grid] {key} = {value!r} does not apply to the cells with {cell} ({issue}); a list "
                                f"of {key} values must apply to every estimator and problem of the grid (those "
                                f"cells would repeat): give {key} one value (cells it does not apply to run "
                                "without it), or split the sweep")
    _schedule_checks(problems, grid)


def _schedule_checks(problems, grid):
    """A λ schedule must keep every λ finite over the longest run of the grid (``kdsim.schedules``)."""
    schedules = [LambdaSchedule.parse(v) for v in grid.get("lam_schedule", []) if v != "constant"]
    if not schedules:
        return
    ns = {PROBLEMS[p["family"]].n_of(params) for p in problems for params in _expand(p["params"])}
    shortest = min((n // b if drop else -(-n // b)) for n in ns for b in grid["batch_size"]
                   for drop in grid.get("drop_last", [False]) if b <= n)
    epochs = -(-max(grid["steps"]) // max(shortest, 1))
    lams = np.asarray(grid["lams"], dtype=np.float64)
    for schedule in schedules:
        with np.errstate(over="ignore", invalid="ignore"):
            # LambdaSchedule.values at the last epoch only (|λ_e| grows with e, so it is the first to overflow)
            last = lams * np.float64(schedule.factor) ** np.float64(epochs - 1)
            last[lams == 0.0] = 0.0
            if schedule.kind == "increase":
                last = np.minimum(last, schedule.cap)
        if not np.all(np.isfinite(last)):
            raise SpecError(f"[grid] lam_schedule {str(schedule)!r} makes λ = {lams[~np.isfinite(last)][0]:g} "
                            f"non-finite within {epochs} epochs (steps = {max(grid['steps'])}); use fewer steps or "
                            "a factor closer to 1")


_TRAINING_TEXT = {"sampling": "{}", "momentum": "μ={:g}", "lam_schedule": "λ {}", "temperature": "τ={:g}",
                  "teacher_l2": "teacher_l2={:g}", "svrg_period": "m={}", "svrg_warmup": "warmup={}"}


def _training_text(key, value):
    """A training option's value in a cell label."""
    if key == "drop_last":
        return "drop_last" if value else "keep_last"
    if key == "svrg_correction":
        return "corrected" if value else "uncorrected"
    if value is None:
        return f"{key}=default"
    return _TRAINING_TEXT[key].format(value)


def _short(params, varying):
    inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k in varying)
    return inner


def _derived_seed(config, master_seed):
    skip = ("seed", "kdsim_version", "store_schema", "summaries")
    blob = json.dumps({k: v for k, v in config.items() if k not in skip}, sort_keys=True).encode()
    digest = hashlib.sha256(blob + str(master_seed).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
