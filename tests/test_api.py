"""The researcher-facing API: lambda_curve, paired_comparison, SimResult/SimSummary summaries,
plots and reprs, problem and teacher reprs, and theory.all_lambdas with λ_opt."""
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import kdsim  # noqa: E402
from kdsim import stats, teachers, theory  # noqa: E402
from kdsim.api import THEORY_LABELS  # noqa: E402
from kdsim.problems import synthetic  # noqa: E402
from kdsim.results import SUMMARY_COLUMNS  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def ls():
    p = synthetic.least_squares(n=100, d=5, cond=10.0, seed=0)
    return p, teachers.at_distance(p, 0.3, seed=1)


@pytest.fixture(scope="module")
def run(ls):
    p, t = ls
    return kdsim.simulate(p, t.theta, [0.0, 0.3, 1.0], 0.1, 400, 64, record_every=20, backend="numpy")


# ------------------------------------------------------------------ lambda_curve
def test_lambda_curve_interval_contains_exact_lambda_opt(ls):
    """On least squares the plateau of E‖x_t − x*‖² is λ²D² + (1 − λ)²MSE_SGD (docs/theory.md §5),
    minimised at theory.lambda_opt. The run is long enough that the finite-horizon optimum
    equals the stationary one to far below the interval's width (checked with the exact
    recursion), so the interval itself is the tolerance."""
    p, t = ls
    step, steps = 0.1, 3000           # 1/(γμ) = 100 steps: the transient is e^-15 of x0's error by T/2
    lams = np.linspace(0.0, 0.8, 9)
    curve = kdsim.lambda_curve(p, t, lams, step, steps, 400, at="plateau", level=0.99)
    lam_opt = theory.lambda_opt(p, t.theta, step, 1)
    e = curve.empirical
    assert curve.theory["lambda_opt"] == (pytest.approx(lam_opt, rel=1e-12), "derived")
    # the deterministic bias of a finite run: argmin of the exact plateau at the same records
    tail = curve.result.steps >= steps / 2
    exact = [np.mean(theory.exact_moments(p, t.theta, lam, step, steps, 1,
                                          record_every=steps // 100).dist2_opt[tail]) for lam in (0.0, 0.5, 1.0)]
    c = np.linalg.solve(np.vander([0.0, 0.5, 1.0], 3, increasing=True), exact)
    finite_horizon_bias = abs(-c[1] / (2 * c[2]) - lam_opt)
    assert finite_horizon_bias < 0.01 * (e.ci_high - e.ci_low)
    assert e.ci_low <= lam_opt <= e.ci_high, (e, lam_opt)
    assert e.ci_low < e.lam < e.ci_high and e.ci_high - e.ci_low < 0.1   # informative, not a fudge
    # the frame's attrs carry the same numbers
    assert curve.frame.attrs["lambda_emp"] == e.lam
    assert curve.frame.attrs["lambda_emp_ci"] == (e.ci_low, e.ci_high)
    assert curve.theory_frame().set_index("name").loc["lambda_opt", "in_ci"]


def test_lambda_curve_frame_and_theory(ls):
    p, t = ls
    lams = [0.0, 0.25, 0.5, 1.0]
    curve = kdsim.lambda_curve(p, t.theta, lams, 0.05, 300, 32, batch_size=2, at="final")
    f = curve.frame
    assert list(f.columns) == ["lam", "mean", "ci_low", "ci_high", "sem", "n_seeds", "n_diverged"]
    assert f["lam"].tolist() == lams and (f["n_seeds"] == 32).all() and (f["n_diverged"] == 0).all()
    # "final" records only steps 0 and T unless asked, and the row is the final record's seed mean
    assert curve.result.steps.tolist() == [0, 300]
    np.testing.assert_allclose(f["mean"], curve.result.mean("dist2_opt")[:, -1], rtol=1e-12)
    m, lo, hi, _ = stats.mean_ci(curve.result.dist2_opt[:, :, -1], axis=1, level=0.99)
    np.testing.assert_allclose(f["ci_low"], lo, rtol=1e-10)
    np.testing.assert_allclose(f["ci_high"], hi, rtol=1e-10)
    # every theoretical variant, from theory.all_lambdas at the run's batch size
    c = theory.constants(p, t.theta, 2)
    expected = theory.all_lambdas(c, 0.05, problem=p)
    assert set(curve.theory) == set(THEORY_LABELS) == set(expected)
    for name, (value, source) in expected.items():
        assert curve.theory[name] == (pytest.approx(value, rel=1e-12), source)
    assert curve.teacher is None and "LambdaCurve(" in repr(curve) and "λ_opt" in repr(curve)


def test_lambda_curve_off_least_squares_has_nan_lambda_opt_with_a_note():
    p = synthetic.logistic(n=60, d=3, l2=0.1, seed=0)
    t = teachers.at_distance(p, 0.5, seed=2)
    curve = kdsim.lambda_curve(p, t, [0.0, 0.5, 1.0], 0.2, 60, 8, backend="numpy")
    value, source = curve.theory["lambda_opt"]
    assert np.isnan(value) and source == "not applicable"
    assert any("least squares only" in n for n in curve.notes)
    assert all(np.isfinite(curve.theory[k][0]) for k in ("lambda_hat", "lambda_star_t1", "lambda_star_t2"))
    assert curve.teacher == "at_distance(r=0.5, seed=2)"


def test_lambda_curve_rejects_bad_arguments(ls):
    p, t = ls
    with pytest.raises(ValueError, match="at must be"):
        kdsim.lambda_curve(p, t, [0, 0.5, 1], 0.1, 10, 4, at="middle")
    with pytest.raises(ValueError, match="distinct"):
        kdsim.lambda_curve(p, t, [0, 0.5, 0.5], 0.1, 10, 4)
    with pytest.raises(TypeError, match="reduce"):
        kdsim.lambda_curve(p, t, [0, 0.5, 1], 0.1, 10, 4, reduce=True)
    with pytest.raises(ValueError, match="unknown record"):
        kdsim.lambda_curve(p, t, [0, 0.5, 1], 0.1, 10, 4, record="loss")


def test_lambda_curve_with_two_lams_has_no_optimum(ls):
    p, t = ls
    curve = kdsim.lambda_curve(p, t, [0.0, 1.0], 0.1, 20, 4)
    assert np.isnan(curve.empirical.lam) and any("at least 3 λ" in n for n in curve.notes)
    assert isinstance(curve.plot(), plt.Axes)


def test_plot_lambda_curve_markers_and_legend_outside(ls):
    p, t = ls
    curve = kdsim.lambda_curve(p, t, [0.0, 0.2, 0.4, 0.6], 0.1, 400, 16, at="plateau")
    ax = kdsim.plot_lambda_curve(curve)
    assert isinstance(ax, plt.Axes)
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("λ_emp =") for lab in labels)
    for name in THEORY_LABELS:
        assert any(lab.startswith(THEORY_LABELS[name]) for lab in labels), (name, labels)
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1          # outside the data, on the right
    # λ̂ sits beyond the grid here: kept in the legend without squeezing the axis
    assert curve.plot(ax=plt.subplots()[1]) is not None


# ------------------------------------------------------------- paired comparison
def test_paired_comparison_matches_hand_computation(run):
    cmp = kdsim.paired_comparison(run, "subopt", a=0.0, b=0.3, level=0.99)
    a, b = run.subopt[0, :, -1], run.subopt[1, :, -1]
    assert cmp.mean_a == pytest.approx(a.mean()) and cmp.mean_b == pytest.approx(b.mean())
    assert cmp.ratio == pytest.approx(b.mean() / a.mean(), rel=1e-12)
    assert cmp.difference == pytest.approx(b.mean() - a.mean(), rel=1e-12)
    assert cmp.ratio_ci[0] <= cmp.ratio <= cmp.ratio_ci[1]
    assert cmp.difference_ci[0] <= cmp.difference <= cmp.difference_ci[1]
    assert cmp.n_seeds == 64 and cmp.n_dropped == 0 and cmp.paired_streams
    assert "paired percentile bootstrap" in str(cmp)
    again = kdsim.paired_comparison(run, "subopt", a=0.0, b=0.3, level=0.99)
    assert again == cmp                                      # seeded resampling: reproducible
    plateau = kdsim.paired_comparison(run, "dist2_opt", a=0.0, b=0.3, at="plateau")
    per = run.per_seed("dist2_opt", "plateau")
    assert plateau.ratio == pytest.approx(per[1].mean() / per[0].mean(), rel=1e-12)


def test_pairing_narrows_the_interval(ls):
    p, t = ls
    common = dict(lams=[0.0, 0.3], step=0.1, steps=300, seeds=128, record_every=300)
    crn = kdsim.simulate(p, t.theta, **common)
    ind = kdsim.simulate(p, t.theta, common_random_numbers=False, **common)
    w_crn = np.diff(kdsim.paired_comparison(crn, "dist2_opt").difference_ci)[0]     # b: the other λ
    w_ind = np.diff(kdsim.paired_comparison(ind, "dist2_opt").difference_ci)[0]
    assert w_crn < 0.7 * w_ind
    assert not kdsim.paired_comparison(ind, "dist2_opt").paired_streams


def test_paired_comparison_errors(run, ls):
    with pytest.raises(ValueError, match="not a λ of this result"):
        kdsim.paired_comparison(run, a=0.0, b=0.5)
    with pytest.raises(ValueError, match="b is required"):
        kdsim.paired_comparison(run, a=0.0)
    with pytest.raises(ValueError, match="two different"):
        kdsim.paired_comparison(run, a=0.3, b=0.3)
    p, t = ls
    red = kdsim.simulate(p, t.theta, [0.0, 1.0], 0.1, 10, 4, reduce=True)
    with pytest.raises(TypeError, match="reduce=False"):
        kdsim.paired_comparison(red, a=0.0, b=1.0)


# ------------------------------------------------------------ SimResult / SimSummary
def test_summary_matches_the_arrays(run):
    s = run.summary(level=0.95)
    assert tuple(s.columns) == SUMMARY_COLUMNS
    assert len(s) == 3 * len(run.lams) * len(run.steps)
    d = s[s["record"] == "dist2_opt"]
    np.testing.assert_allclose(d["mean"].to_numpy(), run.mean("dist2_opt").ravel(), rtol=1e-12)
    sd = run.dist2_opt.std(axis=1, ddof=1) / np.sqrt(run.n_seeds)
    np.testing.assert_allclose(d["sem"].to_numpy(), sd.ravel(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(run.sem("dist2_opt"), sd, rtol=1e-9, atol=1e-15)
    _, lo, hi, _ = stats.mean_ci(run.dist2_opt, axis=1, level=0.95)
    np.testing.assert_allclose(d["ci_low"].to_numpy()[1:], lo.ravel()[1:], rtol=1e-9)
    np.testing.assert_allclose(d["ci_high"].to_numpy()[1:], hi.ravel()[1:], rtol=1e-9)
    assert (s["count"] == run.n_seeds).all()
    assert run.summary(records="subopt")["record"].unique().tolist() == ["subopt"]


def test_reduced_summary_equals_full_summary(ls):
    p, t = ls
    args = (p, t.theta, [0.0, 0.5], 0.1, 100, 16)
    full = kdsim.simulate(*args, record_every=10, backend="numpy").summary()
    red = kdsim.simulate(*args, record_every=10, backend="numpy", reduce=True).summary()
    pd.testing.assert_frame_equal(full.drop(columns=["sem", "ci_low", "ci_high"]),
                                  red.drop(columns=["sem", "ci_low", "ci_high"]), rtol=1e-12)
    np.testing.assert_allclose(full["sem"], red["sem"], rtol=1e-8, atol=1e-14)


def _hand_made_result():
    """Two λ, three seeds, three records; seed 2 of λ = 1 diverged at step 10."""
    steps = np.array([0, 5, 10])
    arr = np.arange(18, dtype=np.float64).reshape(2, 3, 3) + 1.0
    div = np.array([[-1, -1, -1], [-1, -1, 10]])
    arr[1, 2, 2] = np.nan
    return kdsim.SimResult(lams=np.array([0.0, 1.0]), steps=steps, dist2_opt=arr, subopt=arr.copy(),
                           dist2_teacher=arr.copy(), diverged_step=div, x_final=np.zeros((2, 3, 1)),
                           config={"problem": "least_squares", "estimator": "kd", "step": 0.1, "batch_size": 1,
                                   "backend": "numpy"})


def test_summary_and_per_seed_leave_diverged_seeds_out():
    res = _hand_made_result()
    s = res.summary(records="dist2_opt")
    one = s[s["lam"] == 1.0]
    assert (one["count"] == 2).all() and (s[s["lam"] == 0.0]["count"] == 3).all()
    np.testing.assert_allclose(one["mean"], res.dist2_opt[1, :2].mean(axis=0))
    per = res.per_seed("dist2_opt", "final")
    assert np.isnan(per[1, 2]) and per[0].tolist() == res.dist2_opt[0, :, -1].tolist()
    plat = res.per_seed("dist2_opt", "plateau", tail_fraction=0.5)
    np.testing.assert_allclose(plat[0], res.dist2_opt[0][:, 1:].mean(axis=1))   # steps ≥ 5
    with pytest.raises(ValueError, match="at must be"):
        res.per_seed("dist2_opt", "end")
    assert "diverged=1 of 6" in repr(res)


def test_summary_with_one_seed_has_no_interval(ls):
    p, t = ls
    s = kdsim.simulate(p, t.theta, [0.0], 0.1, 10, 1).summary()
    assert s["sem"].isna().all() and s["ci_low"].isna().all() and np.isfinite(s["mean"]).all()


def test_reprs_are_compact(run, ls):
    text = repr(run)
    assert len(text) < 400 and "array" not in text and text.count("\n") <= 2
    for part in ("SimResult(", "λ=[0, 0.3, 1]", "seeds=64", "diverged=0 of 192", "backend='numpy'",
                 "21 steps (0 … 400)", "dist2_opt, subopt, dist2_teacher"):
        assert part in text, (part, text)
    p, t = ls
    red = kdsim.simulate(p, t.theta, np.linspace(0, 1, 11), 0.1, 10, 4, reduce=True)
    text = repr(red)
    assert text.startswith("SimSummary(") and "(11 values)" in text and "backend='auto'" in text
    assert len(text) < 400


def test_plots_return_axes(run, ls):
    ax = run.plot()
    assert isinstance(ax, plt.Axes) and len(ax.get_lines()) == 3 and ax.get_yscale() == "log"
    ax2 = run.plot("subopt", ax=plt.subplots()[1], logy=False)
    assert ax2.get_yscale() == "linear"
    p, t = ls
    red = kdsim.simulate(p, t.theta, [0.0, 1.0], 0.1, 50, 4, record_every=5, reduce=True)
    assert isinstance(red.plot(record="dist2_teacher"), plt.Axes)
    with pytest.raises(ValueError, match="unknown record"):
        run.plot("loss")


# ---------------------------------------------------------------- theory.all_lambdas
def test_all_lambdas_adds_lambda_opt_on_least_squares_only(ls):
    p, t = ls
    c = theory.constants(p, t.theta, 4)
    base = theory.all_lambdas(c, 0.05)
    assert set(base) == {"lambda_hat", "lambda_star_t1", "lambda_star_t2", "lambda_star_published"}
    more = theory.all_lambdas(c, 0.05, problem=p)
    assert {k: v for k, v in more.items() if k != "lambda_opt"} == base
    assert more["lambda_opt"] == (theory.lambda_opt(p, t.theta, 0.05, 4), "derived")   # b of the constants
    assert theory.all_lambdas(c, 0.05, p, batch_size=1)["lambda_opt"][0] == theory.lambda_opt(p, t.theta, 0.05, 1)
    other = t.theta + 0.1
    assert theory.all_lambdas(c, 0.05, p, theta=other)["lambda_opt"][0] == theory.lambda_opt(p, other, 0.05, 4)
    sm = synthetic.softmax(n=60, seed=0)
    cs = theory.constants(sm, teachers.at_distance(sm, 0.3).theta)
    assert "lambda_opt" not in theory.all_lambdas(cs, 0.05, problem=sm)


# ---------------------------------------------------------------- problems and teachers
def test_problem_reprs():
    assert repr(synthetic.least_squares(n=200, d=10)) == "LeastSquares(n=200, d=10, l2=0)"
    assert repr(synthetic.softmax(n=50, d=4, n_classes=3, l2=0.1)) == \
        "SoftmaxRegression(n=50, d'=5, classes=3, bias=True, l2=0.1)"
    assert repr(synthetic.logistic(n=40, d=3)) == "LogisticRegression(n=40, d'=3, bias=False, l2=0)"
    assert repr(synthetic.poisson(n=40, d=3, l2=0.5)) == "PoissonRegression(n=40, d'=3, bias=False, l2=0.5)"
    assert repr(synthetic.deep_linear(n=30, d_in=4, d_out=3, hidden=(5, 2))) == \
        "DeepLinear(n=30, widths=4→5→2→3, loss='squared', l2=0)"
    assert repr(synthetic.deep_linear(n=30, loss="softmax")) == \
        "DeepLinear(n=30, widths=4→4→3, loss='softmax', classes=3, l2=0)"


def test_teacher_repr_and_distance():
    p = synthetic.least_squares(n=50, d=4)
    t = teachers.at_distance(p, 0.5, seed=1)
    assert repr(t) == "Teacher(kind='at_distance', r=0.5, seed=1, distance=0.5, theta=<array of shape (4,)>)"
    assert teachers.optimum(p).distance == 0.0
    q = teachers.top_k(p, p.solution(), 2)
    assert q.distance == pytest.approx(q.distance_to_optimum(p)) and "kind='top_k', k=2" in repr(q)
    assert teachers.Teacher(p.solution(), "by hand").distance is None


# ---------------------------------------------------------------- package attributes
def test_package_attributes_in_a_fresh_interpreter():
    code = ("import sys, kdsim; kdsim.stats.mean_ci; kdsim.theory.lambda_opt; kdsim.lambda_curve; "
            "kdsim.paired_comparison; kdsim.plot_lambda_curve; "
            "assert 'matplotlib' not in sys.modules, 'importing kdsim must not import matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_lambda_curve_says_when_the_theory_assumes_another_training_setup():
    from kdsim.problems import synthetic
    p = synthetic.least_squares(n=30, d=3, cond=4.0, seed=0)
    t = kdsim.teachers.at_distance(p, r=0.2, seed=1)
    rr = kdsim.lambda_curve(p, t, lams=[0.0, 0.2, 0.4], step=0.05, steps=120, seeds=8, sampling="reshuffle",
                            momentum=0.3)
    assert any("i.i.d. minibatches" in n and "sampling=reshuffle" in n and "momentum=0.3" in n for n in rr.notes)
    iid = kdsim.lambda_curve(p, t, lams=[0.0, 0.2, 0.4], step=0.05, steps=120, seeds=8)
    assert not any("i.i.d. minibatches" in n for n in iid.notes)
