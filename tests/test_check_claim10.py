"""Claim 10 (deep linear mode curves): the check passes, and fails when the §7 theory is perturbed."""
import importlib

import numpy as np
import pytest

import kdsim.theory as th

c10 = importlib.import_module("kdsim.checks.claim10_deep_linear")


def _failed(result):
    return [r for r in result.rows if not r["passed"]]


_TEACHER_CASES = c10.teacher_cases


def _one_case(inst, problem, quick):
    """Only the scaled-modes teacher at λ = 0.5 (keeps the perturbation tests short)."""
    label, teacher_map, _ = _TEACHER_CASES(inst, problem, quick)[0]
    return [(label, teacher_map, (0.5,))]


def test_claim10_passes_quick(quick_check_result):
    result = quick_check_result("deep_linear")
    assert result.rows and not _failed(result), result.table()
    frame = result.frame()
    assert not frame[["empirical", "ci_low", "ci_high", "theoretical", "ratio"]].isna().any().any()
    # every mode of every (teacher, λ) has its curve row and its target row, plus decoupling rows
    assert sum("≤ C·γ" in r["quantity"] for r in result.rows) == 9
    assert sum("final strength" in r["quantity"] for r in result.rows) == 9
    assert result.curves and {"instance", "method", "step", "quantity", "mean", "ci_low", "ci_high"} <= set(
        result.curves[0].columns)


def test_claim10_fails_when_the_mode_curve_is_wrong(monkeypatch, quick_check_result, rejudge):
    # a 1 % error in the flow's target strength inside u(t) does not shrink with γ
    base = quick_check_result("deep_linear", seeds=4)
    orig = th.mode_strength
    monkeypatch.setattr(c10, "teacher_cases", _one_case)
    monkeypatch.setattr(th, "mode_strength", lambda t, s, u0: orig(t, np.asarray(s) * 1.01, u0))
    result = rejudge(base)
    bad = _failed(result)
    assert bad and all("≤ C·γ" in r["quantity"] for r in bad)
    assert sum("≤ C·γ" in r["quantity"] for r in bad) == 3


def test_claim10_fails_when_kd_targets_ignore_the_teacher(monkeypatch, quick_check_result, rejudge):
    # s_k(λ) = s_k (the teacher ignored): both the curves and the final strengths disagree
    # (the targets set the horizon T, so the mode curves run again; the fixed-point run is reused)
    base = quick_check_result("deep_linear", seeds=4)
    monkeypatch.setattr(c10, "teacher_cases", _one_case)
    monkeypatch.setattr(th, "kd_mode_targets", lambda s, s_teacher, lam: np.asarray(s, dtype=float))
    result = rejudge(base, new_simulations=True)
    bad = _failed(result)
    assert sum("final strength" in r["quantity"] for r in bad) == 3
    assert any("≤ C·γ" in r["quantity"] for r in bad)


def test_claim10_fixed_point_row_fails_without_the_optimal_teacher(monkeypatch, quick_check_result, rejudge):
    # Θ̄ 1e-3 away from M*: λ = 1 then converges to Θ̄, leaving ‖Θ̄ − M*‖² ≈ 1e-6 > 1e-20
    # (only the minibatch run changes and runs again; the full-batch mode curves are reused)
    base = quick_check_result("deep_linear", seeds=4)
    orig = c10.simulate

    def shifted(problem, theta, lams, *a, **k):
        if k.get("batch_size", 1) < problem.n:
            theta = np.asarray(theta) + 1e-3
        return orig(problem, theta, lams, *a, **k)

    monkeypatch.setattr(c10, "teacher_cases", _one_case)
    monkeypatch.setattr(c10, "simulate", shifted)
    result = rejudge(base, new_simulations=True)
    bad = _failed(result)
    assert bad and all("minibatch" in r["instance"] for r in bad)
    assert any("E‖W(x_T) − M*‖²" in r["quantity"] for r in bad)


def test_final_time_reaches_the_gap():
    targets = np.array([2.0, 0.6])
    T = c10.final_time(targets, u0=1e-2, gap=1e-10)
    u = th.mode_strength(T, targets, 1e-2)
    assert np.all(np.abs(u - targets) / targets <= 1e-10 * (1 + 1e-6))
    with pytest.raises(ValueError, match="> 0"):
        c10.final_time([1.0, 0.0])


@pytest.mark.slow
def test_claim10_passes_full_size():
    result = c10.check()
    assert result.rows and not _failed(result), result.table()
