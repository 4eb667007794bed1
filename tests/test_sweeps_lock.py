"""One writer per results folder: a second ``kdsim sweep`` on a folder that another one is writing
exits at once (exit code 2, one line naming the folder and the holder's pid) and computes nothing,
so two sweeps started together compute every cell exactly once in total; the lock goes with its
holder when that is killed.

Every computation is counted: the sweeps run in subprocesses whose ``run_simulation`` (the one
simulate call of a cell) appends "pid hash" to a shared log before computing.
"""
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kdsim.sweeps as sw
from kdsim import cli
from kdsim.sweeps.store import LOCK


ROOT = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""
    [sweep]
    name = "locked"
    backend = "numpy"
    rate_boot = 10

    [problem]
    family = "least_squares"
    n = 30
    d = 3
    cond = [4.0, 16.0]

    [[teachers]]
    kind = "optimum"

    [[teachers]]
    kind = "at_distance"
    r = 0.5

    [grid]
    lams = [0.0, 0.5, 1.0]
    step_fraction = [0.25, 0.5, 1.0]
    batch_size = [1, 4]
    seeds = 6
    steps = 60
    record_every = 6
""")
N_CELLS = 24

#: `kdsim ARGS` with every cell computation logged; with KDSIM_TEST_GATE set, the first computation
#: announces itself in KDSIM_TEST_GATE + ".waiting" and waits until the gate file exists
COUNTING = textwrap.dedent("""
    import os, sys, time
    import kdsim.sweeps.task as task
    from kdsim import cli
    from kdsim.results import config_hash

    log, gate = os.environ["KDSIM_TEST_LOG"], os.environ.get("KDSIM_TEST_GATE")
    simulate = task.run_simulation

    def counted(config, *args):
        if gate and not os.path.exists(gate):
            open(gate + ".waiting", "w").close()
            while not os.path.exists(gate):
                time.sleep(0.02)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {config_hash(config)}\\n")
        return simulate(config, *args)

    task.run_simulation = counted
    sys.exit(cli.main(sys.argv[1:]))
""")


def start(spec, out, log, gate=None):
    env = dict(os.environ, KDSIM_TEST_LOG=str(log))
    if gate is not None:
        env["KDSIM_TEST_GATE"] = str(gate)
    return subprocess.Popen([sys.executable, "-c", COUNTING, "sweep", str(spec), "--out", str(out), "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def computations(log):
    """[(pid, cell hash)], one per computed cell."""
    if not Path(log).exists():
        return []
    return [tuple(line.split()) for line in Path(log).read_text().splitlines()]


def wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def one_line_error(err):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kdsim: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "locked.toml"
    path.write_text(SPEC)
    return path


def test_second_sweep_exits_at_once_naming_the_holder(spec, tmp_path):
    out, log, gate = tmp_path / "out", tmp_path / "log", tmp_path / "gate"
    first = start(spec, out, log, gate)
    try:
        wait_for(f"{gate}.waiting", first)                   # the first holds the lock, inside its first cell
        t0 = time.perf_counter()
        second = start(spec, out, log)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        line = one_line_error(err)
        assert str(out) in line and f"pid {first.pid}" in line
        assert time.perf_counter() - t0 < 60
        assert not [c for c in computations(log) if c[0] == str(second.pid)]     # it computed nothing
    finally:
        gate.touch()
        first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert f"{N_CELLS} computed" in first_out
    done = computations(log)
    assert len(done) == N_CELLS and len(set(done)) == N_CELLS            # each cell computed exactly once
    assert len(list((out / "parts").glob("*.parquet"))) == N_CELLS


def test_sweeps_started_together_compute_each_cell_once(spec, tmp_path):
    out, log = tmp_path / "out", tmp_path / "log"
    procs = [start(spec, out, log) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.pid, p.returncode, o, e) for p, (o, e) in zip(procs, outputs)]
    done = computations(log)
    assert len(done) == N_CELLS and len({h for _, h in done}) == N_CELLS   # 24 computations in total
    codes = sorted(code for _, code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for pid, code, stdout, err in results:
        if code == 2:                                         # it found the other one holding the lock
            other = next(p for p, c, _, _ in results if c == 0)
            assert f"pid {other}" in one_line_error(err) and str(out) in err
        elif not [c for c in done if c[0] == str(pid)]:      # it came after the other had finished
            assert "nothing to do" in stdout
    assert len(list((out / "parts").glob("*.parquet"))) == N_CELLS
    assert sw.load(out)["cell_hash"].nunique() == N_CELLS


def test_lock_is_released_when_its_holder_is_killed(spec, tmp_path, capsys):
    out, log, gate = tmp_path / "out", tmp_path / "log", tmp_path / "gate"
    first = start(spec, out, log, gate)
    wait_for(f"{gate}.waiting", first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert (out / LOCK).read_text().strip() == str(first.pid)          # its pid is still written there
    assert cli.main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert f"{N_CELLS} computed" in capsys.readouterr().out
    assert (out / LOCK).read_text().strip() == str(os.getpid())


def test_lock_held_in_this_process_blocks_a_sweep(spec, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK, "w") as fh:                        # as a running sweep with pid 4242 holds it
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("4242\n")
        fh.flush()
        assert cli.main(["sweep", str(spec), "--out", str(out)]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert "pid 4242" in line and str(out) in line
        assert not (out / "parts").exists()
        with pytest.raises(sw.store.StoreLocked) as info:
            sw.run(SPEC, out=out, progress=False)
        assert info.value.holder == 4242
    # table, plot and --dry-run only read: they take no lock
    assert cli.main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
