"""Claim 9 (corrected KD: no λ²D² floor, stationary error O(γ)): passes quick, fails when perturbed."""
import numpy as np
import pytest

import kdsim
from kdsim.checks import claim09_corrected_kd as c9


def _failed(result, text):
    return [r for r in result.rows if text in r["quantity"] and not r["passed"]]


def test_passes_quick(quick_check_result):
    result = quick_check_result("corrected_kd")
    assert result.rows and result.passed, result.table()
    frame = result.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "tolerance"]].to_numpy()).all()
    assert not frame["ratio"].isna().any()
    floor = frame[frame["quantity"].str.contains("bias floor")]
    assert len(floor) and (floor["ci_high"] < floor["theoretical"]).all()


def test_fails_when_the_exact_theory_is_plain_kd(monkeypatch, quick_check_result, rejudge):
    # the biased estimator's exact stationary value carries λ²D²: the plateau rows must fail
    base = quick_check_result("corrected_kd")
    orig = kdsim.theory.exact_moments
    monkeypatch.setattr(kdsim.theory, "exact_moments",
                        lambda *a, **k: orig(*a, **{**k, "estimator": "kd"}))
    result = rejudge(base)
    n = sum("vs exact stationary value" in r["quantity"] for r in result.rows)
    assert n and len(_failed(result, "vs exact stationary value")) == n


def test_fails_when_the_simulation_runs_plain_kd(monkeypatch):
    # plain KD keeps the floor λ²D² + (1 − λ)²MSE_SGD: "≤ λ²D²" fails for λ < 1 (at λ = 1 KD started
    # at x* approaches its floor D² from below), and every plateau misses the corrected-KD value
    orig = kdsim.simulate
    monkeypatch.setattr(c9, "simulate", lambda *a, **k: orig(*a, **{**k, "estimator": "kd"}))
    result = c9.check(quick=True)
    floor = [r for r in result.rows if "bias floor" in r["quantity"] and not r["instance"].endswith("λ=1")]
    assert floor and not any(r["passed"] for r in floor)
    n = sum("vs exact stationary value" in r["quantity"] for r in result.rows)
    assert n and len(_failed(result, "vs exact stationary value")) == n


def test_fails_when_the_small_gamma_limit_is_off(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("corrected_kd")
    orig = c9.lyapunov_trace
    monkeypatch.setattr(c9, "lyapunov_trace", lambda *a, **k: 1.05 * orig(*a, **k))
    result = rejudge(base)
    n = sum("Lyapunov" in r["quantity"] for r in result.rows)
    assert n and len(_failed(result, "Lyapunov")) == n


@pytest.mark.slow
def test_passes_full_size():
    result = c9.check()
    assert result.passed, result.table()
