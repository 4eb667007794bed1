"""Claim 12 (sampling schemes, docs/theory.md §5.2): passes at quick size, fails when the theory is perturbed."""
import dataclasses
import itertools

import numpy as np
import pytest

import kdsim
from kdsim.checks import claim12_sampling as c12
from kdsim.theory import schemes

BACKEND = "numba"        # the check's default
RR_BOUND = c12.rr_bound  # the unperturbed bound (the tests below patch the module's name)


def _rows(result, text):
    return [r for r in result.rows if text in r["quantity"]]


def _failed(result, text):
    return [r for r in _rows(result, text) if not r["passed"]]


def _identity(result):
    return [r for r in result.rows if r["quantity"].startswith("path identity")]


@pytest.fixture
def base(quick_check_result):
    return quick_check_result("sampling", backend=BACKEND)


# --------------------------------------------------------------------------- the unperturbed check
def test_passes_quick(base):
    assert base.rows and base.passed, base.table()
    frame = base.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "tolerance"]].to_numpy()).all()
    assert not frame["ratio"].isna().any()
    # (a) one row per Monte Carlo vs enumeration instance: RR, shuffle-once, momentum, partial last batch
    assert len(_rows(base, "abs(MC − exact enumeration)/SE")) == len(c12.mc_specs(True)) == 4
    assert len(_identity(base)) == 6                              # (b): 4 run_path + 2 engine
    assert len(_rows(base, "log-log slope")) == 6 + 3 + 5                      # (c): exact, equal norms, MC
    assert len(_rows(base, "empirical λ optimum")) == 2 * 2 + 4                # (d)
    assert len(_rows(base, "power:")) == 4 and len(_rows(base, "NOT APPLICABLE")) == 1   # (e)
    assert any("μ=0.5" in r["instance"] for r in _rows(base, "argmin_λ of the enumerated"))   # (f)
    # the findings are stated, not hidden
    assert any(n.startswith("FINDING") and "refuted" in n for n in base.notes)
    assert {f["kind"] for f in base.figures} == {"lambda_sweep"}
    curves = base.curves[0]
    assert {"mc", "theory"} == set(curves["kind"]) and curves["instance"].nunique() == 4


def test_rows_have_sensible_relations_and_tolerances(base):
    for r in base.rows:
        assert r["relation"] in ("≈", "≤", "≥") and 0.0 <= r["tolerance"] < np.inf, r
        assert r["ci_low"] <= r["empirical"] <= r["ci_high"], r
    for r in _identity(base):                            # identities: to rounding
        assert r["theoretical"] == 0.0 and r["tolerance"] == c12.IDENTITY_RTOL
    for r in _rows(base, "abs(MC − exact enumeration)/SE"):   # a Bonferroni t quantile, no tolerance
        assert r["relation"] == "≤" and 3.0 < r["theoretical"] < 6.0 and r["tolerance"] == 0.0
    for r in _rows(base, "log-log slope"):               # each exponent row tells integer exponents apart
        assert r["theoretical"] in (1.0, 2.0, 3.0) and r["tolerance"] < 0.5, r
    for r in _rows(base, "argmin_λ of the enumerated"):   # an exact identity: relative 1e-6
        assert r["tolerance"] <= 1e-6 * abs(r["theoretical"]) + 1e-14
    for r in _rows(base, "RR bound (Thm 1"):             # a bound: relation ≤ 1, rounding only
        assert r["relation"] == "≤" and r["theoretical"] == 1.0 and r["tolerance"] <= 1e-9
        assert "α=" in r["instance"]                     # only where the f_i are strongly convex
    na = _rows(base, "NOT APPLICABLE")[0]
    assert "α" not in na["instance"] and na["empirical"] == 0.0


def test_shuffling_variance_equals_enumeration():
    # Definition 2 of Mishchenko et al. (2020), by brute force over every permutation, on F_λ
    p = c12.tiny_problem("partial")                      # n = 5, ridge 0.2
    theta = c12.tiny_teacher(p)
    step = 0.07
    xs = p.solution()
    for lam in (0.0, 0.4):
        x_lam = (1 - lam) * xs + lam * theta
        g = np.stack([p.grad(x_lam, [i]) - lam * p.grad(theta, [i]) for i in range(p.n)])
        assert np.abs(g.sum(axis=0)).max() < 1e-12                      # x_λ minimises F_λ
        vals = np.zeros(p.n - 1)
        perms = list(itertools.permutations(range(p.n)))
        for perm in perms:
            for i in range(1, p.n):
                x = x_lam - step * g[list(perm[:i])].sum(axis=0)
                k = [perm[i]]
                breg = p.loss(x, k) - p.loss(x_lam, k) - p.grad(x_lam, k) @ (x - x_lam)   # linear terms cancel
                vals[i - 1] += breg / step / len(perms)
        got, per_i = c12.shuffling_variance(p, step, lam)
        np.testing.assert_allclose(per_i, vals, rtol=1e-10)
        assert got == pytest.approx(vals.max(), rel=1e-10)


def test_rr_bound_states_its_conditions():
    gen = c12.tiny_problem("generic")
    bd = c12.rr_bound(gen, c12.tiny_teacher(gen), 0.0, 0.1, 3)
    assert not bd.applicable and "not strongly convex" in bd.status and np.isnan(bd.curve).all()
    ridge = c12.tiny_problem("ridge")
    L = float(np.max(ridge.sample_smoothness()))
    assert "1/L" in c12.rr_bound(ridge, c12.tiny_teacher(ridge), 0.0, 1.01 / L, 3).status
    ok = c12.rr_bound(ridge, c12.tiny_teacher(ridge), 0.5, 0.5 / L, 3)
    assert ok.applicable and ok.mu == pytest.approx(ridge.l2) and ok.bracket[0] <= ok.sigma2_shuffle <= ok.bracket[1]


# --------------------------------------------------------------------------- perturbations
def test_fails_when_the_enumerated_second_moment_is_1_percent_off(monkeypatch, base, rejudge):
    # power of (a): E‖x_t − x*‖² from enumeration 1% too large after t = 0 fails every Monte Carlo instance
    orig = schemes.exact_epoch_moments

    def off(*a, **k):
        ex = orig(*a, **k)
        q = ex.quad_dist2_opt.copy()
        q[1:] *= 1.01
        return dataclasses.replace(ex, quad_dist2_opt=q)

    monkeypatch.setattr(schemes, "exact_epoch_moments", off)
    result = rejudge(base)
    assert len(_failed(result, "abs(MC − exact enumeration)/SE")) == 4


def test_fails_when_the_epoch_moments_are_the_iid_ones(monkeypatch, base, rejudge):
    # (i) enumeration of i.i.d. minibatches in place of reshuffled / shuffled-once epochs
    orig = schemes.exact_epoch_moments
    monkeypatch.setattr(schemes, "exact_epoch_moments", lambda *a, **k: orig(*a, **{**k, "sampling": "iid"}))
    result = rejudge(base)
    assert len(_failed(result, "abs(MC − exact enumeration)/SE")) == 4
    assert _failed(result, "log-log slope in γ of M, RR") and _failed(result, "log-log slope in γ of M, shuffle-once")
    assert len(_failed(result, "vs exact (M − c)/(M + D² − 2c) (enumeration)")) == 2


def test_fails_when_the_lambda_formula_drops_c(monkeypatch, base, rejudge):
    # (ii) λ_opt = M/(M + D²), the i.i.d. form, in place of (M − c)/(M + D² − 2c)
    orig = schemes.lambda_opt_epoch
    monkeypatch.setattr(schemes, "lambda_opt_epoch", lambda M, c, D2: orig(M, 0.0 * np.asarray(c), D2))
    result = rejudge(base)
    assert len(_failed(result, "vs exact (M − c)/(M + D² − 2c) (enumeration)")) == 2
    assert len(_failed(result, "from the same run's SGD records")) == 2 + 4          # tiny and larger instance
    assert len(_failed(result, "vs exact ratio")) == 2
    assert len(_failed(result, "argmin_λ of the enumerated")) == 2                     # with and without momentum
    assert _failed(result, "log-log slope in γ of λ_opt, RR (claim 12 says 2")


def test_fails_when_the_path_identity_is_off_by_1e6(monkeypatch, base, rejudge):
    # (iii) z_t off by 1e-6 relative: the identity rows (tolerance 1e-12) must all fail
    orig = schemes.path_identity
    monkeypatch.setattr(schemes, "path_identity",
                        lambda *a, **k: dataclasses.replace(orig(*a, **k), z=orig(*a, **k).z * (1 + 1e-6)))
    result = rejudge(base)
    bad = [r for r in _identity(result) if not r["passed"]]
    assert len(bad) == 6 and all(r["empirical"] > 1e-9 for r in bad)
    assert sum(not r["passed"] for r in result.rows) == 6          # and nothing else


def _with_shrunk_neighbourhood(monkeypatch, factors):
    def shrunk(problem, theta, lam, step, *a, **k):
        bd = RR_BOUND(problem, theta, lam, step, *a, **k)
        f = factors.get((round(step, 12), lam))
        return bd if f is None else dataclasses.replace(bd, neighbourhood=bd.neighbourhood / f)

    monkeypatch.setattr(c12, "rr_bound", shrunk)


def _power_by_bound(base, monkeypatch, rejudge):
    """{(γ, λ): the power row's factor}: the applicable calls of rr_bound, in the order of the power rows."""
    calls = []

    def spy(problem, theta, lam, step, *a, **k):
        bd = RR_BOUND(problem, theta, lam, step, *a, **k)
        if bd.applicable:
            calls.append((round(step, 12), lam))
        return bd

    monkeypatch.setattr(c12, "rr_bound", spy)
    rejudge(base)
    monkeypatch.setattr(c12, "rr_bound", RR_BOUND)
    keys = list(dict.fromkeys(calls))
    powers = [r["empirical"] for r in _rows(base, "power:")]
    assert len(keys) == len(powers)
    return dict(zip(keys, powers))


def test_fails_when_a_bound_neighbourhood_shrinks_by_its_looseness(monkeypatch, base, rejudge):
    # (iv) the measured power F: shrinking the neighbourhood by 1.05·F breaks every bound, by F/1.05 none
    power = _power_by_bound(base, monkeypatch, rejudge)
    assert all(f > 2.0 for f in power.values())          # the RR bound is loose here (4× to 14×)
    _with_shrunk_neighbourhood(monkeypatch, {k: 1.05 * f for k, f in power.items()})
    result = rejudge(base)
    assert len(_failed(result, "power:")) == len(power)
    assert len(_failed(result, "RR bound (Thm 1")) == len(power)
    _with_shrunk_neighbourhood(monkeypatch, {k: f / 1.05 for k, f in power.items()})
    assert rejudge(base).passed


@pytest.mark.slow
def test_passes_full_size():
    result = c12.check()
    assert result.passed, result.table()
