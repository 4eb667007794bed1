"""Claim 14 (power and tightness of the bounds): passes at quick size; every bound fails once its
neighbourhood is scaled by its own measured power × 0.9, and holds at × 1.1; the new formulas
(κ-controlled problems, eigen-direction teachers, the exact curve at any t) are tested numerically."""
import dataclasses

import numpy as np
import pytest

import kdsim.theory as th
from kdsim.checks import claim12_sampling as c12
from kdsim.checks import claim14_power as c14

BACKEND = "numba"        # the check's default
ORIGINAL = {"T1": th.t1, "T1'": th.t1_prime, "T2": th.t2, "SGD": th.sgd_bound}
RR_BOUND = c12.rr_bound
LABEL = {"T1": "T1", "T1'": "T1′", "T2": "T2", "SGD": "SGD", "RR": "RR", "DL-T2": "T2, deep linear"}


def _rows(result, text):
    return [r for r in result.rows if text in r["quantity"]]


def _power_row(result, name):
    rows = [r for r in _rows(result, "power:") if r["instance"].startswith(f"all ")
            and r["instance"].split(" instances of ", 1)[1].startswith(LABEL[name] + " (worst")]
    assert len(rows) == 1, (name, [r["instance"][:40] for r in _rows(result, "power:")])
    return rows[0]


def _tightness(result, name):
    return [r for r in result.rows if r["quantity"].startswith(LABEL[name] + ": tightness")]


@pytest.fixture
def base(quick_check_result):
    return quick_check_result("power", backend=BACKEND)


# --------------------------------------------------------------------------- the unperturbed check
def test_passes_quick(base):
    assert base.rows and base.passed, base.table()
    frame = base.frame()
    assert np.isfinite(frame[["empirical", "ci_low", "ci_high", "theoretical", "ratio", "tolerance"]].to_numpy()).all()
    # quick: κ ∈ {3, 100}, b = 1, λ = 0.5, γ = γ_max: per κ 3 directions × (T1, T1′, T2) + SGD once
    for name in ("T1", "T1'", "T2"):
        assert len(_tightness(base, name)) == 2 * 3
    assert len(_tightness(base, "SGD")) == 2
    assert len(_tightness(base, "RR")) == 2 * 4                # λ = 0 once and 3 teachers at λ = 0.5, per κ
    assert len(_tightness(base, "DL-T2")) == 2                 # λ ∈ {0, 0.5}
    assert len(_rows(base, "power:")) == 6
    assert len(base.rows) == 6 * 3 + 2 + 8 + 2 + 6
    for name in LABEL:
        row = _power_row(base, name)
        assert row["relation"] == "≤" and row["theoretical"] == 1.0 and 0.0 < row["empirical"] < 1.0
        # the power is the reciprocal of the smallest tightness where the worst point is the stationary one
        if name not in ("DL-T2",):
            tight = min(r["empirical"] for r in _tightness(base, name))
            assert row["empirical"] == pytest.approx(1.0 / tight, rel=1e-9)
    for r in base.rows:
        assert r["ci_low"] <= r["empirical"] <= r["ci_high"], r
    # the constants used are stated
    dl = _tightness(base, "DL-T2")
    assert all("μ=PL_path" in r["instance"] and "local at x*" in r["instance"] for r in dl)
    assert all("μ=λ_min(H)" in r["instance"] for r in _tightness(base, "T1"))
    assert any("PL_path" in n for n in base.notes)


def test_figure_present(base):
    fig, = base.figures
    assert fig["kind"] == "scatter" and fig["name"] == "claim14_tightness"
    data = fig["data"]
    assert len(data) == len(base.rows) - 6                     # one point per (instance, bound)
    assert (data["empirical"] <= data["theoretical"]).all()
    assert set(data["group"]) == set(LABEL.values())


def test_figure_renders(base, tmp_path):
    from kdsim.report import plots
    path = plots.render(base.figures[0], tmp_path)
    assert path.exists() and path.stat().st_size > 0


# --------------------------------------------------------------------------- the new formulas
@pytest.mark.parametrize("kappa", c14.KAPPAS)
def test_ls_problem_has_condition_number_kappa(kappa):
    p = c14.ls_problem(kappa)
    w = np.linalg.eigvalsh(c14.hessian(p))
    assert w[-1] == pytest.approx(1.0, rel=1e-12) and w[0] == pytest.approx(1.0 / kappa, rel=1e-10)
    c = th.constants(p, p.solution(), 1)
    assert c.condition_number == pytest.approx(kappa, rel=1e-10) and c.provenance["mu"] == "exact"


@pytest.mark.parametrize("kappa", c14.KAPPAS)
def test_rr_problem_has_condition_number_kappa(kappa):
    p = c14.rr_problem(kappa)
    bd = c12.rr_bound(p, p.solution(), 0.0, 0.5 / float(np.max(p.sample_smoothness())), 2)
    assert bd.applicable and bd.mu == pytest.approx(p.l2, rel=1e-12)
    assert bd.L / bd.mu == pytest.approx(kappa, rel=1e-12)


def test_eigen_teachers_lie_along_the_eigenvectors():
    p = c14.ls_problem(100.0)
    H = c14.hessian(p)
    w = np.linalg.eigvalsh(H)
    xs = p.solution()
    for direction, eig in (("top", w[-1]), ("bottom", w[0])):
        delta = c14.eigen_teacher(p, direction) - xs
        assert np.linalg.norm(delta) == pytest.approx(c14.TEACHER_DISTANCE, rel=1e-12)
        np.testing.assert_allclose(H @ delta, eig * delta, atol=1e-12)
        # the teacher bias ‖∇f(θ)‖ = eigenvalue × distance
        assert th.constants(p, xs + delta, 1).teacher_bias == pytest.approx(eig * c14.TEACHER_DISTANCE, rel=1e-8)
    r1, r2 = c14.eigen_teacher(p, "random"), c14.eigen_teacher(p, "random")
    np.testing.assert_array_equal(r1, r2)                       # seeded
    assert np.linalg.norm(r1 - xs) == pytest.approx(c14.TEACHER_DISTANCE, rel=1e-12)
    with pytest.raises(ValueError, match="direction"):
        c14.eigen_teacher(p, "sideways")


def test_time_grid():
    g = c14.time_grid(100.0)
    assert list(g[:8]) == [0, 1, 2, 3, 4, 5, 6, 7] and g[-1] == 128
    assert np.all(np.diff(g) > 0) and np.max(g[5:] / g[4:-1]) <= 1.25 + 1e-12


@pytest.mark.parametrize("b, lam", [(1, 0.5), (10, 0.8), (3, 0.0)])
def test_exact_curve_equals_the_recursion_and_its_stationary_solve(b, lam):
    p = c14.ls_problem(10.0)
    theta = c14.eigen_teacher(p, "random")
    c = th.constants(p, theta, b)
    gamma = th.t1(c, 1.0, lam).gamma_max
    curve = c14.exact_curve(p, theta, lam, gamma, b)
    ex = th.exact_moments(p, theta, lam, gamma, 128, b, 1)
    k = curve.times <= 128
    for name in ("dist2_opt", "subopt", "dist2_centre"):
        np.testing.assert_allclose(curve.record(name)[k], ex.record(name)[curve.times[k]], rtol=1e-11)
        # the last grid time is past 80/(γμ): the curve has reached the direct stationary solve
        assert curve.record(name)[-1] == pytest.approx(curve.stationary[name], rel=1e-9)
    assert curve.times[-1] >= c14.HORIZON / (gamma * c.mu)


def test_instance_power_is_the_smallest_factor():
    rng = np.random.default_rng(0)
    t = np.arange(50)
    contraction = 3.0 * 0.9 ** t
    observed = contraction * rng.random(50) + 0.2 * (1 - 0.8 ** t)
    N = 0.5
    c = c14.instance_power(t, observed, contraction, N)
    assert np.all(contraction[1:] + c * N >= observed[1:] - 1e-15)
    assert np.any(contraction[1:] + 0.999 * c * N < observed[1:])
    assert c14.instance_power(t, observed, contraction, N, stationary=0.4) == pytest.approx(0.8)
    assert c14.instance_power(t, 0.5 * contraction, contraction, N) == 0.0


# --------------------------------------------------------------------------- perturbations
def _scale(monkeypatch, name, factor):
    """Multiply one bound's neighbourhood by ``factor`` (the theory side only)."""
    if name == "RR":
        def scaled(*a, **k):
            bd = RR_BOUND(*a, **k)
            return dataclasses.replace(bd, neighbourhood=bd.neighbourhood * factor)
        monkeypatch.setattr(c12, "rr_bound", scaled)
        return
    key = "T2" if name == "DL-T2" else name
    orig = ORIGINAL[key]

    def scaled(*a, **k):
        bd = orig(*a, **k)
        return dataclasses.replace(bd, neighbourhood=bd.neighbourhood * factor)
    attr = {"T1": "t1", "T1'": "t1_prime", "T2": "t2", "SGD": "sgd_bound"}[key]
    monkeypatch.setattr(th, attr, scaled)


@pytest.mark.parametrize("name", list(LABEL))
def test_fails_when_the_neighbourhood_is_scaled_by_its_power(monkeypatch, base, rejudge, name):
    power = _power_row(base, name)["empirical"]
    _scale(monkeypatch, name, 0.9 * power)
    result = rejudge(base)
    row = _power_row(result, name)
    assert not row["passed"] and row["empirical"] == pytest.approx(1.0 / 0.9, rel=1e-6)
    monkeypatch.undo()
    _scale(monkeypatch, name, 1.1 * power)
    result = rejudge(base)
    assert _power_row(result, name)["passed"], result.table()
    failed = [r for r in result.rows if not r["passed"]]
    if name in ("T2", "DL-T2"):     # one function serves both: only the other one's rows may fail
        other = LABEL["DL-T2" if name == "T2" else "T2"]
        assert all(r["quantity"].startswith(other + ":") or r["instance"].split(" instances of ", 1)[-1]
                   .startswith(other + " (worst") for r in failed), result.table()
    else:
        assert not failed, result.table()


def test_fails_when_t1_rate_is_too_fast(monkeypatch, base, rejudge):
    # a contraction (1 − 8γμ)^t instead of (1 − γμ/2)^t, the neighbourhood at 1.01 × its power: the transient breaks it
    power = _power_row(base, "T1")["empirical"]
    orig = ORIGINAL["T1"]

    def fast(c, gamma, lam, x0=None):
        bd = orig(c, gamma, lam, x0)
        return dataclasses.replace(bd, rate=1.0 - 8.0 * gamma * c.mu, neighbourhood=bd.neighbourhood * 1.01 * power)
    monkeypatch.setattr(th, "t1", fast)
    result = rejudge(base)
    row = _power_row(result, "T1")
    assert not row["passed"] and row["empirical"] > 2.0
    assert [r for r in result.rows if not r["passed"]] == [row]     # the stationary tightness rows still pass


@pytest.mark.slow
def test_passes_full_size():
    result = c14.check()
    assert result.passed, result.table()
    assert len(_rows(result, "power:")) == 6
    assert len(_tightness(result, "T1")) == 4 * 2 * 3 * 2 * 2     # κ × b × direction × λ × γ
    assert len(_tightness(result, "RR")) == 4 * 2 * 4
    assert len(_tightness(result, "DL-T2")) == 8
