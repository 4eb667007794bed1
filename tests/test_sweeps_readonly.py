"""Read-only results folders: readable by ``kdsim table`` and ``kdsim plot``, "nothing to do" for a
complete sweep, one line and exit code 2 for an incomplete one, for an unwritable ``--figures``
and for a folder that turns read-only during a run (its finished parts are kept).

A folder is made read-only for real: by permissions when the tests do not run as root, else by a
read-only bind mount in a private mount namespace (``unshare -m``; skipped where that is not
allowed). The kdsim commands run in a subprocess inside it.
"""
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kdsim.sweeps as sw


ROOT = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""
    [sweep]
    name = "ro"
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
N_CELLS = 4

#: runs ``kdsim.cli.main`` on each argv of a JSON list; prints [[exit code, stdout, stderr], ...]
RUNNER = textwrap.dedent("""
    import contextlib, io, json, sys
    from kdsim import cli
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
        results.append([code, out.getvalue(), err.getvalue()])
    print(json.dumps(results))
""")

#: sh script: bind-mount the first $1 folders read-only, then run the rest of the arguments
MOUNT = textwrap.dedent("""
    set -e
    n=$1; shift
    i=0; while [ $i -lt $n ]; do mount --bind "$1" "$1"; mount -o remount,ro,bind "$1"; shift; i=$((i+1)); done
    exec "$@"
""")


@functools.lru_cache(maxsize=1)
def _mount_namespaces():
    if shutil.which("unshare") is None:
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"kdsim-ro-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        cmd = ["unshare", "-m", "sh", "-c", MOUNT, "sh", "1", str(probe), "sh", "-c", f"! touch {probe}/x"]
        return subprocess.run(cmd, capture_output=True).returncode == 0 and not (probe / "x").exists()
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _set_writable(folders, writable):
    for folder in folders:
        for path in [folder, *Path(folder).rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def run_in(read_only, script_args, restore=()):
    """Run ``python -c *script_args`` with the ``read_only`` folders read-only; return the process.

    The script learns how folders are made read-only from KDSIM_TEST_RO_HOW ("mount": it runs in
    its own mount namespace, or "chmod"); ``restore``: folders it may make read-only itself, made
    writable again afterwards."""
    env = dict(os.environ)
    cmd = [sys.executable, "-c", *script_args]
    if os.geteuid() != 0:
        env["KDSIM_TEST_RO_HOW"] = "chmod"
        _set_writable(read_only, False)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        finally:
            _set_writable([*read_only, *restore], True)
    if not _mount_namespaces():
        pytest.skip("running as root without mount namespaces: no way to make a folder read-only")
    env["KDSIM_TEST_RO_HOW"] = "mount"
    prefix = ["unshare", "-m", "sh", "-c", MOUNT, "sh", str(len(read_only)), *map(str, read_only)]
    return subprocess.run(prefix + cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def one_line_error(err):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kdsim: error:")]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(folder).rglob("*")}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A complete store, an incomplete copy and the spec file: (complete, incomplete, spec)."""
    base = tmp_path_factory.mktemp("ro")
    spec = base / "ro.toml"
    spec.write_text(SPEC)
    complete = base / "complete"
    sw.run(SPEC, out=complete, progress=False)
    incomplete = base / "incomplete"
    shutil.copytree(complete, incomplete)
    sorted((incomplete / "parts").glob("*.parquet"))[0].unlink()
    return complete, incomplete, spec


@pytest.fixture(scope="module")
def on_read_only(made, tmp_path_factory):
    """The commands of the tests below, run once with both stores and a figure folder read-only."""
    complete, incomplete, spec = made
    figures_ro = tmp_path_factory.mktemp("figures_ro")
    figures_ok = tmp_path_factory.mktemp("figures_ok")
    before = {p: snapshot(p) for p in (complete, incomplete, figures_ro)}
    commands = {
        "table": ["table", complete, "--kind", "lambdas"],
        "plot_elsewhere": ["plot", complete, "--figures", figures_ok, "--max-figures", "2"],
        "plot_default": ["plot", complete],
        "plot_unwritable": ["plot", complete, "--figures", figures_ro],
        "sweep_complete": ["sweep", spec, "--out", complete, "--no-progress"],
        "sweep_incomplete": ["sweep", spec, "--out", incomplete, "--no-progress"],
        "recompute": ["sweep", spec, "--out", complete, "--recompute", "--no-progress"],
    }
    argvs = [[str(a) for a in argv] for argv in commands.values()]
    proc = run_in([complete, incomplete, figures_ro], [RUNNER, json.dumps(argvs)])
    assert proc.returncode == 0, proc.stderr
    results = dict(zip(commands, json.loads(proc.stdout.splitlines()[-1])))
    after = {p: snapshot(p) for p in before}
    return results, before, after, figures_ok


def test_table_on_a_read_only_store(on_read_only):
    results, *_ = on_read_only
    code, out, err = results["table"]
    assert code == 0, err
    assert out.startswith("| cell | label | gamma | best_lam_on_grid") and out.count("\n") == N_CELLS + 2


def test_plot_on_a_read_only_store(on_read_only):
    results, _, _, figures_ok = on_read_only
    code, out, err = results["plot_elsewhere"]
    assert code == 0, err
    assert len(list(figures_ok.glob("*.png"))) == 2
    code, out, err = results["plot_default"]              # OUT/figures cannot be written there
    assert code == 2 and "--figures" in one_line_error(err)


def test_plot_into_an_unwritable_folder(on_read_only):
    results, *_ = on_read_only
    code, out, err = results["plot_unwritable"]
    assert code == 2
    assert "cannot write figures" in one_line_error(err)


def test_complete_sweep_on_a_read_only_store_has_nothing_to_do(on_read_only):
    results, *_ = on_read_only
    code, out, err = results["sweep_complete"]
    assert code == 0, err
    assert f"all {N_CELLS} cells are stored" in out and "nothing to do" in out
    code, out, err = results["recompute"]
    assert code == 2 and "--recompute" in one_line_error(err)


def test_incomplete_sweep_on_a_read_only_store_is_one_line(on_read_only):
    results, *_ = on_read_only
    code, out, err = results["sweep_incomplete"]
    assert code == 2
    line = one_line_error(err)
    assert "read-only" in line and f"1 of {N_CELLS} cells" in line


def test_read_only_stores_are_left_untouched(on_read_only):
    _, before, after, _ = on_read_only
    assert before == after


#: the sweep CLI, with the results folder's parts made read-only after the third part (a read-only
#: bind mount of OUT/parts: OUT itself cannot be remounted while the sweep holds its lock file open)
MID_RUN = textwrap.dedent("""
    import os, subprocess, sys
    from kdsim import cli
    from kdsim.sweeps.store import Store

    parts = os.path.join(sys.argv[1], "parts")
    written = []
    write_part = Store.write_part

    def write_then_lock_up(self, cell, *args):
        if len(written) == 3:
            if os.environ["KDSIM_TEST_RO_HOW"] == "mount":
                subprocess.run(["mount", "--bind", parts, parts], check=True)
                subprocess.run(["mount", "-o", "remount,ro,bind", parts], check=True)
            else:
                os.chmod(parts, 0o555)
        path = write_part(self, cell, *args)
        written.append(path)
        return path

    Store.write_part = write_then_lock_up
    sys.exit(cli.main(sys.argv[2:]))
""")


def test_store_turning_read_only_mid_run(tmp_path):
    spec = tmp_path / "ro.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_in([], [MID_RUN, str(out), "sweep", str(spec), "--out", str(out), "--no-progress"], restore=[out])
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr)
    assert str(out) in line and "finished parts are kept" in line
    assert "stopped by" not in proc.stderr
    parts = sorted((out / "parts").glob("*.parquet"))
    assert len(parts) == 3 and not list((out / "parts").glob(".*"))      # no temporary file left
    frame = sw.run(SPEC, out=out, progress=False)                          # writable again: resumes
    assert frame.attrs["run"]["skipped"] == 3 and frame.attrs["run"]["written"] == N_CELLS - 3
