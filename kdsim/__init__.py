"""kdsim: numerical validation of the optimisation theory of knowledge distillation."""
from ._version import __version__  # noqa: E402

from .problems import (  # noqa: E402
    GLM, DeepLinear, LeastSquares, LogisticRegression, PoissonRegression, Problem, SoftmaxRegression,
)
from .results import SimResult, SimSummary  # noqa: E402
from . import datasets, stats, teachers, theory  # noqa: E402,F401
from .simulate import StabilityWarning, simulate  # noqa: E402
from .api import (  # noqa: E402
    LambdaCurve, PairedComparison, lambda_curve, paired_comparison, plot_lambda_curve,
)

__all__ = ["__version__", "LeastSquares", "SoftmaxRegression", "GLM", "LogisticRegression",
           "PoissonRegression", "DeepLinear", "Problem", "SimResult", "SimSummary", "StabilityWarning", "simulate",
           "LambdaCurve", "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve",
           "datasets", "stats", "teachers", "theory"]
