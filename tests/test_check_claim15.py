"""Claim 15 (non-linear students): the check passes at quick size, and fails when the KD gradient is
replaced by the control variate ∇f_B(x) − λ∇f_B(θ) (the linear models' identity) or when the
first-order theory of the gap is dropped."""
import importlib

import numpy as np
import pytest

from kdsim.theory import alignment

c15 = importlib.import_module("kdsim.checks.claim15_mlp")


def _failed(result):
    return [r for r in result.rows if not r["passed"]]


def test_claim15_passes_quick(quick_check_result):
    result = quick_check_result("mlp")
    assert result.rows and not _failed(result), result.table()
    frame = result.frame()
    assert not frame[["empirical", "ci_low", "ci_high", "theoretical"]].isna().any().any()
    assert (frame["ratio"].isna() == ((frame["theoretical"] == 0) & (frame["tolerance"] == 0))).all()
    assert {q[:3] for q in frame["quantity"]} == {"(a)", "(b)", "(c)", "(d)"}
    for act in c15.ACTIVATIONS:
        assert sum(act in i and q.startswith("(a)") for i, q in zip(frame["instance"], frame["quantity"])) == 4
    assert any(f["kind"] == "scatter" for f in result.figures)
    assert len(set(result.curves[0]["method"])) == 4


def _kd_is_the_control_variate(problem, x, theta, lam, temperature=1.0):
    """kd_rows such that KD_B − λαθ = ∇f_B(x) − λ∇f_B(θ): the identity of the linear models."""
    return problem.sample_grads(x) - lam * problem.sample_grads(theta) + lam * problem.l2 * theta


def test_claim15_fails_when_kd_is_the_control_variate(monkeypatch, quick_check_result, rejudge):
    # every cosine becomes 1: the rows that say the identity fails, and the first-order rows, must fail;
    # the pre-registered floor, the linear control and the noise identity still pass
    base = quick_check_result("mlp")
    monkeypatch.setattr(alignment, "kd_rows", _kd_is_the_control_variate)
    result = rejudge(base)
    bad = [r["quantity"] for r in _failed(result)]
    n_identity = sum("fails measurably" in r["quantity"] for r in result.rows)
    assert n_identity == 4 and sum("fails measurably" in q for q in bad) == n_identity
    assert any("first order 1 − cos" in q and "(tolerance" in q for q in bad)       # sigmoid
    assert any("Jacobian jumps" in q for q in bad)                                    # ReLU
    assert not any("≥ 0.98" in q or "linear control" in q or "identity)" in q for q in bad)


@pytest.mark.slow                 # more perturbations of the same check: the slow set
def test_claim15_fails_without_the_residual_curvature(monkeypatch, quick_check_result, rejudge):
    # a first-order theory without N_B (KD_B ≈ CV_B to first order) fails the sigmoid first-order rows
    base = quick_check_result("mlp")
    from kdsim.problems.mlp import MLP
    orig = MLP.hvp_rows
    monkeypatch.setattr(MLP, "hvp_rows", lambda self, x, v, idx=None, part="full":
                        0.0 * orig(self, x, v, idx, part) if part == "residual" else orig(self, x, v, idx, part))
    result = rejudge(base)
    bad = [r for r in _failed(result)]
    assert bad and all("first order" in r["quantity"] and "sigmoid" in r["instance"] for r in bad)
    # (the ReLU row ≥ 2 × the prediction passes a fortiori when the prediction is 1)
    assert sum("(tolerance" in r["quantity"] for r in bad) == 4


@pytest.mark.slow                 # more perturbations of the same check: the slow set
def test_claim15_fails_when_the_plateau_theory_ignores_the_teacher(monkeypatch, quick_check_result, rejudge):
    # x̃ = x̂ (no bias from the teacher; KD then starts at x̂ and drifts to its real fixed point): the rows
    # built on x̃ fail — KD's objective leaves kd_loss(x̂) + γσ̃²/4 and the bias no longer orders the plateaus
    base = quick_check_result("mlp")
    monkeypatch.setattr(c15, "kd_fixed_point", lambda p, theta, lam, x0: np.asarray(x0, dtype=float).copy())
    result = rejudge(base, new_simulations=True)
    bad = [r["quantity"] for r in _failed(result)]
    assert sum("KD's objective: plateau" in q for q in bad) == 2
    assert all(q.startswith("(d)") for q in bad)


def test_kink_free_directions_avoid_relu_kinks():
    p = c15.networks(60, 1e-2)[0][1]
    x = p.default_x0()
    v = c15._kink_free_directions(p, x, np.arange(20), c15.FD_H, 2, 0)
    assert len(v) == 2 and all(abs(np.linalg.norm(u) - 1) < 1e-12 for u in v)


@pytest.mark.slow
def test_claim15_passes_full_size():
    result = c15.check()
    assert result.rows and not _failed(result), result.table()
