"""Figures and tables render from plain frames (no computation in the report layer)."""
import numpy as np
import pandas as pd
import pytest

from kdsim.checks.base import CheckResult, make_row
from kdsim.report import plots, tables

PNG = b"\x89PNG"


def _is_png(path):
    return path.exists() and path.read_bytes()[:4] == PNG and path.stat().st_size > 5000


def test_render_every_kind(tmp_path):
    lam = np.linspace(0, 1, 11)
    sweep = pd.DataFrame({"instance": "i", "lam": lam, "mean": 1 + (lam - 0.3) ** 2,
                          "ci_low": 0.9 + (lam - 0.3) ** 2, "ci_high": 1.1 + (lam - 0.3) ** 2, "method": "MC"})
    grid = pd.DataFrame([(g, r, g / (g + r)) for g in (0.01, 0.1) for r in (0.5, 1.0)], columns=["γ", "r", "λ_opt"])
    scat = pd.DataFrame({"instance": ["a", "b"], "theoretical": [1.0, 2.0], "empirical": [1.1, 1.9],
                         "ci_low": [1.0, 1.8], "ci_high": [1.2, 2.0]})
    figures = [
        {"kind": "lambda_sweep", "name": "sweep", "data": sweep, "title": "t",
         "markers": {"λ̂": 0.25, "λ*_T1": 0.2}, "optimum": (0.3, 0.28, 0.32)},
        {"kind": "heatmap", "name": "heat", "data": grid, "title": "t", "x": "γ", "y": "r", "value": "λ_opt"},
        {"kind": "scatter", "name": "scatter", "data": scat, "title": "t"},
    ]
    for fig in figures:
        assert _is_png(plots.render(fig, tmp_path))
    with pytest.raises(ValueError, match="figure kind"):
        plots.render({"kind": "pie", "name": "x", "data": grid, "title": "t"}, tmp_path)


def test_convergence_plot_and_tables(tmp_path):
    steps = np.arange(0, 100, 10)
    curve = pd.DataFrame({"instance": "i", "method": "KD", "step": steps, "quantity": "‖x_t − x*‖²",
                          "mean": 0.9 ** steps, "ci_low": 0.8 * 0.9 ** steps, "ci_high": 1.2 * 0.9 ** steps})
    assert _is_png(plots.convergence_plot([curve], tmp_path / "c.png", "title"))
    res = CheckResult(7, "demo", "statement", rows=[make_row(7, "i", "q", 1.0, 2.0, "≤")])
    paths = tables.write_tables(res, tmp_path)
    assert "| 7 | i | q |" in paths["md"].read_text()
    assert "\\begin{tabular}" in paths["tex"].read_text()
    assert pd.read_csv(paths["csv"]).passed.all()
    tables.write_summary([res], tmp_path)
    assert "PASS" in (tmp_path / "summary.md").read_text()


def test_check_title_in_words():
    res = CheckResult(2, "optimal_teacher", "Claim 2 (THEORY.md §8): the optimal teacher gives full variance reduction.")
    assert plots.check_title(res) == "Claim 2: the optimal teacher gives full variance reduction"
    curve = pd.DataFrame({"instance": "i", "method": "KD", "step": [0, 1], "quantity": "q", "mean": [1.0, 0.5],
                          "ci_low": [1.0, 0.4], "ci_high": [1.0, 0.6]})
    curve.attrs["title"] = "Claim 2: KD converges to x*, SGD stalls (n=200, d=5)"
    res.curves.append(curve)
    assert plots.check_title(res) == curve.attrs["title"]


def test_render_writes_the_requested_format(tmp_path):
    lam = np.linspace(0, 1, 5)
    data = pd.DataFrame({"instance": "i", "lam": lam, "mean": 1 + lam, "ci_low": 0.9 + lam, "ci_high": 1.1 + lam})
    path = plots.render({"kind": "lambda_sweep", "name": "s", "data": data, "title": "t"}, tmp_path, fmt="svg")
    assert path.name == "s.svg" and path.read_bytes()[:5] == b"<?xml"
    with pytest.raises(ValueError, match="format"):
        plots.render({"kind": "lambda_sweep", "name": "s", "data": data, "title": "t"}, tmp_path, fmt="gif")


def test_markdown_notes_are_grouped(tmp_path):
    notes = [f"cell {k}: T2 not applicable, γ_max = 0.03 (γ = 0.1)" for k in range(5)] + ["one of a kind"]
    res = CheckResult(6, "bounds", "statement", rows=[make_row(6, "i", "q", 1.0, 2.0, "≤")], notes=notes)
    md = tables.write_tables(res, tmp_path)["md"].read_text()
    assert md.count("not applicable") == 1 and "5 instances: cell 0 | cell 1" in md and "- one of a kind" in md


def test_markdown_escapes_pipes_inside_cells():
    frame = pd.DataFrame({"quantity": ["max |MC − exact| / SE"], "value": [1.5]})
    text = tables._markdown(frame)
    row = text.splitlines()[2]
    assert row.count("|") - row.count(r"\|") == 3            # three cell borders, the pipes inside escaped
    assert r"\|MC − exact\|" in row
