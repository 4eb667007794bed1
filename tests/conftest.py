"""Shared fixtures and tolerances.

Statistical tolerances: a Monte Carlo mean is compared with an exact value as
|mean − exact| ≤ z·SE, with z chosen for a stated false-failure probability p
over m comparisons (Bonferroni): z = Φ⁻¹(1 − p/(2m)). Seeds are fixed, so a
test either always passes or always fails; no statistical test is retried.
"""
import numpy as np
import pytest
from scipy.stats import norm

import kdsim


def z_threshold(false_failure=1e-6, comparisons=1):
    """Two-sided z for a family-wise false-failure probability (Bonferroni)."""
    return float(norm.ppf(1 - false_failure / (2 * comparisons)))


@pytest.fixture
def ls_problem():
    """A small well-conditioned least-squares instance (n=40, d=4) with noise."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 4))
    b = A @ rng.standard_normal(4) + 0.5 * rng.standard_normal(40)
    return kdsim.LeastSquares(A, b)
