"""Claim 8 (variance reduction factor 1 − ρ²): passes quick, fails when perturbed."""
import dataclasses
import itertools

import numpy as np
import pytest

import kdsim
from kdsim.checks import claim08_variance_reduction as c8


def _failed(result, text):
    return [r for r in result.rows if text in r["quantity"] and not r["passed"]]


def _rows(result, text):
    return [r for r in result.rows if text in r["quantity"]]


def test_passes_quick(quick_check_result):
    result = quick_check_result("variance_reduction")
    assert result.rows and result.passed, result.table()
    frame = result.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "tolerance"]].to_numpy()).all()
    assert (frame["ratio"].isna() == ((frame["theoretical"] == 0) & (frame["tolerance"] == 0))).all()
    n_inst, n_teach = len(c8.instances()), len(c8.teacher_set(c8.instances()[0][1], c8.instances()[0][2]))
    # one identity row per instance; Monte Carlo rows at b = 1 and b = 10 for every teacher
    assert len(_rows(result, "identity")) == n_inst
    mc = frame[frame["quantity"].str.startswith("Monte Carlo factor")]
    assert len(mc) == n_inst * n_teach * len(c8.BATCHES)
    assert {int(i.rsplit("b=", 1)[1]) for i in mc["instance"]} == set(c8.BATCHES) == {1, 10}
    # their tolerance is the interval's half-width (plus the floor), the interval is centred on the estimate
    assert np.allclose(mc["tolerance"], mc["ci_high"] - mc["empirical"] + c8.FLOOR)
    imperfect = mc[~mc["instance"].str.contains("θ = x\\*")]
    assert (imperfect["ci_high"] > imperfect["ci_low"]).all()
    n_mono = n_inst * len(c8.BATCHES) * (len(c8.R_SEQUENCE) - 1)
    assert sum("teacher worsens" in q for q in frame["quantity"]) == n_mono
    # no ratio against a tolerance-like threshold: every ratio is a value of order one or a fraction of a tolerance
    assert (frame["ratio"].fillna(0).abs() <= 1.5).all(), frame.loc[frame["ratio"].abs() > 1.5, ["quantity", "ratio"]]


def test_direct_noise_and_monte_carlo_match_enumeration_of_all_minibatches():
    # b = 2 on n = 12: the exact average over all 66 pairs equals (1 − ρ²)σ²_*, the ω(b) evaluation and the
    # target of the Monte Carlo factor, whose delta-method interval covers it
    p = kdsim.problems.synthetic.least_squares(12, 3, seed=4)
    theta = kdsim.teachers.at_distance(p, 0.5, seed=1).theta
    c = kdsim.theory.constants(p, theta, batch_size=2)
    lam = kdsim.theory.lambda_hat(c)
    G, T = p.sample_grads(p.solution()), p.sample_grads(theta)
    pairs = [list(B) for B in itertools.combinations(range(12), 2)]
    num = np.mean([np.sum((G[B] - lam * T[B]).mean(axis=0) ** 2) for B in pairs])
    den = np.mean([np.sum(G[B].mean(axis=0) ** 2) for B in pairs])
    assert num == pytest.approx((1 - c.rho ** 2) * c.sigma2_star, rel=1e-12)
    assert c8.direct_noise(p, theta, lam, 2) == pytest.approx(num, rel=1e-12)
    assert den == pytest.approx(c.sigma2_star, rel=1e-12)
    R, half = c8.vr_factor_mc(G, T, lam, c8.minibatches(12, 2, 20000), 4.0)
    assert abs(R - (1 - c.rho ** 2)) <= half
    assert 0 < half < 0.05 * (1 - c.rho ** 2)


def test_fails_when_lambda_hat_is_off(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("variance_reduction")
    orig = kdsim.theory.lambda_hat
    monkeypatch.setattr(kdsim.theory, "lambda_hat", lambda c: 0.9 * orig(c))
    result = rejudge(base)
    assert len(_failed(result, "identity")) == len(c8.instances())
    for b in c8.BATCHES:
        assert [r for r in _failed(result, "Monte Carlo factor") if r["instance"].endswith(f"b={b}")]
    # only the rows that use λ̂ fail
    assert all("identity" in r["quantity"] or "Monte Carlo" in r["quantity"] for r in result.rows if not r["passed"])


def test_fails_when_the_factor_uses_a_modestly_wrong_rho(monkeypatch, quick_check_result, rejudge):
    # ρ² → 0.9ρ² (ρ scaled by √0.9): the predicted factor 1 − 0.9ρ² is wrong by 0.1ρ²
    base = quick_check_result("variance_reduction")
    orig = kdsim.theory.constants

    def wrong(*a, **k):
        c = orig(*a, **k)
        return dataclasses.replace(c, rho=np.sqrt(0.9) * c.rho)

    monkeypatch.setattr(kdsim.theory, "constants", wrong)
    result = rejudge(base)
    assert len(_failed(result, "identity")) == len(c8.instances())
    assert len(_failed(result, "full reduction")) == len(c8.instances()) * len(c8.BATCHES)
    for b in c8.BATCHES:
        mc = [r for r in _rows(result, "Monte Carlo factor") if r["instance"].endswith(f"b={b}")
              and "θ = x*" not in r["instance"]]
        bad = [r for r in mc if not r["passed"]]
        # every imperfect teacher whose ρ² is not small is caught (0.1ρ² exceeds the interval)
        assert len(bad) >= 0.5 * len(mc), (b, len(bad), len(mc))


def test_monte_carlo_rows_fail_when_the_factor_is_off_by_a_few_percent(monkeypatch, quick_check_result, rejudge):
    # the Monte Carlo rows alone: their target (1 − ρ²) 5% too large
    base = quick_check_result("variance_reduction")
    orig = kdsim.theory.constants

    def wrong(*a, **k):
        c = orig(*a, **k)
        return dataclasses.replace(c, rho=np.sqrt(max(0.0, 1.0 - 1.05 * (1.0 - c.rho ** 2))) * np.sign(c.rho))

    monkeypatch.setattr(kdsim.theory, "constants", wrong)
    result = rejudge(base)
    for b in c8.BATCHES:
        assert [r for r in _failed(result, "Monte Carlo factor") if r["instance"].endswith(f"b={b}")], b


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
