"""Finite-sum problems with closed-form per-sample gradients."""
from .base import Problem, TeacherTerms
from .least_squares import LeastSquares

__all__ = ["Problem", "TeacherTerms", "LeastSquares"]
