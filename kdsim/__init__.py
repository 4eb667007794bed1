"""kdsim: numerical validation of the optimisation theory of knowledge distillation."""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:   # what static tools (type checkers, mkdocstrings) see; at run time __getattr__ loads these
    from . import datasets, stats, teachers, theory  # noqa: F401
    from .api import LambdaCurve, PairedComparison, lambda_curve, paired_comparison, plot_lambda_curve  # noqa: F401
    from .problems import (  # noqa: F401
        GLM, DeepLinear, LeastSquares, LogisticRegression, PoissonRegression, Problem, SoftmaxRegression,
    )
    from .results import SimResult, SimSummary  # noqa: F401
    from .simulate import DivergenceWarning, StabilityWarning, simulate  # noqa: F401

#: public name -> submodule that defines it. Imported on first use (PEP 562): the package itself
#: loads nothing heavy, so that `kdsim --version` and `kdsim --help` start without numba or scipy
_LAZY = {
    **dict.fromkeys(["GLM", "DeepLinear", "LeastSquares", "LogisticRegression", "PoissonRegression", "Problem",
                     "SoftmaxRegression"], "problems"),
    "SimResult": "results", "SimSummary": "results",
    "StabilityWarning": "simulate", "DivergenceWarning": "simulate", "simulate": "simulate",
    **dict.fromkeys(["LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve"],
                    "api"),
}

__all__ = ["__version__", "LeastSquares", "SoftmaxRegression", "GLM", "LogisticRegression",
           "PoissonRegression", "DeepLinear", "Problem", "SimResult", "SimSummary", "StabilityWarning",
           "DivergenceWarning", "simulate",
           "LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve",
           "datasets", "stats", "teachers", "theory"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:                       # a submodule: kdsim.stats, and kdsim.engines etc. as before the package was lazy
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule kdsim.simulate binds it as the package's attribute `simulate`
        # (whoever imports it first); the public kdsim.simulate is the function, as it always was.
        if name == "simulate" and isinstance(value, types.ModuleType):
            value = value.simulate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
