"""kdsim: numerical validation of the optimisation theory of knowledge distillation."""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from . import _lazy
from ._version import __version__

if TYPE_CHECKING:   # what static tools (type checkers, mkdocstrings) see; at run time __getattr__ loads these
    from . import datasets, stats, teachers, theory  # noqa: F401
    from .api import LambdaCurve, PairedComparison, lambda_curve, paired_comparison, plot_lambda_curve  # noqa: F401
    from .problems import (  # noqa: F401
        GLM, MLP, DeepLinear, LeastSquares, LogisticRegression, PoissonRegression, Problem, SoftmaxRegression,
    )
    from .results import SimResult, SimSummary  # noqa: F401
    from .simulate import DivergenceWarning, StabilityWarning, simulate  # noqa: F401

#: public name -> submodule that defines it. Imported on first use (PEP 562): the package itself
#: loads nothing heavy, so that `kdsim --version` and `kdsim --help` start without numba or scipy
_LAZY = {
    **dict.fromkeys(["GLM", "DeepLinear", "LeastSquares", "LogisticRegression", "PoissonRegression", "Problem",
                     "SoftmaxRegression", "MLP"], "problems"),
    "SimResult": "results", "SimSummary": "results",
    "StabilityWarning": "simulate", "DivergenceWarning": "simulate", "simulate": "simulate",
    **dict.fromkeys(["LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve"],
                    "api"),
}

__all__ = ["__version__", "LeastSquares", "SoftmaxRegression", "GLM", "LogisticRegression",
           "PoissonRegression", "DeepLinear", "MLP", "Problem", "SimResult", "SimSummary", "StabilityWarning",
           "DivergenceWarning", "simulate",
           "LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve",
           "datasets", "stats", "teachers", "theory"]


__getattr__, __dir__ = _lazy.attributes(globals(), _LAZY, __all__)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule kdsim.simulate binds it as the package's attribute `simulate`
        # (whoever imports it first); the public kdsim.simulate is the function, as it always was.
        if name == "simulate" and isinstance(value, types.ModuleType):
            value = value.simulate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
