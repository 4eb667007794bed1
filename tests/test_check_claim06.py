"""Claim 6 (bounds on every instance of a sweep): passes at reduced size, fails when the theory is perturbed."""
import dataclasses

import numpy as np
import pytest

import kdsim.theory as th
from kdsim.checks import claim06_bounds as c6

NUMERIC = ["empirical", "ci_low", "ci_high", "theoretical", "ratio"]


@pytest.fixture
def quick_result(quick_check_result):
    return quick_check_result("bounds")


def test_quick_passes_on_every_bound(quick_result):
    r = quick_result
    frame = r.frame()
    assert r.passed, r.table()
    assert not frame[NUMERIC].isna().any().any()
    assert np.isfinite(frame[NUMERIC].to_numpy()).all()
    # every bound has exact (least squares), Monte Carlo and tightness rows
    for label in ("T1", "T1′", "T2", "SGD"):
        rows = frame[frame["quantity"].str.startswith(label + ":")]
        for kind in ("exact", "Monte Carlo", "tightness"):
            assert rows["quantity"].str.contains(kind).any(), (label, kind)
    assert frame["quantity"].str.contains("shift").any()
    # softmax appears, with Monte Carlo rows only and μ "local at x*"
    soft = frame[frame["instance"].str.startswith("softmax")]
    assert len(soft) and not soft["quantity"].str.contains("exact").any()
    assert soft["instance"].str.contains("local at x\\*").all()
    assert frame[frame["instance"].str.startswith("LS")]["instance"].str.contains("exact").all()


def test_bounds_outside_their_condition_are_notes_not_rows(quick_result):
    r = quick_result
    na = [n for n in r.notes if "not applicable, γ_max =" in n]
    assert na, r.notes
    frame = r.frame()
    for note in na:
        # the instance text may hold ": " itself (softmax: "(= α: global)"); the bound's label is after the last one
        head, _ = note.split(" not applicable", 1)
        inst, label = head.rsplit(": ", 1)
        rest = note[len(inst) + 2:]
        gmax = float(rest.split("γ_max = ")[1].split(" ")[0])
        gamma = float(rest.split("γ = ")[-1].rstrip(")"))
        assert gamma > gmax
        assert (frame["instance"] == inst).any(), inst          # the note names an instance of the table
        assert not frame[(frame["instance"] == inst) & frame["quantity"].str.startswith(label + ":")].shape[0]


def test_scatter_points_lie_below_the_diagonal(quick_result):
    fig, = [f for f in quick_result.figures if f["kind"] == "scatter"]
    data = fig["data"]
    assert len(data) and set(data.columns) >= {"instance", "theoretical", "empirical", "ci_low", "ci_high"}
    assert (data["ci_high"] <= data["theoretical"]).all()


def test_gamma_grid_is_inside_each_condition():
    p = c6.settings(quick=False)[1].problem
    c = th.constants(p, p.solution(), batch_size=8)
    grid = c6.gamma_grid(c, (0.5, 1.0))
    gmax = {name: b.gamma_max for name, b in th.all_bounds(c, 1.0, 0.0).items()}
    assert len(grid) == 2 * len({round(g, 12) for g in gmax.values()})
    for gamma, text in grid:
        names = text.split("γ_max(")[1].split(")")[0].split("/")
        assert all(gamma <= gmax[n.replace("′", "'")] * (1 + 1e-12) for n in names)


def test_fails_when_t1_neighbourhood_shrinks(monkeypatch, quick_check_result, rejudge):
    base = quick_check_result("bounds")
    orig = th.t1

    def shrunk(*a, **k):
        b = orig(*a, **k)
        terms = {key: 0.01 * v for key, v in b.neighbourhood_terms.items()}
        return dataclasses.replace(b, neighbourhood=0.01 * b.neighbourhood, neighbourhood_terms=terms)

    monkeypatch.setattr(th, "t1", shrunk)
    r = rejudge(base)
    bad = [row for row in r.rows if not row["passed"]]
    assert bad and not r.passed
    assert all(row["quantity"].startswith("T1:") for row in bad)
    assert any("tightness" in row["quantity"] for row in bad)
    assert any("Monte Carlo" in row["quantity"] and "max_" in row["quantity"] for row in bad)


def test_fails_when_t1_prime_rate_is_too_fast(monkeypatch, quick_check_result, rejudge):
    # 1 − 4γμ is faster than the true mean-square rate ρ(𝒯) ≈ 1 − 2γμ: the transient escapes the bound
    base = quick_check_result("bounds")
    orig = th.t1_prime

    def fast(c, gamma, lam, x0=None):
        b = orig(c, gamma, lam, x0)
        return dataclasses.replace(b, rate=1.0 - 4.0 * gamma * c.mu)

    monkeypatch.setattr(th, "t1_prime", fast)
    r = rejudge(base)
    bad = [row for row in r.rows if not row["passed"]]
    assert bad and all(row["quantity"].startswith("T1′:") for row in bad)
    assert any("exact" in row["quantity"] for row in bad) and any("Monte Carlo" in row["quantity"] for row in bad)


def test_quick_passes_with_numba():
    pytest.importorskip("numba")
    r = c6.check(quick=True, seeds=8, backend="numba")
    assert r.passed, r.table()


@pytest.mark.slow
def test_full_size_passes():
    r = c6.check()
    assert r.passed, r.table()
    assert len(r.rows) > 200
