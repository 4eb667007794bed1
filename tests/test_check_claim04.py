"""Claim 4 (least-squares dynamics around x_λ): passes at quick size, fails when the theory is perturbed."""
import dataclasses

import numpy as np
import pytest

import kdsim
from kdsim.checks import claim04_ls_dynamics as c4


def _failed(result, text):
    return [r for r in result.rows if text in r["quantity"] and not r["passed"]]


def test_passes_quick(quick_check_result):
    result = quick_check_result("ls_dynamics")
    assert result.rows and result.passed, result.table()
    frame = result.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "tolerance"]].to_numpy()).all()
    assert not frame["ratio"].isna().any()
    # one row of each kind per (instance, b, λ)
    n = len(c4.instances(True)) * len(c4.LAMS)
    assert sum("|MC − exact §5| / SE" in q for q in frame["quantity"]) == n
    assert sum(q.startswith("plateau") for q in frame["quantity"]) == n


def test_fails_when_the_exact_recursion_is_off(monkeypatch, quick_check_result, rejudge):
    # exact E‖x_t − x*‖² 25% too large at every step: the every-record rows must fail
    base = quick_check_result("ls_dynamics")
    orig = kdsim.theory.exact_moments

    def scaled(*a, **k):
        ex = orig(*a, **k)
        return dataclasses.replace(ex, dist2_opt=1.25 * ex.dist2_opt)

    monkeypatch.setattr(kdsim.theory, "exact_moments", scaled)
    result = rejudge(base)
    bad = _failed(result, "|MC − exact §5| / SE")
    assert len(bad) == len(c4.instances(True)) * len(c4.LAMS)


def test_fails_when_mse_sgd_is_off(monkeypatch, quick_check_result, rejudge):
    # MSE_SGD 30% too large: the stationary-error rows of SGD (λ = 0) and the closed form fail
    from kdsim.theory import exact_ls
    base = quick_check_result("ls_dynamics")
    orig = exact_ls.mse_sgd
    monkeypatch.setattr(exact_ls, "mse_sgd", lambda *a, **k: 1.3 * orig(*a, **k))
    result = rejudge(base)
    plateau = _failed(result, "plateau E‖x_∞ − x*‖²")
    sgd = {r["instance"] for r in result.rows if r["instance"].endswith("λ=0")}
    assert sgd and {r["instance"] for r in plateau} >= sgd
    assert len(_failed(result, "stationary solve")) == len(c4.instances(True)) * (len(c4.LAMS) - 0)


def test_fails_when_the_mean_is_taken_to_be_x_star(monkeypatch, quick_check_result, rejudge):
    # claiming E x_t → x* instead of x_λ must fail for every λ > 0 on the synthetic instance
    base = quick_check_result("ls_dynamics")
    monkeypatch.setattr(kdsim.theory, "x_lambda", lambda p, theta, lam, **k: p.solution())
    result = rejudge(base)
    bad = {r["instance"] for r in _failed(result, "‖mean_s x_T − x_λ‖")}
    want = {r["instance"] for r in result.rows
            if r["instance"].startswith("least squares") and not r["instance"].endswith("λ=0")}
    assert want and want <= bad


@pytest.mark.slow
def test_passes_full_size():
    result = c4.check()
    assert result.passed, result.table()
