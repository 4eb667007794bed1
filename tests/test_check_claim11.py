"""Claim 11 (digits, the paper's linear setup): the check passes, and fails when the theory is perturbed."""
import importlib

import numpy as np
import pytest

import kdsim.theory as th
from kdsim.simulate import simulate

c11 = importlib.import_module("kdsim.checks.claim11_digits")


def _failed(result):
    return [r for r in result.rows if not r["passed"]]


def test_claim11_passes_quick(quick_check_result):
    result = quick_check_result("digits")
    assert result.rows and not _failed(result), result.table()
    frame = result.frame()
    assert not frame[["empirical", "ci_low", "ci_high", "theoretical", "ratio"]].isna().any().any()
    assert {q[:3] for q in frame["quantity"]} >= {"(a)", "(b)", "(c)"}
    sweep = [f for f in result.figures if f["kind"] == "lambda_sweep"]
    assert len(sweep) == 1 and {"lam", "mean", "ci_low", "ci_high"} <= set(sweep[0]["data"].columns)
    methods = set(result.curves[0]["method"])
    assert len(methods) == 3


def test_claim11_fails_without_the_kd_loss_bias(monkeypatch, quick_check_result, rejudge):
    # x̃ replaced by x* (no bias): the residual, the bias lower bound and bias + noise rows must fail
    base = quick_check_result("digits")
    monkeypatch.setattr(th, "x_lambda", lambda problem, theta, lam, **k: problem.solution())
    result = rejudge(base)
    bad = [r["quantity"] for r in _failed(result)]
    assert any("residual" in q for q in bad)
    assert any("f(x̃) − f* + γσ̃²/4" in q for q in bad)
    assert all(q.startswith("(b)") for q in bad)


def test_claim11_fails_when_kd_runs_another_lambda(monkeypatch, quick_check_result, rejudge):
    # the (1 − λ)² factor is specific to λ: KD run at λ = 0.4 while the theory says λ = 0.7
    # (only that run is new: the SGD, kd_loss and λ-grid runs are reused)
    base = quick_check_result("digits")
    orig = c11.simulate

    def other_lambda(problem, theta, lams, *a, **k):
        if k.get("estimator") == "kd" and list(lams) == [c11.LAM]:
            lams = [0.4]
        return orig(problem, theta, lams, *a, **k)

    monkeypatch.setattr(c11, "simulate", other_lambda)
    result = rejudge(base, new_simulations=True)
    bad = [r["quantity"] for r in _failed(result)]
    assert any("ratio KD/SGD" in q for q in bad)
    assert any("KD λ=0.7 plateau" in q for q in bad)


def test_claim11_fails_when_the_noise_theory_is_off(monkeypatch, quick_check_result, rejudge):
    # a KD noise σ²_*(λ, θ) 100× too small must fail the first-order KD plateau row
    from kdsim.theory.constants import Constants
    base = quick_check_result("digits")
    orig = Constants.sigma2_kd
    monkeypatch.setattr(Constants, "sigma2_kd", lambda self, lam: 0.01 * orig(self, lam))
    result = rejudge(base)
    bad = [r["quantity"] for r in _failed(result)]
    assert any("KD λ=0.7 plateau" in q and "first order" in q for q in bad)


def test_grid_reuses_runs_exactly():
    # (c) takes λ = 0 from the "sgd" run and pairs runs of separate simulate calls by seed:
    # both rely on "kd" at λ = 0 being SGD bit for bit and on streams depending on the seed only
    p = c11.problem(n=60, l2=0.1)
    xs = p.solution()
    kw = dict(batch_size=10, record_every=10, backend="numpy")
    sgd = simulate(p, xs, [0.0], 0.05, 40, 3, estimator="sgd", **kw)
    joint = simulate(p, xs, [0.0, 0.4], 0.05, 40, 3, estimator="kd", **kw)
    alone = simulate(p, xs, [0.4], 0.05, 40, 3, estimator="kd", **kw)
    np.testing.assert_array_equal(sgd.x_final[0], joint.x_final[0])
    np.testing.assert_array_equal(alone.x_final[0], joint.x_final[1])


def test_tail_means_match_stats_plateau():
    from kdsim import stats
    rng = np.random.default_rng(0)
    steps = np.arange(0, 101, 10)
    v = rng.random((5, steps.size))
    assert c11.tail_means(steps, v).mean() == pytest.approx(stats.plateau(steps, v).mean, rel=1e-14)


@pytest.mark.slow
def test_claim11_passes_full_size():
    result = c11.check(backend="auto")
    assert result.rows and not _failed(result), result.table()
