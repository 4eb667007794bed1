"""Theory checks: one module per claim of THEORY.md §8, each exposing ``check(...)``.

Every check returns a ``CheckResult`` whose rows put the empirical value (with a
confidence interval when it is a Monte Carlo mean) beside the theoretical one.
Scripts in ``theory_checks/``, the ``kdsim check`` command and the tests all call the
same functions.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from typing import TYPE_CHECKING

from .. import _lazy

# base (numpy, pandas, the engines) is imported on first use of these names, so that
# `kdsim check --list` and `kdsim check --help` start fast (PEP 562)
_FROM_BASE = ("COLUMNS", "CheckResult", "make_row")

if TYPE_CHECKING:   # what static tools (type checkers, mkdocstrings) see
    from .base import COLUMNS, CheckResult, make_row  # noqa: F401

#: name -> (claim number, module); the order is THEORY.md §8's
CLAIMS = {
    "identity": (1, "kdsim.checks.claim01_identity"),
    "optimal_teacher": (2, "kdsim.checks.claim02_optimal_teacher"),
    "teacher_fixed_point": (3, "kdsim.checks.claim03_teacher_fixed_point"),
    "ls_dynamics": (4, "kdsim.checks.claim04_ls_dynamics"),
    "lambda_opt": (5, "kdsim.checks.claim05_lambda_opt"),
    "bounds": (6, "kdsim.checks.claim06_bounds"),
    "rates": (7, "kdsim.checks.claim07_rates"),
    "variance_reduction": (8, "kdsim.checks.claim08_variance_reduction"),
    "corrected_kd": (9, "kdsim.checks.claim09_corrected_kd"),
    "deep_linear": (10, "kdsim.checks.claim10_deep_linear"),
    "digits": (11, "kdsim.checks.claim11_digits"),
    "sampling": (12, "kdsim.checks.claim12_sampling"),
    "real_teachers": (13, "kdsim.checks.claim13_real_teachers"),
    "power": (14, "kdsim.checks.claim14_power"),
    "mlp": (15, "kdsim.checks.claim15_mlp"),
}


def resolve(name):
    """Canonical check name from a name, a claim number ("2") or "claim2"."""
    key = str(name).strip().lower().removeprefix("claim").lstrip("_ ")
    for check_name, (number, _) in CLAIMS.items():
        if key in (check_name, str(number), f"{number:02d}"):
            return check_name
    valid = ", ".join(f"{n} ({c})" for c, (n, _) in CLAIMS.items())
    raise ValueError(f"unknown check {name!r}; valid checks: {valid}, or 'all'")


def get_check(name):
    """The ``check`` function of a claim."""
    return importlib.import_module(CLAIMS[resolve(name)][1]).check


def _facts(module):
    """(docstring, MIN_SEEDS, MIN_SEEDS_REASON) of a check module, read from its source with ast
    (without importing it and its numerics); imported when the source is not at hand or the
    values are not literals."""
    try:
        tree = ast.parse(importlib.util.find_spec(module).loader.get_source(module))
        values = {target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  for target in node.targets
                  if isinstance(target, ast.Name) and target.id in ("MIN_SEEDS", "MIN_SEEDS_REASON")}
        return ast.get_docstring(tree, clean=False), values["MIN_SEEDS"], values["MIN_SEEDS_REASON"]
    except (AttributeError, ImportError, KeyError, SyntaxError, TypeError, ValueError):
        mod = importlib.import_module(module)
        return mod.__doc__, mod.MIN_SEEDS, mod.MIN_SEEDS_REASON


def describe():
    """(number, name, one-line statement) of every registered check."""
    out = []
    for name, (number, module) in CLAIMS.items():
        doc = _facts(module)[0].strip().splitlines()[0]
        out.append((number, name, doc.split(":", 1)[-1].strip()))
    return out


def min_seeds(name):
    """(fewest seeds the check accepts, why) of a claim."""
    return _facts(CLAIMS[resolve(name)][1])[1:]


def script_main(name, argv=None):
    """Entry point of a ``theory_checks/`` script: run one check, print its table, return the exit code."""
    import argparse

    parser = argparse.ArgumentParser(description=f"THEORY.md §8 claim {CLAIMS[resolve(name)][0]}")
    parser.add_argument("--quick", action="store_true", help="reduced size")
    fewest, why = min_seeds(name)
    parser.add_argument("--seeds", type=int, default=None, help=f"at least {fewest} ({why})")
    parser.add_argument("--backend", default=None, help="simulation backend (default: the check's own)")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < fewest:
        parser.error(f"--seeds must be at least {fewest} for this check ({why}); got {args.seeds}")
    options = {} if args.backend is None else {"backend": args.backend}
    result = get_check(name)(quick=args.quick, seeds=args.seeds, **options)
    print(result.statement)
    print(result.table())
    print(result.verdict())
    return 0 if result.passed else 1




__all__ = ["CLAIMS", "COLUMNS", "CheckResult", "describe", "get_check", "make_row", "min_seeds", "resolve",
           "script_main"]

__getattr__, __dir__ = _lazy.attributes(globals(), dict.fromkeys(_FROM_BASE, "base"), __all__)
