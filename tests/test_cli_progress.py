"""``kdsim check``: progress on stderr (none with -q), index.md rewritten after each check, Ctrl-C
exits 130 leaving an index of what finished, and one line when a check's simulations diverge."""
import io
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from kdsim import checks, cli

QUICK = ["--quick", "--seeds", "4"]


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are kdsim.report's business (tests/test_checks.py runs them): here an empty file each."""
    from kdsim.report import plots

    def touch(path):
        path.touch()
        return path

    monkeypatch.setattr(plots, "convergence_plot", lambda curves, path, *a, **k: touch(Path(path)))
    monkeypatch.setattr(plots, "render", lambda figure, out_dir, *a, **k: touch(Path(out_dir) / "figure.png"))


def test_quiet_prints_no_progress(tmp_path, capsys):
    assert cli.main(["check", "1", "3", *QUICK, "--out", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "[1/2]" not in captured.out and "ETA" not in captured.out
    assert "[PASS] claim  1 identity" in captured.out and "2/2 checks passed" in captured.out


def test_progress_lines_and_index_after_each_check(tmp_path, capsys, monkeypatch):
    seen = []                                     # index.md as each check starts
    real = checks.get_check

    def spying(name):
        index = tmp_path / "index.md"
        seen.append(index.read_text(encoding="utf-8") if index.exists() else None)
        return real(name)

    monkeypatch.setattr(checks, "get_check", spying)
    assert cli.main(["check", "1", "3", *QUICK, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "[1/2] claim 1 identity" in err and "[2/2] claim 3 teacher_fixed_point" in err and "ETA" in err
    assert "In progress: 0 of 2 checks finished" in seen[0] and "Claim" not in seen[0]
    assert "## Claim 1: identity — PASS" in seen[1] and "In progress: 1 of 2 checks finished" in seen[1]
    final = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "## Claim 1: identity" in final and "## Claim 3: teacher_fixed_point" in final
    assert "In progress" not in final and "[Summary](summary.md)" in final
    assert not list(tmp_path.glob(".index.md.*"))     # the temporary file was renamed


def test_interrupted_run_exits_130_with_an_index_of_what_finished(tmp_path, capsys, monkeypatch):
    real = checks.get_check

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "get_check", lambda name: interrupted if name == "teacher_fixed_point" else real(name))
    assert cli.main(["check", "1", "3", *QUICK, "--out", str(tmp_path), "-q"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "interrupted during check teacher_fixed_point" in err[0] and "1 of 2 checks finished (identity)" in err[0]
    assert str(tmp_path / "index.md") in err[0]
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "## Claim 1: identity — PASS" in index and "Claim 3" not in index
    assert "Interrupted during check teacher_fixed_point: 1 of 2 checks finished (identity)" in index


def test_interrupted_before_any_check_finished(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "get_check", lambda name: interrupted)
    assert cli.main(["check", "1", *QUICK, "--out", str(tmp_path), "-q"]) == 130
    assert "0 of 1 checks finished (none)" in capsys.readouterr().err
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "Interrupted during check identity" in index and "Summary" not in index


def test_progress_lines_inside_a_long_check():
    stream = io.StringIO()
    progress = cli._Progress(["optimal_teacher", "digits"], stream=stream, every=0.0)
    progress.start(1, "optimal_teacher")
    for _ in range(2):
        progress.simulation("start")
        progress.simulation("done")
    progress.finish()
    progress.start(2, "digits")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/2] claim 2 optimal_teacher ... (elapsed 0:00)")
    assert "optimal_teacher: 1 simulations done" in lines[1] and "optimal_teacher: 2 simulations done" in lines[2]
    assert lines[3].startswith("[2/2] claim 11 digits") and "ETA" in lines[3]
    quiet = io.StringIO()
    progress = cli._Progress(["digits"], quiet=True, stream=quiet, every=0.0)
    progress.start(1, "digits")
    progress.simulation("done")
    progress.close()
    assert quiet.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_tqdm_bar_on_a_terminal(capsys):
    pytest.importorskip("tqdm")
    stream = _Terminal()
    progress = cli._Progress(["identity", "digits"], stream=stream)
    assert progress.bar is not None
    progress.start(1, "identity")
    progress.simulation("start")
    progress.write("[PASS] claim 1")
    progress.finish()
    progress.close()
    assert "claim 1 identity" in stream.getvalue() and "simulation 1" in stream.getvalue()
    assert "[PASS] claim 1" in capsys.readouterr().out


def test_clock():
    assert [cli._clock(s) for s in (0, 65, 3723)] == ["0:00", "1:05", "1:02:03"]


# --------------------------------------------------------------------------- divergence
def test_divergence_line():
    d = cli._Divergences()
    d.add(None)                                   # a "start" event
    d.add(types.SimpleNamespace(diverged=np.zeros((2, 3), bool), stability={}))
    assert d.line() == ""
    d.add(types.SimpleNamespace(diverged=np.array([[True, False, True]]), stability={"limit": 0.0123}))
    assert d.line() == "2 of 9 trajectories diverged in 1 of 2 simulations; largest stable step γ_c = 0.0123"
    d.add(types.SimpleNamespace(diverged=np.ones((1, 1), bool), stability={"limit": None}))
    assert d.line().startswith("3 of 10 trajectories diverged in 2 of 3 simulations; largest stable step")


def test_a_check_whose_simulations_diverge_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    import kdsim
    from kdsim.checks.base import CheckResult, make_row, simulate
    from kdsim.problems import synthetic

    def check(quick=False, seeds=None, backend="numpy"):
        p = synthetic.least_squares(n=40, d=3, cond=4.0, seed=0)
        step = 3 * kdsim.theory.largest_stable_step(p, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kdsim.StabilityWarning)
            simulate(p, np.zeros(3), [0.0], step, 400, 4, record_every=100, backend="numpy")
        result = CheckResult(claim=1, name="identity", statement="Claim 1: a check that diverges.")
        result.rows.append(make_row(1, "i", "q", 0.0, 0.0, "≈"))
        return result

    monkeypatch.setattr(checks, "get_check", lambda name: check)
    assert cli.main(["check", "1", "--out", str(tmp_path), "-q"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "4 of 4 trajectories diverged in 1 of 1 simulations; largest stable step γ_c = " in notes[0]
    assert "trajectories diverged" in (tmp_path / "index.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- table: one output option
def test_table_out_is_deprecated_and_help_names_one_output_option(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["table", "--help"])
    out = capsys.readouterr().out
    assert "--output FILE" in out and "--out DIR" in out and "deprecated" in out
    assert "--out OUT" not in out                 # not offered as an option of its own
    # still accepted, with a one-line warning before it does what it did
    assert cli.main(["table", str(tmp_path / "nope.toml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kdsim: warning: table --out is deprecated") and len(err) == 2


def test_sweep_quiet_is_no_progress():
    parse = cli._parser().parse_args
    assert parse(["sweep", "x.toml", "-q"]).no_progress and parse(["sweep", "x.toml", "--quiet"]).no_progress
    assert parse(["sweep", "x.toml", "--no-progress"]).no_progress and not parse(["sweep", "x.toml"]).no_progress
