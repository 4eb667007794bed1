"""Huge grids: cells built on demand, a small manifest, a dry run and a driver whose memory does not
grow with the number of cells, and the validation that rejects a cell too large for memory or a
name that cannot be a folder."""
import importlib
import json
import shutil
import textwrap
import time
import tracemalloc

import pytest

import kdsim.sweeps as sw
from kdsim import memory

runmod = importlib.import_module("kdsim.sweeps.execute")

AXIS = 100
MILLION = textwrap.dedent(f"""
    [sweep]
    name = "million"
    backend = "numpy"
    rate_boot = 10

    [problem]
    family = "least_squares"
    n = 10
    d = 2
    cond = [{", ".join(f"{1.0 + k:.1f}" for k in range(AXIS))}]

    [[teachers]]
    kind = "at_distance"
    r = [{", ".join(f"{0.01 * (k + 1):.2f}" for k in range(AXIS))}]

    [grid]
    lams = [0.0, 0.5, 1.0]
    step_fraction = [{", ".join(f"{0.005 * (k + 1):.3f}" for k in range(AXIS))}]
    seeds = 2
    steps = 2
    record_every = 1
""")

TINY = textwrap.dedent("""
    [sweep]
    name = "tiny"
    backend = "numpy"
    rate_boot = 10

    [problem]
    family = "least_squares"
    n = 30
    d = 3
    cond = [4.0, 16.0]

    [grid]
    lams = [0.0, 0.5, 1.0]
    step_fraction = [0.25, 0.5]
    seeds = 3
    steps = 12
    record_every = 6
""")

#: every axis varies, so that a cost model reading an axis outside COST_AXES would show up
EVERY_AXIS = {
    "sweep": {"name": "every_axis", "backend": "numpy", "cell_seeds": "independent"},
    "problems": [{"family": "least_squares", "n": [30, 60], "d": [2, 3]},
                 {"family": "softmax", "n": 40, "d": [2, 4], "n_classes": [2, 3]}],
    "teachers": [{"kind": "optimum"}, {"kind": "at_distance", "r": [0.1, 0.5]}],
    "grid": {"lams": [0.0, 0.5, 1.0], "step": [0.01, 0.02], "batch_size": [1, 5], "estimator": ["kd", "sgd"],
             "seeds": [2, 7], "steps": [10, 35], "record_every": [1, 5]},
}


# ----------------------------------------------------------------- cells
def test_a_million_cells_are_built_on_demand():
    t0 = time.perf_counter()
    sweep = sw.load_spec(MILLION)
    assert time.perf_counter() - t0 < 5
    cells = sweep.cells
    assert len(cells) == AXIS ** 3 and sweep.axes == {"problem": AXIS, "teacher": AXIS, "step_fraction": AXIS}
    p, t, s = 37, 91, 5                                   # the last axis varies fastest
    cell = cells[(p * AXIS + t) * AXIS + s]
    assert cell.config["problem"]["params"]["cond"] == 1.0 + p
    assert cell.config["teacher"]["params"]["r"] == pytest.approx(0.01 * (t + 1))
    assert cell.config["gamma_fraction"] == pytest.approx(0.005 * (s + 1))
    assert cells[-1].index == AXIS ** 3 - 1 and cells[-1].hash == cells[AXIS ** 3 - 1].hash
    with pytest.raises(IndexError):
        cells[AXIS ** 3]


def test_indexing_slicing_and_iteration_agree():
    cells = sw.load_spec(EVERY_AXIS).cells
    listed = list(cells)
    assert len(listed) == len(cells) == 8 * 3 * 2 ** 6
    assert [c.index for c in listed] == list(range(len(cells)))
    assert all(cells[k] == listed[k] for k in (0, 1, 17, len(cells) - 1))
    assert cells[-2] == listed[-2] and cells[3:9:2] == listed[3:9:2]
    assert len({c.hash for c in listed}) == len(cells)


def test_sums_over_representatives_equal_sums_over_every_cell():
    sweep = sw.load_spec(EVERY_AXIS)
    coef = runmod.ASSUMED_COST["numpy"]
    brute = {"traj": 0, "seconds": 0.0, "part": 0}
    for cell in sweep.cells:
        brute["traj"] += cell.trajectory_steps
        brute["seconds"] += runmod._model_seconds(cell, coef)
        brute["part"] += runmod.cell_memory(cell)["part"]
    pairs = list(runmod._cost_cells(sweep))
    assert len(pairs) < len(sweep.cells) and sum(w for _, w in pairs) == len(sweep.cells)
    fast = runmod._scan(sweep, coef)
    assert fast["trajectory_steps"] == brute["traj"] and fast["part_bytes"] == brute["part"]
    assert fast["seconds"] == pytest.approx(brute["seconds"], rel=1e-12)
    need = max(runmod._cell_need(c)[0] for c in sweep.cells)
    assert runmod._cell_need(fast["largest"])[0] == need and fast["largest"].hash


def test_a_million_cell_dry_run_is_quick_and_small(tmp_path):
    tracemalloc.start()
    t0 = time.perf_counter()
    text = sw.dry_run(MILLION, out=tmp_path / "out")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 20 and peak < 20e6, (seconds, peak)
    assert "1000000 cell(s)" in text and "(999980 more cells)" in text
    assert len(text.splitlines()) < 40
    assert f"cost: {AXIS ** 3 * 3 * 2 * 2:.4g} trajectory-steps" in text
    assert "in 1000000 part(s)" in text and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- manifest
def test_the_manifest_holds_the_spec_not_the_cells(tmp_path):
    sweep = sw.load_spec(MILLION)
    store = sw.Store(tmp_path)
    store.prepare(sweep)
    manifest = tmp_path / "sweep.json"
    assert manifest.stat().st_size < 50_000
    data = json.loads(manifest.read_text())
    assert data["n_cells"] == AXIS ** 3 and "cells" not in data and data["spec"] == sweep.spec
    back = store.sweep()
    assert len(back.cells) == AXIS ** 3 and back.name == "million"
    assert all(back.cells[k].hash == sweep.cells[k].hash for k in (0, 4242, AXIS ** 3 - 1))


def test_a_store_of_the_old_layout_is_still_read(tmp_path):
    out = tmp_path / "old"
    ref = sw.run(TINY, out=out, progress=False)
    sweep = sw.load_spec(TINY)
    old = {"kdsim_version": sweep.cells[0].config["kdsim_version"], "store_schema": 1, "name": sweep.name,
           "sweep_hash": "x", "spec": sweep.spec, "source": TINY, "spec_path": None,
           "cells": [{"index": c.index, "hash": c.hash, "label": c.label, "config": c.config} for c in sweep.cells]}
    (out / "sweep.json").write_text(json.dumps(old))
    import pandas as pd
    pd.testing.assert_frame_equal(sw.load(out), ref, check_exact=True, check_like=True)
    assert len(sw.table(out, kind="lambdas")) == len(sweep.cells)
    again = sw.run(TINY, out=out, progress=False)
    assert again.attrs["run"]["skipped"] == len(sweep.cells) and again.attrs["run"]["written"] == 0
    assert "cells" not in json.loads((out / "sweep.json").read_text())      # rewritten in the new layout


def test_a_manifest_this_kdsim_cannot_rebuild_is_a_clear_error(tmp_path, capsys):
    from kdsim import cli
    out = tmp_path / "store"
    sw.run(TINY, out=out, progress=False)
    data = json.loads((out / "sweep.json").read_text())
    data["sample_cells"][0]["hash"] = "0" * 16
    (out / "sweep.json").write_text(json.dumps(data))
    with pytest.raises(sw.StoreError, match="does not rebuild identically"):
        sw.load(out)
    capsys.readouterr()
    assert cli.main(["table", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "re-run the sweep" in err


# ----------------------------------------------------------------- driver
def test_the_first_cell_of_a_million_cells_starts_at_once(tmp_path):
    done = []

    def stop_after_two(cell, frame, info):
        done.append(time.perf_counter())
        if len(done) == 2:
            raise KeyboardInterrupt

    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        runmod.run_cells(MILLION, out=tmp_path, progress=False, on_cell_done=stop_after_two, log=lambda text: None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert done[0] - t0 < 20 and peak < 50e6, (done[0] - t0, peak)
    assert len(list((tmp_path / "parts").glob("*.parquet"))) == 2
    assert (tmp_path / "sweep.json").stat().st_size < 50_000


def test_the_dask_driver_keeps_a_bounded_window_of_cells_in_flight(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(runmod.DaskExecutor, "MIN_WINDOW", 3)
    monkeypatch.setattr(runmod.DaskExecutor, "WINDOW_PER_WORKER", 1)
    in_flight, submitted = [], []
    real_submit = runmod.DaskExecutor._submit

    def spy(self, cell, token, attempt):
        fut = real_submit(self, cell, token, attempt)
        in_flight.append(len(self.futures))
        submitted.append(cell.hash)
        return fut

    monkeypatch.setattr(runmod.DaskExecutor, "_submit", spy)
    spec = TINY.replace("step_fraction = [0.25, 0.5]", "step_fraction = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        frame = sw.run(spec, client=client, out=tmp_path, progress=False)
    assert frame["cell_hash"].nunique() == 12 and sorted(submitted) == sorted(set(submitted))
    assert len(submitted) == 12 and max(in_flight) <= 3


# ------------------------------------------------------------ validation
def test_a_cell_too_large_for_memory_is_rejected_before_anything_is_written(tmp_path):
    spec = TINY.replace("seeds = 3", "seeds = 1000000000")
    out = tmp_path / "out"
    with pytest.raises(sw.SpecError, match=r"needs \d+ bytes .* memory budget of \d+ bytes") as info:
        sw.run(spec, out=out, progress=False)
    cell = sw.load_spec(spec).cells[0]
    assert f"needs {runmod._cell_need(cell)[0]} bytes" in str(info.value)
    assert f"budget of {memory.default_budget()} bytes" in str(info.value)
    assert not out.exists()
    with pytest.raises(sw.SpecError, match="memory budget"):
        sw.dry_run(spec, out=out)
    with pytest.raises(sw.SpecError, match="memory budget of 1000 bytes"):   # a small budget: a small cell
        sw.run(TINY, out=out, progress=False, memory_budget=1000)
    assert not out.exists()


@pytest.mark.parametrize("name", [".", ".."])
def test_a_name_that_is_no_folder_needs_out(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = TINY.replace('name = "tiny"', f'name = "{name}"')
    with pytest.raises(sw.SpecError, match="not a plain folder name"):
        sw.run(spec, progress=False)
    with pytest.raises(sw.SpecError, match="not a plain folder name"):
        sw.dry_run(spec)
    assert list(tmp_path.iterdir()) == []
    frame = sw.run(spec, out=tmp_path / "named", progress=False)
    assert frame["cell_hash"].nunique() == 4
    shutil.rmtree(tmp_path / "named")
