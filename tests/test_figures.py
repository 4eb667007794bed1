"""Paper-ready figures and tables: what a user study found wrong stays fixed.

* Monte Carlo and theory curves of one λ share a colour (solid with its band, dashed theory).
* Legends sit outside every data axis (below the panels, or beside the axis), never on the data.
* Figures fit a page: at most 8.5 inches wide, at most three panels a row; PNG, PDF and SVG.
* Maths is set with mathtext: no text of a figure holds "λ*_T1", "x_t", "σ²_*" … literally.
* More than six λ get a colour bar, not 2 × 21 legend entries; ``max_figures`` reports what it skips.
* The round-off floor of a curve that converges to 0 is drawn and named.
* Every .tex kdsim writes is pure ASCII and, where pdflatex is installed, compiles.
"""
import re
import shutil
import subprocess
import unicodedata
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colorbar import Colorbar  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from kdsim.checks.base import CheckResult, make_row  # noqa: E402
from kdsim.report import plots, tables  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_WIDTH_IN = 8.5
#: literal spellings of maths that must not reach a figure outside $…$
RAW_MATH = ("λ*_", "x_t", "x_T", "σ²_", "L_max", "γ_max", "λ_opt", "‖x", "x*‖", "_T1", "_T2", "λ̂", "ρ̂")


# ----------------------------------------------------------------------------- helpers
def _curves(n_instances=5, lams=(0.0, 0.4, 0.8), steps=60, theory=True, floor=None):
    """Claim-4-like curves: per instance and λ a Monte Carlo curve with its band and an exact one."""
    t = np.arange(0, 10 * steps, 10)
    frames = []
    for i in range(n_instances):
        inst = f"least squares n=200 d=5 κ=10, θ at r=0.3, x0=0, b={1 + 9 * i}, γ={0.1 / (i + 1):.3g}"
        for lam in lams:
            exact = 0.05 + lam ** 2 * 0.1 + 5.0 * 0.97 ** t
            mc = exact * (1 + 0.05 * np.sin(t + lam))
            common = {"instance": inst, "series": f"λ = {lam:g}", "series_value": lam, "quantity": "‖x_t − x*‖²",
                      "step": t}
            frames.append(pd.DataFrame({**common, "method": "Monte Carlo", "kind": "mc", "mean": mc,
                                        "ci_low": 0.9 * mc, "ci_high": 1.1 * mc}))
            if theory:
                frames.append(pd.DataFrame({**common, "method": "exact recursion (§5)", "kind": "theory",
                                            "mean": exact, "ci_low": exact, "ci_high": exact}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(title="Claim 4: least-squares KD follows the exact recursion of §5 (n=200, d=5, κ=10)",
                     series_name="KD weight λ")
    if floor is not None:
        out.attrs["floor"] = {"value": floor, "short": "float64 round-off",
                              "label": "float64 round-off: one ulp from x* in every coordinate"}
    return [out]


def _sweep_data():
    lam = np.linspace(0, 1, 21)
    mean = 0.03 + 0.04 * (lam - 0.5) ** 2
    mc = pd.DataFrame({"instance": "i", "method": "Monte Carlo plateau (quadratic in λ)", "lam": lam, "mean": mean,
                       "ci_low": 0.9 * mean, "ci_high": 1.1 * mean})
    ex = pd.DataFrame({"instance": "i", "method": "exact", "lam": lam, "mean": mean, "ci_low": mean, "ci_high": mean})
    return pd.concat([mc, ex], ignore_index=True)


def _lambda_sweep():
    return plots.lambda_sweep_figure(_sweep_data(), "Claim 5: stationary error against λ; n=200, d=5, b=1, γ=0.1",
                                     markers={"λ̂": 0.62, "λ*_T1": 0.31, "λ*_T2": 0.81, "λ*_published": 0.75,
                                              "exact λ_opt": 0.5},
                                     optimum=(0.5, 0.48, 0.52), ylabel="plateau E‖x_∞ − x*‖²")


def _scatter():
    data = pd.DataFrame({"instance": ["T1", "T2", "T1′", "SGD"], "theoretical": [1.0, 0.5, 0.2, 0.1],
                         "empirical": [0.4, 0.2, 0.1, 0.05], "ci_low": [0.3, 0.1, 0.05, 0.04],
                         "ci_high": [0.5, 0.3, 0.15, 0.06], "group": ["LS n=100 d=5 κ=3 b=1"] * 2 + ["softmax"] * 2,
                         "marker": ["T1 (E‖x_t − x*‖²)", "T2 (E[f(x_t) − f*])", "T1′ (E‖x_t − x_λ‖²)",
                                    "SGD (E‖x_t − x*‖²)"]})
    return plots.scatter_figure(data, "Claim 6: plateau against neighbourhood", xlabel="neighbourhood of the bound",
                                ylabel="observed plateau")


def _heatmap():
    grid = pd.DataFrame([(g, r, g / (g + r * r)) for g in (0.01, 0.02, 0.04) for r in (0.1, 0.3, 1.0)],
                        columns=["γ", "‖θ − x*‖", "λ_opt"])
    return plots.heatmap_figure(grid, "Claim 5: exact λ_opt over (γ, ‖θ − x*‖)", "γ", "‖θ − x*‖", "λ_opt",
                                xlabel="step size γ", ylabel="teacher distance ‖θ − x*‖",
                                value_label=r"exact $\lambda_{\mathrm{opt}}$")


FIGURES = {"convergence": lambda: plots.convergence_figure(_curves()),
           "convergence_floor": lambda: plots.convergence_figure(_curves(2, floor=1e-31)),
           "lambda_sweep": _lambda_sweep, "scatter": _scatter, "heatmap": _heatmap}


@pytest.fixture(params=list(FIGURES))
def figure(request):
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a layout or glyph warning is a failure
        fig = FIGURES[request.param]()
        fig.canvas.draw()
    yield request.param, fig
    plt.close(fig)


def _data_axes(fig):
    """The axes that hold data (not colour bars, not hidden)."""
    bars = {a for a in fig.axes if isinstance(getattr(a, "_colorbar", None), Colorbar)}
    return [a for a in fig.axes if a.get_visible() and a not in bars and a.get_label() != "<colorbar>"]


def _without_math(text):
    return re.sub(r"\$[^$]*\$", "", text)


# ----------------------------------------------------------------------------- figures
def test_monte_carlo_and_theory_of_one_lambda_share_a_colour():
    fig = plots.convergence_figure(_curves(3))
    for ax in _data_axes(fig):
        by_series = {}
        for line in ax.get_lines():
            if line.get_gid():
                series, method = line.get_gid().split("|")
                by_series.setdefault(series, {})[method] = (matplotlib.colors.to_hex(line.get_color()),
                                                            line.get_linestyle())
        assert len(by_series) == 3
        colours = set()
        for series, methods in by_series.items():
            (mc_colour, mc_style), (ex_colour, ex_style) = methods["Monte Carlo"], methods["exact recursion (§5)"]
            assert mc_colour == ex_colour, series
            assert mc_style == "-" and ex_style == "--"
            colours.add(mc_colour)
        assert len(colours) == 3                       # and the λ differ
        assert ax.collections                          # the Monte Carlo bands
    plt.close(fig)


def test_claim_curves_pair_monte_carlo_with_theory(quick_check_result):
    # claims 4 and 9 label the colour (series) and the kind of each curve
    for name in ("ls_dynamics", "corrected_kd"):
        result = quick_check_result(name)
        frame = pd.concat(result.curves, ignore_index=True)
        assert {"series", "method", "kind"} <= set(frame.columns)
        for (_, series), g in frame.groupby(["instance", "series"]):
            assert set(g["kind"]) == {"mc", "theory"}, (name, series)
        assert plots.check_title(result).startswith(f"Claim {result.claim}:")


def test_legends_lie_outside_the_data(figure):
    name, fig = figure
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert legends or name == "heatmap", name                 # a heatmap has its colour bar only
    renderer = fig.canvas.get_renderer()
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in _data_axes(fig):
            assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())


def test_figures_fit_a_page(figure):
    name, fig = figure
    width, height = fig.get_size_inches()
    assert width <= MAX_WIDTH_IN and height <= 11.0, (name, width, height)
    columns = {round(ax.get_position().x0, 3) for ax in _data_axes(fig)}
    assert len(columns) <= plots.MAX_COLUMNS


def test_five_panels_make_a_grid_of_at_most_three_columns():
    assert plots.grid_shape(5) == (2, 3) and plots.grid_shape(4) == (2, 2) and plots.grid_shape(2) == (1, 2)
    fig = plots.convergence_figure(_curves(5))
    assert len(_data_axes(fig)) == 5 and fig.get_size_inches()[0] <= MAX_WIDTH_IN
    plt.close(fig)


def test_labels_are_mathtext(figure):
    name, fig = figure
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
    assert any("$" in t for t in texts), name
    for text in texts:
        plain = _without_math(text)
        for raw in RAW_MATH:
            assert raw not in plain, (name, text)


def test_mathtext_converter():
    m = plots.mathtext
    assert m("λ*_T1") == r"${\lambda}^*_{\mathrm{T1}}$"
    assert m("‖x_t − x*‖²") == r"$\|x_t - x^*\|^2$"
    assert m("σ²_*") == r"${\sigma}^2_{*}$" and m("L_max") == r"$L_{\max}$"
    assert m("kd_loss λ = 0.7").startswith("kd_loss ")                  # a name stays text
    assert m(r"already $x$") == r"already $x$"
    fig, ax = plt.subplots()
    for text in ("λ̂", "x̃", "Θ̄ = M*", "1/(2L_max),", "(x*)", "𝓛(b)", "γ=1·γ_max(T1/SGD)=0.02;"):
        ax.text(0, 0, m(text))
    fig.canvas.draw()                                                      # every one parses
    plt.close(fig)


def test_theory_markers_sit_above_the_bands():
    fig = _lambda_sweep()
    ax = _data_axes(fig)[0]
    bands = [c.get_zorder() for c in ax.collections] + [p.get_zorder() for p in ax.patches]
    markers = [line for line in ax.get_lines() if line.get_linestyle() != "None" and len(line.get_xdata()) == 2
               and line.get_xdata()[0] == line.get_xdata()[1]]             # the vertical lines
    assert len(markers) == 5 and min(m.get_zorder() for m in markers) > max(bands)
    styles = {(matplotlib.colors.to_hex(m.get_color()), str(m.get_linestyle())) for m in markers}
    assert len(styles) == 5                                                # each distinguishable
    plt.close(fig)


def test_round_off_floor_is_drawn_and_named():
    fig = plots.convergence_figure(_curves(2, floor=1e-31))
    for ax in _data_axes(fig):
        assert any(line.get_linestyle() == ":" and np.allclose(line.get_ydata(), 1e-31) for line in ax.get_lines())
        assert any(t.get_text() == "float64 round-off" for t in ax.texts)
    assert any("round-off" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)


def test_claim2_curves_carry_their_round_off_floor(quick_check_result):
    result = quick_check_result("optimal_teacher")
    floors = [c.attrs.get("floor") for c in result.curves]
    assert all(f is not None and 0 < f["value"] < 1e-25 for f in floors)


def test_many_lambdas_get_a_colour_bar():
    lams = np.round(np.linspace(0, 1, 21), 2)
    fig = plots.convergence_figure(_curves(1, lams=lams))
    bars = [a for a in fig.axes if a.get_ylabel() == plots.mathtext("KD weight λ")]
    assert len(bars) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("lambda" in lab and "=" in lab for lab in labels) and len(labels) <= 4, labels
    plt.close(fig)
    few = plots.convergence_figure(_curves(1, lams=(0.0, 0.5)))
    assert len(few.axes) == 1 and len(few.legends[0].get_texts()) == 4
    plt.close(few)


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_formats_and_dpi(tmp_path, fmt, magic):
    path = plots.convergence_plot(_curves(2), tmp_path / "c.png", fmt=fmt, dpi=120)
    assert path.suffix == f".{fmt}" and path.read_bytes()[:len(magic)] == magic
    fig = {"kind": "lambda_sweep", "name": "sweep", "data": _sweep_data(), "title": "t", "markers": {"λ̂": 0.5}}
    assert plots.render(fig, tmp_path, fmt=fmt).read_bytes()[:len(magic)] == magic
    with pytest.raises(ValueError, match="format"):
        plots.convergence_plot(_curves(1), tmp_path / "c.png", fmt="jpg")
    with pytest.raises(ValueError, match="dpi"):
        plots.convergence_plot(_curves(1), tmp_path / "c.png", dpi=-3)


def test_png_resolution(tmp_path):
    low = plots.convergence_plot(_curves(1), tmp_path / "low.png", dpi=50)
    high = plots.convergence_plot(_curves(1), tmp_path / "high.png")
    size = lambda p: int.from_bytes(p.read_bytes()[16:20], "big")          # noqa: E731 (PNG IHDR width)
    assert size(low) == round(plots.PAGE_WIDTH * 50) and size(high) == round(plots.PAGE_WIDTH * plots.DEFAULT_DPI)


# ----------------------------------------------------------------------------- kdsim plot
SPEC = """
[sweep]
name = "many_lams"
backend = "numpy"
master_seed = 1
rate_boot = 10

[problem]
family = "least_squares"
n = 20
d = 2
cond = 3.0

[[teachers]]
kind = "at_distance"
r = 0.5

[grid]
lams = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
step_fraction = [0.25, 0.5]
batch_size = 1
estimator = "kd"
seeds = 4
steps = 40
record_every = 4
"""


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    from kdsim import sweeps

    out = tmp_path_factory.mktemp("many_lams")
    spec = out / "spec.toml"
    spec.write_text(SPEC)
    sweeps.run(str(spec), out=out / "results", progress=False)
    return out / "results"


def test_sweep_figures_colour_bar_titles_and_skipped(sweep_store, tmp_path, monkeypatch):
    from kdsim.sweeps import report

    drawn = []
    save = plots._save

    def capture(fig, path, fmt=None, dpi=None):
        fig.canvas.draw()
        drawn.append((Path(path).name, fig.get_size_inches()[0], [a.get_ylabel() for a in fig.axes],
                      [t.get_text() for t in fig.findobj(Text)], fig.get_suptitle()))
        return save(fig, path, fmt, dpi)

    monkeypatch.setattr(plots, "_save", capture)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # no "Tight layout not applied"
        every = report.plot(sweep_store, figures=tmp_path / "all", max_figures=100)
    assert not every.skipped and every.summary() == ""
    kinds = {p.name.split("_")[0] for p in every}
    assert kinds == {"plateau", "lambda", "convergence"}
    for name, width, ylabels, texts, title in drawn:
        assert width <= MAX_WIDTH_IN, name
        assert "n=20" in title and "b=1" in title, title
        for text in texts:
            for raw in RAW_MATH:
                assert raw not in _without_math(text), (name, text)
        if not name.startswith("lambda"):            # 9 λ: a colour bar, no λ legend
            assert plots.mathtext("KD weight λ") in ylabels, name
            assert not any(re.fullmatch(r"\$\{\\lambda\}\$ = [\d.]+", t) for t in texts), name
    few = report.plot(sweep_store, figures=tmp_path / "few", max_figures=3)
    assert len(few) == 3 and len(few.skipped) == len(every) - 3
    assert {p.name.split("_")[0] for p in few} == kinds                   # every kind gets a turn
    assert f"wrote 3 of {len(every)} figures" in few.summary() and "convergence" in few.summary()
    pdfs = report.plot(sweep_store, figures=tmp_path / "pdf", max_figures=2, fmt="pdf")
    assert all(p.suffix == ".pdf" and p.read_bytes()[:4] == b"%PDF" for p in pdfs)


def test_bounds_table_burn_in_and_converged_flag(sweep_store):
    from kdsim.sweeps import report

    bounds = report.table(sweep_store, "bounds")
    applicable = bounds[bounds["status"].str.startswith("applicable")]
    assert len(applicable)
    # the worst ratio is taken after the burn-in, not at t = 0 where every bound is an equality
    assert (applicable["burn_in_step"] > 0).all()
    assert (applicable["max_mean_over_bound"] < 0.99).all()
    assert bounds["converged"].dtype == "boolean" and bounds["converged"].notna().any()
    lambdas = report.table(sweep_store, "lambdas")
    assert "converged" in lambdas and lambdas["converged"].dtype == "boolean"


def test_plateau_still_in_its_transient_is_flagged():
    from kdsim.sweeps.report import plateau_converged

    steps = np.arange(0, 200, 4)

    def group(values, rate, start):
        g = pd.DataFrame({"step": steps, "dist2_opt_mean": values})
        first = pd.Series({"plateau_dist2_opt_mean": values[steps >= start].mean(),
                           "plateau_dist2_opt_ci_low": values[steps >= start].mean() - 1e-3,
                           "plateau_dist2_opt_ci_high": values[steps >= start].mean() + 1e-3,
                           "plateau_start_step": start, "rate": rate, "rate_ci_low": rate, "rate_ci_high": rate,
                           "rate_window_start": 0, "rate_window_end": 60})
        return g, first

    slow = 0.1 + 5.0 * 0.99 ** steps            # still decaying where the window starts (t = 100)
    g, first = group(slow, 0.99, 100)
    assert plateau_converged(g, "dist2_opt", first) is False
    g, first = group(0.1 + 5.0 * 0.8 ** steps, 0.8, 100)
    assert plateau_converged(g, "dist2_opt", first) is True
    g, first = group(np.full(steps.size, 0.1), np.nan, 100)               # no fitted rate, no drift
    assert plateau_converged(g, "dist2_opt", first) is True


# ----------------------------------------------------------------------------- tables
def _all_characters():
    """Every non-ASCII character of kdsim's sources: what a table's instance or quantity can hold."""
    chars = set()
    for path in (ROOT / "kdsim").rglob("*.py"):
        chars |= {c for c in path.read_text(encoding="utf-8") if ord(c) > 127}
    # a combining accent goes on a letter (λ̂ = λ + U+0302)
    return " ".join(f"x{c}" if unicodedata.combining(c) else c for c in sorted(chars))


def _unicode_result():
    chars = _all_characters()
    rows = [make_row(4, "least squares n=200 d=5 κ=10, θ at r=0.3, b=1, γ=0.0969, λ=0.4",
                     "plateau E‖x_∞ − x*‖² vs λ²D² + (1 − λ)²MSE_SGD", 0.05, 0.051, "≈", tolerance=0.01),
            make_row(4, "T1′, 𝓛(b), λ̂, x̃, Θ̄, σ²_*(λ, θ) ≤ 1e-20 & 50 % $ # _ { } ~ ^ \\ < > |", "every char: " + chars,
                     1e-25, 1e-20, "≤"),
            make_row(4, "x", "ratio ≥ 1", 2.0, 1.0, "≥")]
    return CheckResult(4, "ls_dynamics", "Claim 4 (THEORY.md §8): least-squares KD — exact dynamics", rows=rows,
                       notes=[f"inst {k}: T2 not applicable, γ_max = 0.03 (γ = {0.1 * k:g})" for k in range(1, 5)])


def test_every_tex_is_ascii(tmp_path):
    paths = tables.write_tables(_unicode_result(), tmp_path)
    tex = paths["tex"].read_bytes()
    assert tex.isascii() and b"\\begin{tabular}" in tex
    text = tex.decode()
    for macro in (r"\ensuremath{\gamma}", r"\ensuremath{\lambda}", r"\ensuremath{\|}", r"\ensuremath{\kappa}",
                  r"\ensuremath{\le}", r"\ensuremath{\hat{\lambda}}", r"\ensuremath{\mathcal{L}}"):
        assert macro in text, macro
    for path in tmp_path.glob("*.tex"):
        assert path.read_bytes().isascii(), path


def test_latex_escape_names_an_unmapped_character():
    assert tables.latex_escape("a_b & 50%") == r"a\_b \& 50\%"
    with pytest.raises(ValueError, match=r"U\+263A .*LATEX_MATH"):
        tables.latex_escape("smile ☺")
    assert tables.latex_escape(_all_characters()).isascii()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_tex_table_compiles(tmp_path):
    paths = tables.write_tables(_unicode_result(), tmp_path)
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
                   f"\\tiny\n\\input{{{paths['tex'].name}}}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").read_bytes()[:4] == b"%PDF"


def test_group_notes():
    notes = [f"LS b=1; λ={lam}; γ=0.2: T2 not applicable, γ_max = 0.03 (condition γ ≤ μ/(4L𝓛(b)); γ = {g})"
             for lam, g in ((0, 0.2), (0.5, 0.2), (1, 0.1))]
    notes += ["softmax: rate fit failed (no transient)", "LS b=1; λ=1: T1′ neighbourhood is 0"]
    grouped = tables.group_notes(notes)
    assert len(grouped) == 3
    assert grouped[0].startswith("T2 not applicable, γ_max = 0.03 (condition γ ≤ μ/(4L𝓛(b)); γ = …) — 3 instances: ")
    assert "LS b=1; λ=0; γ=0.2 (γ = 0.2) | LS b=1; λ=0.5; γ=0.2 (γ = 0.2) | LS b=1; λ=1; γ=0.2 (γ = 0.1)" in grouped[0]
    assert grouped[1:] == notes[3:]
    assert tables.group_notes(["same", "same", "other"]) == ["same (×2)", "other"]
    assert tables.group_notes([]) == []


def test_markdown_table_groups_notes(tmp_path):
    md = tables.write_tables(_unicode_result(), tmp_path)["md"].read_text()
    assert md.count("T2 not applicable") == 1 and "4 instances" in md


def test_mathtext_groups_superscript_runs():
    from matplotlib.mathtext import MathTextParser
    from kdsim.report.plots import mathtext
    label = "bias ½λ²·gᵀH⁻¹g + noise γσ²_*(λ,θ)/4"
    text = mathtext(label)
    assert r"g^{\top}H^{-1}g" in text
    parser = MathTextParser("agg")
    for part in text.split("$")[1::2]:
        parser.parse(f"${part}$", 72)                  # raises on invalid mathtext
