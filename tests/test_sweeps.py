"""Sweeps: spec validation, the store, resumption, and execution on a real Dask LocalCluster.

The 24-cell sweep is tiny (least squares n = 30, d = 3, 6 seeds, 60 steps) so that the whole
module runs in well under a minute on two shared cores; one LocalCluster with two worker
processes is shared by the cluster tests (starting one costs seconds).
"""
import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import kdsim
import kdsim.sweeps as sw
from kdsim import stats, teachers, theory
from kdsim.problems import synthetic
from kdsim.sweeps import cli as sweeps_cli
from kdsim.sweeps.store import META_KEY

ROOT = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""
    [sweep]
    name = "tiny"
    backend = "numpy"
    master_seed = 3
    rate_boot = 20

    [problem]
    family = "least_squares"
    n = 30
    d = 3
    cond = [4.0, 16.0]
    noise = 0.5

    [[teachers]]
    kind = "optimum"

    [[teachers]]
    kind = "at_distance"
    r = 0.5

    [grid]
    lams = [0.0, 0.5, 1.0]
    step_fraction = [0.25, 0.5, 1.0]
    batch_size = [1, 4]
    estimator = "kd"
    seeds = 6
    steps = 60
    record_every = 6
""")
N_CELLS = 24


def parts_of(out):
    return sorted((Path(out) / "parts").glob("*.parquet"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 24-cell sweep run in-process: (frame, results folder)."""
    out = tmp_path_factory.mktemp("reference")
    frame = sw.run(SPEC, out=out, progress=False)
    return frame, out


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


# ----------------------------------------------------------------- the spec
def test_spec_expands_to_the_cartesian_product():
    sweep = sw.load_spec(SPEC)
    assert len(sweep.cells) == N_CELLS
    assert sweep.axes == {"problem": 2, "teacher": 2, "step_fraction": 3, "batch_size": 2}
    assert len({c.hash for c in sweep.cells}) == N_CELLS
    # the hash covers the full configuration and the kdsim version
    cell = sweep.cells[0]
    assert cell.config["kdsim_version"] == kdsim.__version__
    assert cell.hash == kdsim.results.config_hash(cell.config)
    # a dict spec and a TOML string give the same cells
    assert [c.hash for c in sw.load_spec(tomllib.loads(SPEC)).cells] == [c.hash for c in sweep.cells]


BAD_SPECS = {
    "unknown grid key": ("[grid]\nlams=[0.0]\nstep=[0.1]\nsteps=10\nstepz=3\n",
                         r"\[grid\]: unknown key 'stepz'; valid keys: lams, step, step_fraction"),
    "unknown problem key": ("[problem]\nfamily='least_squares'\nconds=3.0\n",
                            r"unknown key 'conds'; valid keys: family, n, d, cond, noise, seed, l2"),
    "unknown top-level key": ("[grids]\nlams=[0.0]\n", r"unknown key 'grids'; valid keys: sweep, problem"),
    "unknown family": ("[problem]\nfamily='lasso'\n", r"unknown value 'lasso'; valid values: 'least_squares'"),
    "empty batch sizes": ("[grid]\nlams=[0.0]\nstep=[0.1]\nsteps=10\nbatch_size=[]\n",
                          r"\[grid\] batch_size: empty list \(a grid axis needs at least one value\)"),
    "empty lams": ("[grid]\nlams=[]\nstep=[0.1]\nsteps=10\n", r"\[grid\] lams: empty list"),
    "empty teachers": ("teachers=[]\n", r"\[\[teachers\]\]: empty list"),
    "negative step": ("[grid]\nlams=[0.0]\nstep=[0.1, -0.2]\nsteps=10\n", r"\[grid\] step must be a number > 0; got -0.2"),
    "zero steps": ("[grid]\nlams=[0.0]\nstep=0.1\nsteps=0\n", r"\[grid\] steps must be an integer >= 1; got 0"),
    "zero step fraction": ("[grid]\nlams=[0.0]\nstep_fraction=0.0\nsteps=10\n", r"step_fraction must be a number > 0"),
    "string seeds": ("[grid]\nlams=[0.0]\nstep=0.1\nsteps=10\nseeds='32'\n", r"seeds must be an integer; got '32' \(str\)"),
    "float n": ("[problem]\nfamily='least_squares'\nn=30.5\n", r"n must be an integer; got 30.5"),
    "both steps": ("[grid]\nlams=[0.0]\nstep=0.1\nstep_fraction=0.1\nsteps=10\n", r"exactly one of 'step'"),
    "batch above n": ("[grid]\nlams=[0.0]\nstep=0.1\nsteps=10\nbatch_size=31\n", r"batch_size must be <= n = 30"),
    "unknown estimator": ("[grid]\nlams=[0.0]\nstep=0.1\nsteps=10\nestimator='adam'\n",
                          r"unknown value 'adam'; valid values: 'sgd', 'kd'"),
    "unknown teacher key": ("[[teachers]]\nkind='at_distance'\nradius=1.0\n",
                            r"unknown key 'radius'; valid keys: kind, r, seed"),
    "bad backend": ("[sweep]\nbackend='tpu'\n", r"\[sweep\] backend: unknown value 'tpu'"),
}


def _with(base, fragment):
    """SPEC with the sections named in ``fragment`` replaced by the fragment's."""
    spec = tomllib.loads(base)
    patch = tomllib.loads(fragment)
    spec.update(patch)
    return spec


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_fails_before_any_work(case, tmp_path):
    fragment, message = BAD_SPECS[case]
    spec = _with(SPEC, fragment)
    out = tmp_path / "out"
    with pytest.raises(sw.SpecError, match=message) as info:
        sw.run(spec, out=out, progress=False)
    assert isinstance(info.value, ValueError)             # the CLI prints ValueErrors as usage errors (exit 2)
    assert not out.exists()                               # nothing written, not even the folder


def test_cli_usage_errors_and_dry_run(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="kdsim")
    sweeps_cli.add_parsers(parser.add_subparsers(dest="command"))
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace("steps = 60", "steps = -5"))
    with pytest.raises(sweeps_cli.UsageError, match="steps must be an integer >= 1; got -5"):
        sweeps_cli.run_command(parser.parse_args(["sweep", str(bad), "--out", str(out)]))
    assert issubclass(sweeps_cli.UsageError, ValueError)
    assert not out.exists()

    code = sweeps_cli.run_command(parser.parse_args(["sweep", str(spec), "--dry-run", "--out", str(out)]))
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    sweep = sw.load_spec(spec)
    assert f"{N_CELLS} cell(s)" in text
    assert all(c.hash in text for c in sweep.cells)
    traj_steps = N_CELLS * 3 * 6 * 60
    assert f"cost: {traj_steps:.4g} trajectory-steps" in text
    records = 3 * 3 * 6 * 11 * 8                          # 3 records × λ × seeds × records × 8 B
    assert f"records {records / 1000:.3g} kB" in text


# ------------------------------------------------------------- the numbers
def test_in_process_equals_direct_simulate(reference):
    frame, out = reference
    assert len(parts_of(out)) == N_CELLS
    assert frame["cell_hash"].nunique() == N_CELLS
    assert not frame[["dist2_opt_mean", "subopt_mean", "dist2_teacher_mean"]].isna().any().any()
    sweep = sw.load_spec(SPEC)
    for cell in sweep.cells:
        c = cell.config
        p = synthetic.least_squares(n=30, d=3, cond=c["problem"]["params"]["cond"], noise=0.5, seed=0)
        theta = (teachers.optimum(p) if c["teacher"]["kind"] == "optimum" else teachers.at_distance(p, 0.5, seed=0)).theta
        gamma = c["gamma_fraction"] / theory.constants(p, theta, c["batch_size"]).expected_smoothness
        res = kdsim.simulate(p, theta, [0.0, 0.5, 1.0], gamma, 60, 6, batch_size=c["batch_size"], estimator="kd",
                             record_every=6, backend="numpy", seed=3)
        rows = frame[frame["cell_hash"] == cell.hash].sort_values(["lam", "step"])
        assert np.all(rows["gamma"] == gamma)
        for k, lam in enumerate([0.0, 0.5, 1.0]):
            r = rows[rows["lam"] == lam]
            np.testing.assert_array_equal(r["step"], res.steps)
            for q in ("dist2_opt", "subopt", "dist2_teacher"):
                mean, lo, hi, _ = stats.mean_ci(res.record(q)[k], axis=0, level=0.99)
                np.testing.assert_array_equal(r[f"{q}_mean"], mean)
                np.testing.assert_array_equal(r[f"{q}_ci_low"], lo)
                np.testing.assert_array_equal(r[f"{q}_ci_high"], hi)
            pl = stats.plateau(res.steps, res.dist2_opt[k], tail_fraction=0.5, level=0.99)
            assert r["plateau_dist2_opt_mean"].iloc[0] == pl.mean
            assert r["plateau_dist2_opt_ci_high"].iloc[0] == pl.ci_high
        # theory beside the numbers
        cst = theory.constants(p, theta, c["batch_size"])
        first = rows.iloc[0]
        assert first["mu"] == cst.mu and first["expected_smoothness"] == cst.expected_smoothness
        assert first["lambda_hat"] == pytest.approx(theory.lambda_hat(cst), rel=1e-12, nan_ok=True)
        assert first["lambda_star_t1"] == pytest.approx(theory.lambda_star_t1(cst, gamma), rel=1e-12)
        assert first["gamma_stable_max"] == theory.largest_stable_step(p, c["batch_size"])
        if gamma < first["gamma_stable_max"]:
            assert first["lambda_opt"] == pytest.approx(theory.lambda_opt(p, theta, gamma, c["batch_size"]), rel=1e-12)
            for lam in (0.0, 0.5, 1.0):
                ex = rows[rows["lam"] == lam]["exact_plateau_dist2_opt"].iloc[0]
                assert ex == pytest.approx(theory.stationary_error(p, theta, lam, gamma, c["batch_size"]), rel=1e-12)
        b = theory.t1(cst, gamma, 0.5)
        r = rows[rows["lam"] == 0.5]
        if b.applicable:
            np.testing.assert_allclose(r["bound_t1"], b.curve(res.steps), rtol=1e-14)
        else:
            assert r["bound_t1"].isna().all() and r["bound_t1_status"].iloc[0].startswith("not applicable")
            assert r["bound_t1_gamma_max"].iloc[0] == b.gamma_max


def test_local_cluster_equals_in_process(reference, client, tmp_path):
    ref, _ = reference
    # submitted by address, as `kdsim sweep SPEC --scheduler tcp://host:port` does
    frame = sw.run(SPEC, scheduler=client.scheduler.address, out=tmp_path, progress=False)
    assert frame.attrs["run"]["submitted"] == N_CELLS
    assert frame.attrs["run"]["executor"] == f"dask {client.scheduler.address} (2 workers)"
    pd.testing.assert_frame_equal(frame, ref, check_exact=True)


def test_interrupted_driver_resumes_without_recomputing(reference, client, tmp_path, monkeypatch):
    ref, _ = reference
    k = 7

    def stop_after_k(cell, frame, info, seen=[]):
        seen.append(cell.hash)
        if len(seen) == k:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sw.run(SPEC, client=client, out=tmp_path, progress=False, on_cell_done=stop_after_k)
    assert len(parts_of(tmp_path)) == k

    submitted = []
    real_submit = client.submit

    def counting_submit(fn, config, *args, **kwargs):
        submitted.append(kdsim.results.config_hash(config))
        return real_submit(fn, config, *args, **kwargs)

    monkeypatch.setattr(client, "submit", counting_submit)
    frame = sw.run(SPEC, client=client, out=tmp_path, progress=False)
    done_first = {p.stem for p in parts_of(tmp_path)} - set(submitted)
    assert len(submitted) == N_CELLS - k and len(set(submitted)) == N_CELLS - k
    assert len(done_first) == k                                 # the k finished cells were not resubmitted
    assert frame.attrs["run"]["skipped"] == k
    pd.testing.assert_frame_equal(frame, ref, check_exact=True)


def test_killed_worker_still_completes_every_cell_once(reference, client, tmp_path, monkeypatch):
    ref, _ = reference
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(cell, frame, info):
        if killed:
            return
        busy = {addr: keys for addr, keys in client.processing().items() if keys and addr in pids}
        assert busy, "no worker was running a task when the first cell finished"
        addr = max(busy, key=lambda a: len(busy[a]))
        os.kill(pids[addr], signal.SIGKILL)
        killed.append((addr, len(busy[addr])))

    written = []
    orig = sw.Store.write_part

    def spy(self, cell, *args):
        written.append(cell.hash)
        return orig(self, cell, *args)

    monkeypatch.setattr(sw.Store, "write_part", spy)
    frame = sw.run(SPEC, client=client, out=tmp_path, progress=False, on_cell_done=kill_a_busy_worker)
    assert killed and killed[0][1] >= 1
    assert sorted(written) == sorted(c.hash for c in sw.load_spec(SPEC).cells)      # each cell written exactly once
    assert len(parts_of(tmp_path)) == N_CELLS
    assert not frame.duplicated(["cell_hash", "lam", "step"]).any()
    pd.testing.assert_frame_equal(frame, ref, check_exact=True)


def test_local_cluster_is_started_with_one_thread_per_process(client, tmp_path, monkeypatch):
    # `workers=N` starts distributed.LocalCluster(n_workers=N, threads_per_worker=1, processes=True);
    # the fake hands back the shared cluster so that no second cluster has to start.
    import distributed
    calls = []

    class SharedCluster:
        scheduler_address = client.scheduler.address

        def __init__(self, **kwargs):
            calls.append(kwargs)

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(distributed, "LocalCluster", SharedCluster)
    spec = _with(SPEC, "[grid]\nlams=[0.0, 1.0]\nstep_fraction=0.25\nsteps=12\nrecord_every=6\nseeds=2\n")
    frame = sw.run(spec, out=tmp_path, workers=2, progress=False)
    assert calls[0]["n_workers"] == 2 and calls[0]["threads_per_worker"] == 1 and calls[0]["processes"] is True
    assert calls[-1] == "closed" and frame["cell_hash"].nunique() == 4


# ---------------------------------------------------------------- the store
def _rewrite(path, table):
    import pyarrow.parquet as pq
    pq.write_table(table, path)


def test_corrupt_parts_are_detected_and_recomputed(reference, tmp_path):
    import pyarrow.parquet as pq
    ref, ref_out = reference
    out = tmp_path / "store"
    shutil.copytree(ref_out, out)
    parts = parts_of(out)
    truncated, garbage, wrong_hash, short, flipped = parts[:5]
    blob = truncated.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    garbage.write_bytes(b"not a parquet file at all")
    table = pq.read_table(wrong_hash)
    meta = dict(table.schema.metadata)
    other = parts[5].stem
    meta[META_KEY] = meta[META_KEY].replace(wrong_hash.stem.encode(), other.encode())
    _rewrite(wrong_hash, table.replace_schema_metadata(meta))
    table = pq.read_table(short)
    _rewrite(short, table.slice(0, table.num_rows - 3))        # metadata kept, rows lost
    blob = bytearray(flipped.read_bytes())
    mid = len(blob) // 3
    blob[mid:mid + 8] = bytes(b ^ 0xFF for b in blob[mid:mid + 8])
    flipped.write_bytes(bytes(blob))
    bad = {p.stem for p in (truncated, garbage, wrong_hash, short, flipped)}

    with pytest.raises(sw.StoreError, match="corrupt part") as info:
        sw.load(out)
    assert all(h in str(info.value) for h in bad)

    messages = []
    frame = sw.run(SPEC, out=out, progress=False, log=messages.append)
    rep = frame.attrs["run"]
    assert {h for h, _ in rep["recomputed"]} == bad
    assert rep["submitted"] == len(bad) and rep["skipped"] == N_CELLS - len(bad)
    reasons = dict(rep["recomputed"])
    assert "unreadable parquet" in reasons[truncated.stem] and "unreadable parquet" in reasons[garbage.stem]
    assert "metadata hash" in reasons[wrong_hash.stem]
    assert "wrong row count" in reasons[short.stem]
    assert sum("corrupt part" in m for m in messages) == len(bad)
    assert len(list((out / "corrupt").glob("*.parquet"))) == len(bad)
    pd.testing.assert_frame_equal(frame, ref, check_exact=True)
    pd.testing.assert_frame_equal(sw.load(out), ref, check_exact=True)


def test_part_metadata_and_atomic_layout(reference):
    import pyarrow.parquet as pq
    import json
    _, out = reference
    sweep = sw.load_spec(SPEC)
    cell = sweep.cells[5]
    path = out / "parts" / f"{cell.hash}.parquet"
    meta = json.loads(pq.read_schema(path).metadata[META_KEY])
    assert meta["config_hash"] == cell.hash and meta["config"] == cell.config
    assert meta["kdsim_version"] == kdsim.__version__
    assert meta["spec"] == sweep.spec and "[[teachers]]" in meta["spec_source"]
    assert meta["n_rows"] == cell.n_rows == pq.ParquetFile(path).metadata.num_rows
    assert not list((out / "parts").glob(".*"))                # no temporary files left behind
    # the parts folder is a plain parquet dataset
    assert len(pd.read_parquet(out / "parts")) == N_CELLS * cell.n_rows


def test_diverged_runs_give_counts_not_nan_rows(tmp_path):
    spec = _with(SPEC, "[grid]\nlams=[0.0, 1.0]\nstep=5.0\nsteps=200\nrecord_every=10\nseeds=4\n")
    spec["problem"]["cond"] = 4.0
    spec["teachers"] = [{"kind": "at_distance", "r": 0.5}]
    frame = sw.run(spec, out=tmp_path, progress=False, log=lambda text: None)
    assert frame["n_diverged"].eq(4).all()
    assert frame["count"].min() >= 1
    stat_cols = [c for c in frame.columns if c.endswith(("_mean", "_ci_low", "_ci_high")) and c.startswith(("dist2_opt", "subopt"))]
    assert not frame[stat_cols].isna().any().any()
    assert frame["step"].max() < 200                          # records after every trajectory diverged have no row
    note = frame["diverged_note"].iloc[0]
    stable = theory.largest_stable_step(synthetic.least_squares(30, 3, cond=4.0, noise=0.5), 1)
    assert "4 of 4 trajectories diverged" in note and f"> largest stable step {stable:.6g}" in note
    assert frame["plateau_reason"].iloc[0] == "all 4 trajectories diverged"
    assert frame["rate_reason"].iloc[0].startswith("fewer than two non-diverged")


def test_other_families_teachers_and_estimators(tmp_path):
    spec = {
        "sweep": {"name": "mixed", "backend": "numpy", "rate_boot": 10},
        "problems": [{"family": "least_squares", "n": 30, "d": 3}, {"family": "softmax", "n": 40, "d": 2, "l2": 0.1}],
        "teachers": [{"kind": "early_stopped", "steps": 10}, {"kind": "quantized", "bits": 3}],
        "grid": {"lams": [0.0, 0.5], "step_fraction": 0.25, "steps": 20, "record_every": 5, "seeds": 3,
                 "estimator": ["kd", "corrected"]},
    }
    frame = sw.run(spec, out=tmp_path, progress=False)
    assert frame["cell_hash"].nunique() == 8
    soft = frame[frame["problem"] == "softmax"]
    assert (soft["mu_provenance"] == "local at x*").all() and soft["lambda_opt"].isna().all()
    assert soft["dist2_centre_mean"].isna().all()
    corrected = frame[(frame["estimator"] == "corrected") & (frame["lam"] == 0.5)]
    assert corrected["bound_t1"].isna().all()
    assert corrected["bound_t1_status"].str.startswith("not derived for estimator 'corrected'").all()
    kd0 = frame[(frame["estimator"] == "corrected") & (frame["lam"] == 0.0)]
    assert kd0["bound_sgd_status"].str.startswith(("applicable", "not applicable: γ")).all()


def test_tables_and_plots_from_the_store(reference, tmp_path, capsys):
    frame, out = reference
    bounds = sw.report.bounds_table(frame, {})
    assert set(bounds["bound"]) == {"T1", "T1'", "T2", "SGD"}
    applicable = bounds[bounds["status"].str.startswith("applicable")]
    # the derived bounds are never significantly violated; 6 seeds leave some rows inconclusive
    assert set(applicable["verdict"]) <= {"holds", "inconclusive"} and (applicable["verdict"] == "holds").sum() >= 10
    assert (bounds[~bounds["status"].str.startswith("applicable")]["verdict"] == "n/a").all()
    # perturbed theory: a bound shrunk 100-fold must be reported as violated
    shrunk = frame.assign(bound_t1=frame["bound_t1"] * 0.01)
    perturbed = sw.report.bounds_table(shrunk, {})
    t1 = perturbed[(perturbed["bound"] == "T1") & perturbed["status"].str.startswith("applicable")]
    assert len(t1) and (t1["verdict"] == "VIOLATED").all()
    labels = {c.index: c.label for c in sw.load_spec(SPEC).cells}
    lam = sw.report.lambdas_table(frame, labels)
    assert len(lam) == N_CELLS and lam["best_lam_on_grid"].isin([0.0, 0.5, 1.0]).all()
    # the theory's claim 2: with θ = x*, λ = 1 is best on the grid
    opt = lam[lam["label"].str.contains("optimum")]
    assert (opt["best_lam_on_grid"] == 1.0).all()

    parser = argparse.ArgumentParser(prog="kdsim")
    sweeps_cli.add_parsers(parser.add_subparsers(dest="command"))
    assert sweeps_cli.run_command(parser.parse_args(["table", str(out), "--kind", "lambdas"])) == 0
    text = capsys.readouterr().out
    assert text.startswith("| cell | label | gamma | best_lam_on_grid") and text.count("\n") == N_CELLS + 2
    assert sw.report.render_table(bounds, "csv").splitlines()[0].startswith("cell,label,lam,bound")
    figs = tmp_path / "figs"
    assert sweeps_cli.run_command(parser.parse_args(["plot", str(out), "--figures", str(figs), "--max-figures", "1"])) == 0
    pngs = sorted(figs.glob("*.png"))
    assert [p.name for p in pngs] == ["plateau_vs_gamma_cond=4_teacher=at_distance_r=0.5_seed=0_batch_size=1.png"]
    assert pngs[0].stat().st_size > 10_000


def test_examples_validate():
    specs = sorted((ROOT / "examples" / "sweeps").glob("*.toml"))
    assert len(specs) >= 3
    for spec in specs:
        sweep = sw.load_spec(spec)
        assert sweep.cells and sweep.name == spec.stem


def test_docs_explain_a_multi_machine_cluster():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    for needle in ("dask scheduler", "dask worker tcp://", "kdsim sweep", "--scheduler tcp://", "installed on every",
                   "--dry-run", "kdsim table", "kdsim plot"):
        assert needle in text, needle


@pytest.mark.slow
def test_sigint_to_the_cli_keeps_finished_cells(tmp_path):
    spec = tmp_path / "tiny.toml"
    # cells long enough that the sweep cannot finish between the third stored cell and the signal
    spec.write_text(SPEC.replace("steps = 60", "steps = 6000").replace("record_every = 6", "record_every = 600"))
    out = tmp_path / "out"
    code = ("import sys\nfrom kdsim.sweeps import cli\nimport argparse\np = argparse.ArgumentParser()\n"
            "cli.add_parsers(p.add_subparsers(dest='command'))\nsys.exit(cli.run_command(p.parse_args(sys.argv[1:])))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "sweep", str(spec), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time
    deadline = time.time() + 120
    while len(parts_of(out)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    first = {p.stem for p in parts_of(out)}
    assert 3 <= len(first) < N_CELLS
    frame = sw.run(spec, out=out, progress=False)
    assert frame.attrs["run"]["skipped"] == len(first) and frame.attrs["run"]["submitted"] == N_CELLS - len(first)


FAILING = textwrap.dedent("""
    [sweep]
    name = "failing"
    backend = "numpy"
    rate_boot = 10

    [problem]
    family = "least_squares"
    n = 30
    d = 3
    cond = 4.0

    [[teachers]]
    kind = "early_stopped"
    steps = 200
    step_fraction = [0.5, 400.0]     # the second makes the teacher's own SGD run diverge

    [grid]
    lams = [0.0, 1.0]
    step_fraction = 0.25
    steps = 12
    record_every = 6
    seeds = 2
""")


def test_failing_cell_is_reported_and_the_others_are_stored(tmp_path, capsys):
    with pytest.raises(sw.SweepError, match="1 of 2 cells failed") as info:
        sw.run(FAILING, out=tmp_path, progress=False, log=lambda text: None)
    assert "makes SGD diverge" in info.value.failed[0][2]
    assert len(parts_of(tmp_path)) == 1                        # the good cell is stored
    frame = sw.load(tmp_path, missing="ignore")
    assert frame["cell_hash"].nunique() == 1 and len(frame.attrs["missing"]) == 1
    with pytest.warns(sw.StoreWarning, match="1 of 2 cells"):
        sw.load(tmp_path)
    # the CLI retries only the failed cell and reports it with exit code 1
    path = tmp_path / "failing.toml"
    path.write_text(FAILING)
    parser = argparse.ArgumentParser(prog="kdsim")
    sweeps_cli.add_parsers(parser.add_subparsers(dest="command"))
    assert sweeps_cli.run_command(parser.parse_args(["sweep", str(path), "--out", str(tmp_path), "--no-progress"])) == 1
    err = capsys.readouterr().err
    assert "1 of 2 cells already stored" in err and "1 of 2 cells failed" in err


def test_sweeps_run_stays_a_function_after_its_module_is_imported():
    # the execution module is kdsim.sweeps.execute, so importing it (as `kdsim sweep` does) cannot
    # replace the package's `run` function with a module
    import importlib

    import kdsim.sweeps as sweeps
    importlib.import_module("kdsim.sweeps.execute")
    importlib.import_module("kdsim.sweeps.cli")
    assert callable(sweeps.run) and sweeps.run.__module__ == "kdsim.sweeps.execute"
    assert callable(sweeps.run_cells) and sweeps.StoreLocked.__name__ == "StoreLocked"
