"""Claim 8 (variance reduction factor 1 − ρ²): passes quick, fails when perturbed."""
import dataclasses

import numpy as np
import pytest

import kdsim
from kdsim.checks import claim08_variance_reduction as c8


def _failed(result, text):
    return [r for r in result.rows if text in r["quantity"] and not r["passed"]]


def test_passes_quick(quick_check_result):
    result = quick_check_result("variance_reduction")
    assert result.rows and result.passed, result.table()
    frame = result.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "tolerance"]].to_numpy()).all()
    assert not frame["ratio"].isna().any()
    n_mono = len(c8.instances()) * len(c8.BATCHES) * (len(c8.R_SEQUENCE) - 1)
    assert sum("teacher worsens" in q for q in frame["quantity"]) == n_mono


def test_independent_noise_matches_enumeration_of_all_minibatches():
    # b = 2 on n = 12: the Monte Carlo estimate's target equals the exact average over all 66 pairs
    import itertools
    p = kdsim.problems.synthetic.least_squares(12, 3, seed=4)
    theta = kdsim.teachers.at_distance(p, 0.5, seed=1).theta
    c = kdsim.theory.constants(p, theta, batch_size=2)
    lam = kdsim.theory.lambda_hat(c)
    V = p.sample_grads(p.solution()) - lam * p.sample_grads(theta)
    exact = np.mean([np.sum(V[list(B)].mean(axis=0) ** 2) for B in itertools.combinations(range(12), 2)])
    assert exact == pytest.approx((1 - c.rho ** 2) * c.sigma2_star, rel=1e-12)
    value, half = c8.independent_noise(p, theta, lam, 2, 20000, 4.0)
    assert abs(value - exact) <= half


def test_fails_when_lambda_hat_is_off(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("variance_reduction")
    orig = kdsim.theory.lambda_hat
    monkeypatch.setattr(kdsim.theory, "lambda_hat", lambda c: 0.9 * orig(c))
    result = rejudge(base)
    assert len(_failed(result, "KD-noise quadratic")) > 0.8 * sum("KD-noise quadratic" in r["quantity"] for r in result.rows)
    assert _failed(result, "every sample") and _failed(result, "Monte Carlo")


def test_fails_when_rho_is_off(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("variance_reduction")
    orig = kdsim.theory.constants
    monkeypatch.setattr(kdsim.theory, "constants",
                        lambda *a, **k: dataclasses.replace(orig(*a, **k), rho=0.99 * orig(*a, **k).rho))
    result = rejudge(base)
    assert _failed(result, "perfect teacher")
    assert _failed(result, "every sample")


def test_monotonicity_rows_can_fail(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("variance_reduction")
    monkeypatch.setattr(c8, "R_SEQUENCE", tuple(reversed(c8.R_SEQUENCE)))
    result = rejudge(base)
    bad = _failed(result, "teacher worsens")
    assert len(bad) == len(c8.instances()) * len(c8.BATCHES) * (len(c8.R_SEQUENCE) - 1)


@pytest.mark.slow
def test_passes_full_size():
    result = c8.check()
    assert result.passed, result.table()
