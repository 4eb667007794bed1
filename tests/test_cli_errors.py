"""The ``kdsim`` command's error policy: a fault on the user's side is one line and exit code 2,
a bug in kdsim one line naming the exception and exit code 1, ``--debug`` the traceback.

Cases that need a folder kdsim cannot write are in tests/test_sweeps_readonly.py.
"""
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kdsim.sweeps as sw
from kdsim import cli


ROOT = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""
    [sweep]
    name = "errs"
    backend = "numpy"
    rate_boot = 10

    [problem]
    family = "least_squares"
    n = 30
    d = 3
    cond = [4.0, 16.0]

    [grid]
    lams = [0.0, 1.0]
    step_fraction = 0.25
    seeds = 2
    steps = 12
    record_every = 6
""")


def kdsim(*args):
    """(exit code, stdout, stderr) of ``kdsim.cli.main(args)`` run in this process."""
    return cli.main([str(a) for a in args])


def one_line_error(err):
    """The single error line of stderr (fails on a traceback or on several error lines)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kdsim: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "errs"
    sw.run(SPEC, out=out, progress=False)
    return out


def test_table_output_is_a_folder(store, tmp_path, capsys):
    assert kdsim("table", store, "--output", tmp_path) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(tmp_path) in line and "is a folder" in line


def test_table_output_in_a_missing_folder(store, capsys):
    assert kdsim("table", store, "--output", "/nonexistent/dir/x.md") == 2
    assert "/nonexistent/dir" in one_line_error(capsys.readouterr().err)


def test_table_output_written(store, tmp_path, capsys):
    target = tmp_path / "t.md"
    assert kdsim("table", store, "--output", target) == 0
    assert target.read_text().startswith("| cell |")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_check_with_cupy_backend_without_cupy(tmp_path, capsys):
    assert kdsim("check", "4", "--quick", "--backend", "cupy", "--out", tmp_path / "r") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "CuPy" in line and "pip install kdsim[gpu]" in line


def test_missing_spec_file(tmp_path, capsys):
    assert kdsim("sweep", tmp_path / "nope.toml") == 2
    assert "nope.toml" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("text, message", [
    ("[grid\nlams = [0.0]\n", "is not valid TOML"),
    (SPEC.replace("steps = 12", "steps = -3"), "steps must be an integer >= 1; got -3"),
    (SPEC.replace("[grid]", "[grid]\nstepz = 1"), "unknown key 'stepz'"),
], ids=["toml", "value", "key"])
def test_malformed_spec(tmp_path, capsys, text, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    assert kdsim("sweep", spec, "--out", tmp_path / "out") == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_argparse_errors_are_one_line(capsys):
    assert kdsim("sweep", "x.toml", "--workers", "0") == 2
    assert "--workers" in one_line_error(capsys.readouterr().err)
    assert kdsim("tabel") == 2
    assert "invalid choice" in one_line_error(capsys.readouterr().err)
    assert kdsim("check", "--bogus") == 2
    assert "--bogus" in one_line_error(capsys.readouterr().err)


def test_corrupted_data_file(tmp_path, monkeypatch, capsys):
    import kdsim.datasets as ds
    blob = bytearray(ds._data_file("digits.npz").read_bytes())
    blob[100] ^= 0xFF
    (tmp_path / "digits.npz").write_bytes(bytes(blob))
    monkeypatch.setattr(ds, "_data_file", lambda filename: tmp_path / filename)
    assert kdsim("check", "11", "--quick", "--out", tmp_path / "r") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "corrupted or was replaced" in line and "sha256" in line


def test_too_many_seeds_is_rejected_before_any_work(tmp_path, capsys):
    spec = tmp_path / "big.toml"
    spec.write_text(SPEC.replace("seeds = 2", "seeds = 1000000000"))
    assert kdsim("sweep", spec, "--out", tmp_path / "out") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "bytes" in line and "memory budget" in line
    assert not (tmp_path / "out").exists()


def test_dot_dot_name_without_out_is_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "dots.toml"
    spec.write_text(SPEC.replace('name = "errs"', 'name = ".."'))
    assert kdsim("sweep", spec) == 2
    assert "not a plain folder name" in one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dots.toml"]     # nothing written anywhere
    assert kdsim("sweep", spec, "--out", tmp_path / "out", "--no-progress") == 0   # --out names the folder


# ------------------------------------------------------------------- the policy
def _raised(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def test_user_faults_and_bugs_are_told_apart(monkeypatch):
    from kdsim import memory, _validate as V
    from kdsim.engines import cupy_gpu

    # the memory planner refusing a run, a GPU that CuPy cannot use, argument validation
    assert cli.user_fault(_raised(memory.plan_chunks, 10, 10**9, budget=10**6))
    monkeypatch.setattr(cupy_gpu, "import_cupy", lambda: object())
    monkeypatch.setattr(cupy_gpu, "gpu_status", lambda: (False, "no CUDA device is visible"))
    assert cli.user_fault(_raised(cupy_gpu.require))
    assert cli.user_fault(_raised(V.positive_float, "step", -1.0))
    assert cli.user_fault(_raised(open, "/nonexistent/x"))
    assert cli.user_fault(ImportError("backend 'x' needs y"))
    # bugs: a library's ValueError, a wrong call inside kdsim, a missing kdsim module, a KeyError
    assert not cli.user_fault(_raised(np.reshape, np.arange(3), (2, 2)))
    assert not cli.user_fault(_raised(V.positive_float, "step"))
    assert not cli.user_fault(ModuleNotFoundError("no module", name="kdsim.nothere"))
    assert not cli.user_fault(_raised(dict().__getitem__, "k"))
    assert not cli.user_fault(MemoryError())


def test_a_bug_is_one_line_with_exit_1_and_a_traceback_with_debug(store, monkeypatch, capsys):
    import kdsim.sweeps.report as report

    def broken(*args, **kwargs):
        return {}["missing key"]

    monkeypatch.setattr(report, "bounds_table", broken)
    monkeypatch.setitem(report._TABLES, "bounds", broken)
    assert kdsim("table", store) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error (a bug in kdsim): KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        kdsim("--debug", "table", store)
    with pytest.raises(KeyError):
        kdsim("table", store, "--debug")


def test_debug_shows_the_traceback_of_a_user_fault(tmp_path):
    code = "import sys; from kdsim.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code]
    plain = subprocess.run(args + ["sweep", str(tmp_path / "nope.toml")], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run(args + ["--debug", "sweep", str(tmp_path / "nope.toml")], capture_output=True, text=True,
                           cwd=ROOT)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "SpecError" in debug.stderr
