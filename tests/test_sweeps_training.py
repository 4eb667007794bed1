"""Sweeps over training setups: [grid] sampling, momentum, lam_schedule, temperature, … .

The specs are tiny (least squares n = 12, softmax n = 12, 4 seeds, 24 steps, numpy backend) so
that the module runs in a few seconds on two shared cores. It checks that the options are grid
axes validated before any work, that they enter a cell's configuration (and hash) only when
they differ from simulate's defaults — a default cell keeps the hash it had before they
existed —, that the stored frames and the report carry them as columns (filled in for parts
written without them), that a re-run hits the cache, and that the i.i.d. theory's bounds are
"not applicable" outside its setting.
"""
import argparse
import copy
import shutil

import numpy as np
import pandas as pd
import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import kdsim
import kdsim.sweeps as sw
from kdsim.sweeps import cli as sweeps_cli
from kdsim.sweeps import spec as sweep_spec
from kdsim.sweeps import task as sweep_task
from kdsim.sweeps.store import META_KEY

pq = pytest.importorskip("pyarrow.parquet")

BASE = """
[sweep]
name = "setups"
backend = "numpy"
master_seed = 1
rate_boot = 10

[problem]
family = "least_squares"
n = 12
d = 3

[[teachers]]
kind = "at_distance"
r = 0.5

[grid]
lams = [0.0, 0.5]
step_fraction = 0.25
batch_size = 4
seeds = 4
steps = 24
record_every = 3
"""
AXES = """sampling = ["iid", "reshuffle"]
momentum = [0.0, 0.5]
lam_schedule = ["constant", "decay:0.8"]
"""
SPEC = BASE + AXES
N_CELLS = 8
OPTIONS = ("sampling", "drop_last", "momentum", "lam_schedule", "temperature", "teacher_l2", "svrg_period",
           "svrg_warmup", "svrg_correction")
#: the keys of a cell's configuration before the training options existed
LEGACY_KEYS = {"kdsim_version", "store_schema", "problem", "teacher", "lams", "gamma", "gamma_fraction", "batch_size",
               "estimator", "seeds", "steps", "record_every", "backend", "summaries", "seed"}
LEGACY_GRID = {"lams", "step", "step_fraction", "batch_size", "estimator", "seeds", "steps", "record_every"}

SOFTMAX = """
[sweep]
name = "tempered"
backend = "numpy"
rate_boot = 10

[problem]
family = "softmax"
n = 12
d = 2
n_classes = 3

[[teachers]]
kind = "at_distance"
r = 0.5

[grid]
lams = [0.0, 0.5]
step_fraction = 0.25
batch_size = 4
seeds = 4
steps = 24
record_every = 6
estimator = "kd"
temperature = [1.0, 2.0]
"""


def legacy_config(cell):
    """The configuration the sweep code gave this cell before the training options existed."""
    c = cell.config
    return {k: copy.deepcopy(c[k]) for k in LEGACY_KEYS}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The 8-cell least-squares sweep run in-process: (frame, results folder)."""
    out = tmp_path_factory.mktemp("setups")
    return sw.run(SPEC, out=out, progress=False), out


# ------------------------------------------------------------------ the spec
def test_options_are_axes_and_enter_the_hash_only_when_not_default():
    sweep = sw.load_spec(SPEC)
    assert len(sweep.cells) == N_CELLS
    assert sweep.axes == {"sampling": 2, "momentum": 2, "lam_schedule": 2}
    assert len({c.hash for c in sweep.cells}) == N_CELLS
    assert set(sweep.spec["grid"]) == LEGACY_GRID | {"sampling", "momentum", "lam_schedule"}
    for cell in sweep.cells:
        named = {k: cell.config[k] for k in OPTIONS if k in cell.config}
        assert set(cell.config) == LEGACY_KEYS | set(named)
        assert named == {k: v for k, v in (("sampling", "reshuffle"), ("momentum", 0.5), ("lam_schedule", "decay:0.8"))
                         if k in named}
        assert all(v != sweep_spec.TRAINING[k].default for k, v in named.items())
    # the defaults-only cell has the legacy configuration, so the hash (and the store key) it always had ...
    default = sweep.cells[0]
    assert set(default.config) == LEGACY_KEYS and default.label == "iid · μ=0 · λ constant"
    assert default.hash == kdsim.results.config_hash(legacy_config(default))
    # ... which is also the hash of the same cell in a spec that never names the options
    plain = sw.load_spec(BASE)
    assert len(plain.cells) == 1 and plain.cells[0].hash == default.hash and plain.cells[0].config == default.config
    assert set(plain.spec["grid"]) == LEGACY_GRID                         # the normalised spec is unchanged too
    # and a spec naming the defaults explicitly gives that cell again
    explicit = sw.load_spec(BASE + 'sampling = "iid"\nmomentum = 0.0\nlam_schedule = "constant"\ndrop_last = false\n'
                            "temperature = 1.0\n")
    assert [c.hash for c in explicit.cells] == [default.hash]


def test_dry_run_lists_the_cells_with_their_setups(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="kdsim")
    sweeps_cli.add_parsers(parser.add_subparsers(dest="command"))
    spec = tmp_path / "setups.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert sweeps_cli.run_command(parser.parse_args(["sweep", str(spec), "--dry-run", "--out", str(out)])) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert f"{N_CELLS} cell(s) (sampling 2 × momentum 2 × lam_schedule 2)" in text
    for cell in sw.load_spec(spec).cells:
        assert cell.hash in text and cell.label in text
    assert "reshuffle · μ=0.5 · λ decay:0.8" in text


def test_single_values_apply_where_they_fit_and_lists_must_fit_everywhere():
    spec = tomllib.loads(SOFTMAX)
    spec["grid"].update(estimator=["sgd", "kd"], temperature=2.0)
    sweep = sw.load_spec(spec)
    sgd, kd = sweep.cells
    assert "temperature" not in sgd.config and kd.config["temperature"] == 2.0
    plain = tomllib.loads(SOFTMAX)
    plain["grid"].update(estimator="sgd")
    del plain["grid"]["temperature"]
    assert sw.load_spec(plain).cells[0].hash == sgd.hash                # the SGD cell is the one without τ
    spec["grid"]["temperature"] = [1.0, 2.0]                            # an axis: the sgd cells would repeat
    with pytest.raises(sw.SpecError, match=r"\[grid\] temperature = 2.0 does not apply to the cells with estimator "
                                           r"'sgd'.*give temperature one value"):
        sw.load_spec(spec)
    svrg = tomllib.loads(BASE)
    svrg["grid"].update(estimator=["sgd", "kd", "svrg"], svrg_warmup=1, svrg_correction=False, svrg_period=6)
    cells = sw.load_spec(svrg).cells
    assert [sorted(set(c.config) - LEGACY_KEYS) for c in cells] == [[], [], ["svrg_correction", "svrg_period",
                                                                               "svrg_warmup"]]


BAD = {
    "sampling": ('sampling = ["iid", "random"]', r"\[grid\] sampling: unknown value 'random'; valid values: 'iid', "
                                                  r"'reshuffle', 'shuffle_once'"),
    "momentum": ("momentum = [0.0, 1.0]", r"\[grid\] momentum must be a number >= 0 and < 1; got 1.0"),
    "momentum type": ('momentum = "0.9"', r"\[grid\] momentum must be a number; got '0.9'"),
    "drop_last": ("drop_last = 1", r"\[grid\] drop_last must be true or false"),
    "schedule": ('lam_schedule = "decay:1.5"',
                 r"\[grid\] lam_schedule: .*factor of 'decay' must satisfy 0 < factor < 1"),
    "schedule kind": ('lam_schedule = "cosine"', r"\[grid\] lam_schedule: unknown lam_schedule 'cosine'"),
    "schedule repeated": ('lam_schedule = ["decay", "decay:0.9"]', r"\[grid\] lam_schedule: repeated values"),
    "schedule overflow": ('lam_schedule = "increase:1.5:1"\nlams = [-1.0]\nsteps = 20000',
                          r"\[grid\] lam_schedule 'increase:1.5:1.0' makes λ = -1 non-finite"),
    "temperature value": ("temperature = 0.0", r"\[grid\] temperature must be a number > 0; got 0.0"),
    "temperature problem": ("temperature = 2.0", r"\[grid\] temperature = 2.0: temperature applies to softmax losses; "
                                                 r"problem family 'least_squares' has none; no cell"),
    "teacher_l2 value": ("teacher_l2 = -1.0", r"\[grid\] teacher_l2 must be a number >= 0"),
    "teacher_l2 estimator": ('teacher_l2 = 0.1\nestimator = "sgd"', r"\[grid\] teacher_l2 = 0.1: teacher_l2 applies to "
                                                                   r"the teacher estimators"),
    "svrg_warmup": ("svrg_warmup = 2", r"\[grid\] svrg_warmup = 2: svrg_warmup applies to estimator 'svrg' only"),
    "svrg_correction": ("svrg_correction = false", r"\[grid\] svrg_correction = False: .*'svrg' only"),
    "svrg_period": ('svrg_period = 0\nestimator = "svrg"', r"\[grid\] svrg_period must be an integer >= 1; got 0"),
    "svrg axis": ('svrg_warmup = [0, 1]\nestimator = ["kd", "svrg"]',
                  r"\[grid\] svrg_warmup = 1 does not apply to the cells with estimator 'kd'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_fail_before_any_work(case, tmp_path):
    fragment, message = BAD[case]
    spec = tomllib.loads(BASE)
    spec["grid"].update(tomllib.loads(fragment))
    out = tmp_path / "out"
    with pytest.raises(sw.SpecError, match=message):
        sw.run(spec, out=out, progress=False)
    assert not out.exists()


# ------------------------------------------------------------- the store
def test_cells_run_simulate_with_their_options(store):
    frame, _ = store
    sweep = sw.load_spec(SPEC)
    cell = sweep.cells[N_CELLS - 1]                      # reshuffle · μ = 0.5 · decay:0.8
    problem, teacher, gamma, _, _ = sweep_task.cell_inputs(cell.config)
    res = sweep_task.run_simulation(cell.config, problem, teacher, gamma)
    # simulate's configuration names the same non-default options (svrg_period: always, resolved)
    named = {k: res.config[k] for k in OPTIONS if k in res.config and k != "svrg_period"}
    assert named == {"sampling": "reshuffle", "momentum": 0.5, "lam_schedule": "decay:0.8"}
    direct = kdsim.simulate(problem, teacher.theta, [0.0, 0.5], gamma, 24, 4, batch_size=4, record_every=3,
                            backend="numpy", seed=1, sampling="reshuffle", momentum=0.5, lam_schedule="decay:0.8")
    rows = frame[frame["cell_hash"] == cell.hash].sort_values(["lam", "step"])
    np.testing.assert_array_equal(rows[rows["lam"] == 0.5]["dist2_opt_mean"], direct.dist2_opt[1].mean(axis=0))
    assert named == sweep_task.training_kwargs(cell.config)


def test_frames_carry_the_options_and_a_rerun_hits_the_cache(store):
    frame, out = store
    sweep = sw.load_spec(SPEC)
    assert frame["cell_hash"].nunique() == N_CELLS
    assert sorted(p.stem for p in (out / "parts").glob("*.parquet")) == sorted(c.hash for c in sweep.cells)
    for col in OPTIONS + ("steps_per_epoch", "setting_note"):
        assert col in frame.columns
    for cell in sweep.cells:
        rows = frame[frame["cell_hash"] == cell.hash]
        for key in ("sampling", "momentum", "lam_schedule"):
            expected = cell.config.get(key, sweep_spec.TRAINING[key].default)
            assert (rows[key] == expected).all()
        assert (rows["drop_last"] == False).all() and (rows["temperature"] == 1.0).all()  # noqa: E712
        assert rows["teacher_l2"].isna().all() and rows["svrg_period"].isna().all()
        assert (rows["steps_per_epoch"] == 3).all()                                      # ⌈12 / 4⌉
    # a user can group by the options
    per = frame.groupby(["sampling", "momentum"])["cell_hash"].nunique()
    assert per.to_dict() == {("iid", 0.0): 2, ("iid", 0.5): 2, ("reshuffle", 0.0): 2, ("reshuffle", 0.5): 2}
    # the store's own reading gives the same frame, and a re-run computes nothing
    loaded = sw.load(out)
    assert list(loaded.columns) == list(frame.columns) and len(loaded) == len(frame)
    report = sw.run_cells(SPEC, out=out, progress=False)
    assert (report.skipped, report.written, report.submitted) == (N_CELLS, 0, 0)


def test_bounds_are_not_applicable_outside_the_iid_setting(store):
    frame, out = store
    per = frame.groupby(["cell_hash", "lam"]).first().reset_index()
    default = (per["sampling"] == "iid") & (per["momentum"] == 0.0) & (per["lam_schedule"] == "constant")
    outside_any = (per["sampling"] != "iid") | (per["momentum"] != 0.0)          # at every λ
    outside = outside_any | ((per["lam_schedule"] != "constant") & (per["lam_eff"] != 0.0))
    for key in ("t1", "t1p", "t2", "sgd"):
        status = per[f"bound_{key}_status"]
        assert status[outside].str.startswith("not applicable: ").all()
        assert status[outside].str.contains("THEORY §4 assumes i.i.d. minibatches").all()
        assert not status[~outside].str.contains("i.i.d.").any()
        assert per.loc[outside, f"bound_{key}_neighbourhood"].isna().all()
        assert frame[frame["cell_hash"].isin(per.loc[outside_any, "cell_hash"])][f"bound_{key}"].isna().all()
    # the reasons are named
    resh = per[(per["sampling"] == "reshuffle") & (per["momentum"] == 0.5) & (per["lam_schedule"] == "decay:0.8")]
    assert resh[resh["lam"] == 0.5]["bound_t1_status"].iloc[0].startswith(
        "not applicable: sampling 'reshuffle'; momentum μ = 0.5; λ schedule 'decay:0.8'")
    assert resh[resh["lam"] == 0.0]["bound_t1_status"].iloc[0].startswith(
        "not applicable: sampling 'reshuffle'; momentum μ = 0.5 (")               # λ = 0 stays 0: SGD
    # at λ = 0 a λ schedule changes nothing: the bounds are those of the default cell
    iid_decay = per[(per["sampling"] == "iid") & (per["momentum"] == 0.0) & (per["lam_schedule"] == "decay:0.8")]
    base = per[default]
    at_zero = iid_decay[iid_decay["lam"] == 0.0]["bound_t1_status"]
    assert list(at_zero) == list(base[base["lam"] == 0.0]["bound_t1_status"])
    # the i.i.d. exact results are left empty outside the setting, and the cell says why
    assert per.loc[outside_any, ["gamma_stable_max", "mse_sgd", "lambda_opt"]].isna().all().all()
    assert per.loc[outside, "exact_plateau_dist2_opt"].isna().all()
    assert per.loc[default, "gamma_stable_max"].notna().all()
    assert (per.loc[default, "setting_note"] == "").all()
    assert per.loc[~default, "setting_note"].str.startswith("outside THEORY's setting: ").all()
    # the report never says "holds" outside the setting, and carries the options as columns
    bounds = sw.table(out, "bounds")
    assert list(bounds.columns[:5]) == ["cell", "label", "sampling", "momentum", "lam_schedule"]
    off = bounds[(bounds["sampling"] != "iid") | (bounds["momentum"] != 0.0)]
    assert len(off) and (off["verdict"] == "n/a").all()
    assert set(sw.table(out, "cells").columns) >= {"sampling", "momentum", "lam_schedule"}
    lambdas = sw.table(out, "lambdas")
    assert lambdas.groupby("sampling").size().to_dict() == {"iid": 4, "reshuffle": 4}


def test_parts_written_without_the_columns_are_read_with_the_defaults(store, tmp_path):
    """A store written before the options existed: its defaults-only parts are valid and get the columns."""
    _, out = store
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cell = sw.load_spec(SPEC).cells[0]
    path = old / "parts" / f"{cell.hash}.parquet"
    table = pq.read_table(path)
    meta = table.schema.metadata
    stripped = table.drop_columns([c for c in OPTIONS + ("steps_per_epoch", "setting_note") if c in table.column_names])
    pq.write_table(stripped.replace_schema_metadata(meta), path)
    assert META_KEY in pq.read_schema(path).metadata
    frame = sw.load(old)
    assert len(frame) == len(sw.load(out))
    rows = frame[frame["cell_hash"] == cell.hash]
    assert (rows["sampling"] == "iid").all() and (rows["momentum"] == 0.0).all()
    assert (rows["lam_schedule"] == "constant").all() and (rows["steps_per_epoch"] == 3).all()
    assert rows["svrg_period"].isna().all() and (rows["setting_note"] == "").all()
    assert frame["svrg_period"].dtype == "Int64" and frame["momentum"].dtype == np.float64
    assert sw.run_cells(SPEC, out=old, progress=False).written == 0


def test_temperature_on_softmax(tmp_path):
    frame = sw.run(SOFTMAX, out=tmp_path, progress=False)
    sweep = sw.load_spec(SOFTMAX)
    plain, tempered = sweep.cells
    assert "temperature" not in plain.config and tempered.config["temperature"] == 2.0
    no_axis = SOFTMAX.replace("temperature = [1.0, 2.0]\n", "")
    assert sw.load_spec(no_axis).cells[0].hash == plain.hash
    assert sorted(frame["temperature"].unique()) == [1.0, 2.0]
    per = frame.groupby(["temperature", "lam"]).first()
    assert per.loc[(2.0, 0.5), "bound_t1_status"].startswith("not applicable: temperature τ = 2")
    # at λ = 0 the tempered KD loss is the data loss: the bounds are those of τ = 1
    for key in ("t1", "sgd"):
        assert per.loc[(2.0, 0.0), f"bound_{key}_status"] == per.loc[(1.0, 0.0), f"bound_{key}_status"]
    assert not per.loc[(1.0, 0.5), "bound_t1_status"].startswith("not applicable: temperature")
    # τ changes the trajectories at λ ≠ 0, not at λ = 0 beyond rounding (same minibatches)
    a = frame[(frame["temperature"] == 1.0)].sort_values(["lam", "step"])
    b = frame[(frame["temperature"] == 2.0)].sort_values(["lam", "step"])
    np.testing.assert_allclose(a[a["lam"] == 0.0]["dist2_opt_mean"], b[b["lam"] == 0.0]["dist2_opt_mean"], rtol=1e-12)
    assert not np.array_equal(a[a["lam"] == 0.5]["dist2_opt_mean"], b[b["lam"] == 0.5]["dist2_opt_mean"])
    assert pd.api.types.is_float_dtype(frame["temperature"])


def test_teacher_weight_decay_and_svrg_options(tmp_path):
    spec = tomllib.loads(BASE)
    spec["problem"]["l2"] = 0.1
    spec["grid"].update(estimator=["sgd", "kd", "svrg"], teacher_l2=[0.1, 0.3], svrg_warmup=1, svrg_correction=False,
                        svrg_period=6)
    with pytest.raises(sw.SpecError, match=r"teacher_l2 = 0.1 does not apply to the cells with estimator 'sgd'"):
        sw.load_spec(spec)
    spec["grid"].update(estimator=["kd", "kd_loss"], svrg_warmup=0, svrg_correction=True)
    del spec["grid"]["svrg_period"]
    frame = sw.run(spec, out=tmp_path / "l2", progress=False)
    per = frame.groupby(["estimator", "teacher_l2", "lam"]).first()
    # w = α: "kd" itself and "kd_loss" become it, bit for bit, and keep kd's bounds
    at_alpha = frame[frame["teacher_l2"] == 0.1]
    np.testing.assert_array_equal(at_alpha[at_alpha["estimator"] == "kd"]["dist2_opt_mean"],
                                  at_alpha[at_alpha["estimator"] == "kd_loss"]["dist2_opt_mean"])
    assert not per.loc[("kd", 0.1, 0.5), "bound_t1_status"].startswith("not applicable: teacher_l2")
    assert per.loc[("kd", 0.1, 0.5), "setting_note"] == ""
    # another weight is outside THEORY's teacher terms at λ ≠ 0
    assert per.loc[("kd", 0.3, 0.5), "bound_t1_status"].startswith("not applicable: teacher_l2 = 0.3")
    assert np.isnan(per.loc[("kd", 0.3, 0.5), "dist2_centre_mean"])
    assert not per.loc[("kd", 0.3, 0.0), "bound_t1_status"].startswith("not applicable: teacher_l2")
    svrg = tomllib.loads(BASE)
    svrg["grid"].update(estimator=["sgd", "svrg"], svrg_warmup=1, svrg_correction=False, svrg_period=6)
    frame = sw.run(svrg, out=tmp_path / "svrg", progress=False)
    rows = frame.groupby("estimator").first()
    assert rows.loc["svrg", ["svrg_warmup", "svrg_correction", "svrg_period"]].tolist() == [1, False, 6]
    assert rows.loc["sgd", ["svrg_warmup", "svrg_correction"]].tolist() == [0, True]
    assert pd.isna(rows.loc["sgd", "svrg_period"]) and frame["svrg_period"].dtype == "Int64"


def test_l2_bias_is_a_problem_axis_that_keeps_default_cells(tmp_path):
    """``l2_bias = [true, false]`` (a problem parameter added after the first release): the default cell
    keeps the hash of a spec that never names it; the other builds the problem without the bias's ridge."""
    spec = SOFTMAX.replace("temperature = [1.0, 2.0]\n", "").replace("n_classes = 3\n", "n_classes = 3\nl2_bias = [true, false]\n")
    sweep = sw.load_spec(spec)
    default, free = sweep.cells
    assert "l2_bias" not in default.config["problem"]["params"] and free.config["problem"]["params"]["l2_bias"] is False
    plain = SOFTMAX.replace("temperature = [1.0, 2.0]\n", "")
    assert sw.load_spec(plain).cells[0].hash == default.hash
    problem = kdsim.sweeps.registry.build_problem("softmax", free.config["problem"]["params"])
    assert problem.l2_mask is not None and problem.l2_mask.sum() == problem.dim - 3
    frame = sw.run(spec, out=tmp_path, progress=False)
    per = frame.groupby("cell_index")["problem_l2_bias"].unique()
    assert [list(v) for v in per] == [[True], [False]]                 # the default filled in, not NaN
    final = frame[frame["step"] == frame["step"].max()].groupby(["problem_l2_bias", "lam"])["dist2_opt_mean"].first()
    assert final.loc[(True, 0.5)] != final.loc[(False, 0.5)]
    # a softmax sweep that never names l2_bias still gets the column, with its default
    assert (sw.run(plain, out=tmp_path / "plain", progress=False)["problem_l2_bias"] == True).all()  # noqa: E712
    with pytest.raises(sw.SpecError, match="l2_bias"):
        sw.load_spec(spec.replace("l2_bias = [true, false]", "l2_bias = 0"))
