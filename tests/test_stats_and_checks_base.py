"""Confidence intervals, rate fits and the check-row logic."""
import numpy as np
import pytest
from scipy import stats as st

from kdsim import stats
from kdsim.checks.base import CheckResult, make_row


def test_mean_ci_matches_scipy_t_interval():
    x = np.random.default_rng(0).standard_normal(50)
    m, lo, hi, n = stats.mean_ci(x, level=0.95)
    want = st.t.interval(0.95, 49, loc=x.mean(), scale=st.sem(x))
    assert n == 50 and m == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx(want, rel=1e-12)


def test_mean_ci_skips_nan_and_handles_one_value():
    m, lo, hi, n = stats.mean_ci(np.array([[1.0, np.nan], [3.0, 2.0]]), axis=0)
    np.testing.assert_allclose(m, [2.0, 2.0])
    assert n.tolist() == [2, 1] and lo[1] == hi[1] == 2.0


def test_mean_ci_coverage():
    # 2000 samples of size 20 from N(0,1): the 90% interval covers 0 in 90% ± 4 SE of cases
    x = np.random.default_rng(1).standard_normal((20, 2000))
    _, lo, hi, _ = stats.mean_ci(x, axis=0, level=0.9)
    cover = np.mean((lo <= 0) & (0 <= hi))
    assert abs(cover - 0.9) < 4 * np.sqrt(0.09 / 2000)


def test_log_linear_rate():
    t = np.arange(0, 100, 10)
    assert stats.log_linear_rate(t, 3.0 * 0.97 ** t) == pytest.approx(0.97, rel=1e-12)
    v = np.r_[0.9 ** t[:5], np.full(5, 1e-40)]
    assert stats.log_linear_rate(t, v, floor=1e-30) == pytest.approx(0.9, rel=1e-12)
    with pytest.raises(ValueError, match="two"):
        stats.log_linear_rate(t, np.zeros(10))
    with pytest.raises(ValueError, match="level"):
        stats.mean_ci(np.ones(3), level=1.0)


@pytest.mark.parametrize("emp,theo,rel,tol,lo,hi,want", [
    (1.0, 1.0, "≈", 0.0, None, None, True),
    (1.0 + 1e-9, 1.0, "≈", 1e-10, None, None, False),
    (0.5, 1.0, "≤", 0.0, 0.4, 0.9, True),
    (0.5, 1.0, "≤", 0.0, 0.4, 1.1, False),      # the upper CI limit decides
    (2.0, 1.0, "≥", 0.0, 1.5, 2.5, True),
    (2.0, 1.0, "≥", 0.0, 0.9, 2.5, False),
    (float("nan"), 1.0, "≤", 0.0, None, None, False),   # NaN never passes
])
def test_make_row(emp, theo, rel, tol, lo, hi, want):
    row = make_row(1, "inst", "q", emp, theo, rel, tol, lo, hi)
    assert row["passed"] is want


def test_ratio_and_result():
    assert make_row(1, "i", "q", 2e-11, 0.0, "≤", 1e-10)["ratio"] == pytest.approx(0.2)
    assert make_row(1, "i", "q", 3.0, 2.0, "≤")["ratio"] == 1.5
    with pytest.raises(ValueError, match="relation"):
        make_row(1, "i", "q", 1.0, 1.0, "<")
    res = CheckResult(1, "x", "s", rows=[make_row(1, "i", "q", 1.0, 2.0, "≤")])
    assert res.passed and "PASS" in res.verdict()
    res.rows.append(make_row(1, "i", "q", 3.0, 2.0, "≤"))
    assert not res.passed and "1/2" in res.verdict()
    assert not CheckResult(1, "x", "s").passed   # a check with no rows cannot pass
