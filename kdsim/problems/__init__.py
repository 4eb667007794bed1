"""Finite-sum problems with closed-form per-sample gradients."""
from .base import Problem, TeacherTerms
from .deep_linear import DeepLinear, DeepLinearTeacherTerms
from .glm import GLM, LogisticRegression, PoissonRegression
from .least_squares import LeastSquares
from .mlp import MLP, MLPTeacherTerms
from .softmax import SoftmaxRegression

__all__ = ["Problem", "TeacherTerms", "LeastSquares", "SoftmaxRegression", "GLM", "LogisticRegression",
           "PoissonRegression", "DeepLinear", "DeepLinearTeacherTerms", "MLP", "MLPTeacherTerms"]
